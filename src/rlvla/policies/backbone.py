"""The VLA trunk: image patches, instruction and proprio tokens fused by a small transformer.

Token sequence (length 3 + cameras * patches)::

    [ACT readout] [VALUE readout] [instruction] [proprio] [camera 0 patches ...] [camera 1 patches ...]

The ACT readout conditions the action head, the VALUE readout the value head (two readouts so that the
value loss of online RL does not have to share one vector with the action head). With ``isolate_value`` no
other token attends to the VALUE readout, so the action readout does not depend on it: online RL with a frozen
trunk can then train the VALUE readout token for its critic without moving the policy (``fuse`` on cached
``tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlvla.policies.config import PolicyConfig
from rlvla.policies.encoders import LANGUAGE_DIM, LanguageEncoder, make_vision_encoder, random_shift
from rlvla.policies.transformer import Transformer


@dataclass
class Inputs:
    """Model-ready observations. ``images``: (B, cams, H, W, 3) uint8; ``proprio``: (B, P) float32."""

    images: torch.Tensor
    proprio: torch.Tensor
    instructions: list[str]
    condition: torch.Tensor | None = None
    """(B,) float conditioning input (policies with ``condition.kind`` set); NaN = unconditioned."""

    def __len__(self) -> int:
        return self.proprio.shape[0]


class Backbone(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        bb = cfg.backbone
        self.cfg = cfg
        d = bb.dim
        self.language = LanguageEncoder(bb.language)
        self.lang_proj = nn.Sequential(nn.Linear(LANGUAGE_DIM, d), nn.LayerNorm(d))
        self.vision = make_vision_encoder(bb.vision, LANGUAGE_DIM)
        self.patch_proj = nn.Linear(self.vision.out_channels, d)
        n_side = -(-cfg.image_size // self.vision.stride)
        per_cam = n_side * n_side + getattr(self.vision, "extra_tokens", 0)  # patches (+ keypoint tokens)
        self.patch_pos = nn.Parameter(torch.randn(1, len(cfg.cameras) * per_cam, d) * 0.02)
        self.proprio_proj = nn.Sequential(nn.Linear(cfg.proprio_dim, d), nn.LayerNorm(d))
        self.readouts = nn.Parameter(torch.randn(1, 2, d) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(1, 2, d) * 0.02)  # instruction, proprio
        self.fusion = Transformer(d, bb.heads, bb.layers, 2 * d, bb.dropout)
        self.cond_kind = cfg.condition.kind
        if self.cond_kind != "none":
            # learned "unconditioned" token (index 0); advantage: 1 = worse, 2 = better; return: scalar projection
            self.cond_emb = nn.Parameter(torch.randn(3, d) * 0.02)
            if self.cond_kind == "return":
                self.cond_proj = nn.Sequential(nn.Linear(1, d), nn.SiLU(), nn.Linear(d, d))
        # Proprio normalisation from dataset statistics (set_stats); identity until set.
        self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
        self.dim = d
        # Gaussian noise added to the instruction embedding in training mode (SFT sets it for its own steps only;
        # 0 everywhere else, so RL's log-probs and every evaluation see the embedding as it is)
        self.lang_noise = 0.0
        # (probability, partners): cross-task prototype mixing in training mode (SFT sets it for its own steps only)
        self.lang_mix: tuple[float, list[list[int]]] | None = None

    def forward(self, x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (action readout (B, D), value readout (B, D))."""
        return self.fuse(self.tokens(x))

    def fuse(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fusion transformer over the readouts and ``ctx`` = ``tokens(x)`` (B, T, D) -> (action readout,
        value readout), each (B, D)."""
        toks = torch.cat([self.readouts.expand(ctx.shape[0], -1, -1), ctx], 1)
        mask = None
        if self.cfg.backbone.isolate_value:
            mask = torch.ones(toks.shape[1], toks.shape[1], dtype=torch.bool, device=toks.device)
            mask[:, 1] = False  # nobody reads the VALUE readout but itself,
            mask[1, 0] = False  # and it does not read the ACT readout: the two are independent
            mask[1, 1] = True
        out = self.fusion(toks, mask=mask)
        return out[:, 0], out[:, 1]

    def tokens(self, x: Inputs) -> torch.Tensor:
        """The input tokens after the readouts: instruction, proprio, patches (and a condition) -> (B, T, D)."""
        bb = self.cfg.backbone
        dev = self.readouts.device
        texts = ["" for _ in x.instructions] if "language" in bb.ablate else list(x.instructions)
        lang = self.language(texts, dev)  # (B, 384)
        if self.training and self.lang_noise > 0:
            lang = lang + torch.randn_like(lang) * (self.lang_noise / lang.shape[-1] ** 0.5)
        if self.training and self.lang_mix is not None:
            lang = self.language.mix_partners(lang, *self.lang_mix)
        b, cams = x.images.shape[:2]
        img = x.images.to(dev).flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0)  # (B*cams, 3, H, W)
        self.last_shift = None  # (B*cams, 2) how far this forward's random shift moved each image (pixels), if any
        if "image" in bb.ablate:
            img = torch.zeros_like(img)
        elif self.training and bb.vision.random_shift:
            img, self.last_shift = random_shift(img, bb.vision.random_shift, with_shift=True)
        patches = self.vision(img, lang.repeat_interleave(cams, 0))  # (B*cams, N, C)
        patches = self.patch_proj(patches).reshape(b, -1, self.dim) + self.patch_pos
        prop = (x.proprio.to(dev) - self.proprio_mean) / self.proprio_std
        toks = torch.cat(
            [
                (self.lang_proj(lang) + self.type_emb[:, 0])[:, None],
                (self.proprio_proj(prop) + self.type_emb[:, 1])[:, None],
                patches,
            ],
            dim=1,
        )
        if self.cond_kind != "none":
            toks = torch.cat([toks, self.condition_token(x.condition, b, dev)[:, None]], 1)
        return toks

    def condition_token(self, c: torch.Tensor | None, b: int, dev) -> torch.Tensor:
        """(B,) conditioning input -> (B, D) token; NaN (or no input) selects the learned unconditioned token."""
        c = torch.full((b,), float("nan"), device=dev) if c is None else torch.as_tensor(c, dtype=torch.float32, device=dev).reshape(b)
        null = torch.isnan(c)
        if self.cond_kind == "advantage":
            idx = torch.where(null, 0, torch.where(c > 0.5, 2, 1))
            return self.cond_emb[idx]
        tok = self.cond_proj(torch.nan_to_num(c, nan=0.0)[:, None])
        return torch.where(null[:, None], self.cond_emb[0].expand(b, -1), tok + self.cond_emb[1])
