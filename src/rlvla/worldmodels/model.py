"""A latent world model over decisions: image + proprio + instruction, conditioned on action chunks.

Network (one camera):

- encoder: four stride-2 convs (GroupNorm, SiLU) -> a linear map to a ``latent``-d vector (LayerNorm'd);
- decoder: the mirror image (transposed convs, the last one straight to RGB: a full-resolution layer of ``width``
  channels cost ~80% of a training step) -> the image in [0, 1];
- dynamics: an MLP on ``[z, proprio, action chunk (K x A), instruction]`` -> the latent's change, the next
  proprio, and two heads for the decision: its success logit and the dense progress at its end (a logit).

Training (:class:`WorldModelTrainer`, ``rlvla train algo=world_model``) rolls the dynamics ``horizon`` decisions
open loop from the encoded first observation and compares every predicted step with what happened: the decoded
image (squared error), the latent (against the encoding of the real observation, stop-gradient), the proprio,
success (cross-entropy) and progress (squared error), plus the reconstruction of the first image. Open-loop
training is what imagination needs: the model is used on its own predictions.

Saved like a policy: ``config.json`` (format ``rlvla-world-model``: tasks, camera, image size, chunk, action and
proprio dims, network) + ``model.safetensors``; refused for tasks, cameras, image sizes or chunk sizes it was not
trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlvla.algos.optim import AdamWTrainer
from rlvla.checkpoints import ModelDir
from rlvla.policies.encoders import LANGUAGE_DIM, embed_instructions

FORMAT = "rlvla-world-model"
FORMAT_VERSION = 1
HINT = "train a world model with `rlvla train algo=world_model data.path=... run_dir=...`"


@dataclass
class WorldModelConfig:
    tasks: list[str] = field(default_factory=list)
    camera: str = "corner"
    image_size: int = 64
    chunk: int = 4
    action_dim: int = 4
    proprio_dim: int = 4
    latent: int = 256
    width: int = 16
    hidden: int = 512
    language: str = "minilm"
    reward_scale: float = 10.0
    """The suite's dense-reward scale (imagined rewards are progress x scale, as the simulator's)."""
    data_frames: int = 0
    """Real env steps (frames) in the data the model was trained on: the real-step cost of RL in it, beside the
    episode starts it renders (0: not recorded)."""

    def __post_init__(self) -> None:
        if self.image_size % 16 or self.image_size < 16:
            raise ValueError(f"world model image_size must be a multiple of 16, got {self.image_size}")
        if min(self.chunk, self.action_dim, self.proprio_dim, self.latent, self.width, self.hidden) < 1:
            raise ValueError(f"invalid world model config {self}")
        if self.language not in ("minilm", "none"):
            raise ValueError(f"unknown language encoder {self.language!r}; valid: minilm, none")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WorldModelConfig":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown world model config keys {unknown}")
        return cls(**d)


# A stride-2, kernel-4, padding-1 transposed convolution as a 3x3 convolution to 4x the channels and a pixel
# shuffle: output row 2m + a takes input rows m - 1 + d through kernel row _TAP[a][d] (the same for columns).
_TAP = {0: {0: 3, 1: 1}, 1: {1: 2, 2: 0}}


@torch.no_grad()
def subpixel_conv(m: nn.ConvTranspose2d) -> nn.Sequential:
    """The same map as ``m`` (kernel 4, stride 2, padding 1) as ``Conv2d(3x3) -> PixelShuffle(2)``: on CPU the
    decoder's transposed convolutions with few channels run ~1.4x faster this way (equal up to float rounding)."""
    if (m.kernel_size, m.stride, m.padding, m.output_padding, m.groups, m.dilation) != ((4, 4), (2, 2), (1, 1), (0, 0), 1, (1, 1)):
        raise ValueError(f"subpixel_conv handles kernel 4, stride 2, padding 1 transposed convolutions, not {m}")
    cin, cout = m.weight.shape[:2]
    w = m.weight.new_zeros(cout, 2, 2, cin, 3, 3)
    for a, rows in _TAP.items():
        for b, cols in _TAP.items():
            for dy, ky in rows.items():
                for dx, kx in cols.items():
                    w[:, a, b, :, dy, dx] = m.weight[:, :, ky, kx].T
    conv = nn.Conv2d(cin, 4 * cout, 3, padding=1).to(m.weight)
    conv.weight.copy_(w.reshape(4 * cout, cin, 3, 3))
    conv.bias.copy_(m.bias.repeat_interleave(4) if m.bias is not None else torch.zeros(4 * cout))
    return nn.Sequential(conv, nn.PixelShuffle(2))


def subpixel_decoder(model: "WorldModel") -> nn.Sequential:
    """``model.dec`` with each transposed convolution in its sub-pixel form, built from the current weights (its
    norm layers are ``model.dec``'s own): for rollouts in a model that no longer trains
    (:class:`rlvla.worldmodels.env.ImaginedPool`); rebuild it after the weights change."""
    return nn.Sequential(*[subpixel_conv(m) if isinstance(m, nn.ConvTranspose2d) else m for m in model.dec]).eval()


class WorldModel(ModelDir, nn.Module):
    FORMAT, FORMAT_VERSION, HINT, CONFIG, WHAT = FORMAT, FORMAT_VERSION, HINT, WorldModelConfig, "world model"

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        chans = [3, w, 2 * w, 4 * w, 4 * w]
        enc = []
        for i in range(4):
            enc += [nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1), nn.GroupNorm(8, chans[i + 1]), nn.SiLU()]
        self.enc = nn.Sequential(*enc, nn.Flatten())
        self.side = cfg.image_size // 16
        flat = chans[-1] * self.side**2
        self.to_latent = nn.Sequential(nn.Linear(flat, cfg.latent), nn.LayerNorm(cfg.latent, elementwise_affine=False))
        self.from_latent = nn.Linear(cfg.latent, flat)
        dec = []
        for cin, cout in ((4 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)):  # side -> 8 x side, then straight to RGB
            dec += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
        self.dec = nn.Sequential(*dec, nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1))
        self.lang = nn.Linear(LANGUAGE_DIM, 64)
        inp = cfg.latent + cfg.proprio_dim + cfg.chunk * cfg.action_dim + 64
        self.dyn = nn.Sequential(nn.Linear(inp, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(),
                                 nn.Linear(cfg.hidden, cfg.latent + cfg.proprio_dim + 2))  # fmt: skip
        nn.init.zeros_(self.dyn[-1].weight)
        nn.init.zeros_(self.dyn[-1].bias)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ pieces
    def embed(self, instructions: list[str]) -> torch.Tensor:
        if self.cfg.language == "none":
            return torch.zeros(len(instructions), LANGUAGE_DIM, device=self.device)
        return embed_instructions(list(instructions)).to(self.device)

    def encode(self, images) -> torch.Tensor:
        """uint8 ``(B, S, S, 3)`` -> latents ``(B, latent)``."""
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images).to(self.device)
        s = self.cfg.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (s, s, 3):
            raise ValueError(f"world model expects {s}x{s}x3 images from {self.cfg.camera!r}, got {tuple(x.shape[1:])}")
        return self.to_latent(self.enc(x.permute(0, 3, 1, 2).float() / 255.0 - 0.5))

    def decode_logits(self, z: torch.Tensor, decoder: nn.Module | None = None) -> torch.Tensor:
        """Latents -> images before the squashing ``(B, 3, S, S)``; ``sigmoid`` gives [0, 1] (``decoder``: an
        equivalent of ``self.dec``, e.g. :func:`subpixel_decoder`'s)."""
        return (decoder or self.dec)(self.from_latent(z).view(len(z), -1, self.side, self.side))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, decoder: nn.Module | None = None) -> torch.Tensor:
        """Latents -> uint8 images ``(B, S, S, 3)``."""
        return (torch.sigmoid(self.decode_logits(z, decoder)) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()

    def step(self, z: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor, lang: torch.Tensor):
        """One decision: ``actions`` (B, K, A), ``lang`` (B, 384) -> (z', proprio', success logit, progress logit)."""
        c = self.cfg
        if actions.shape[1:] != (c.chunk, c.action_dim):
            raise ValueError(f"world model steps in chunks of {c.chunk} x {c.action_dim} actions, got {tuple(actions.shape[1:])}")
        out = self.dyn(torch.cat([z, proprio, actions.flatten(1).clamp(-1, 1), F.silu(self.lang(lang))], -1))
        dz, dp, succ, prog = out.split([c.latent, c.proprio_dim, 1, 1], -1)
        return F.layer_norm(z + dz, (c.latent,)), proprio + dp, succ[:, 0], prog[:, 0]

    # ------------------------------------------------------------------ compatibility and files
    def check_compatible(self, tasks, cameras, image_size: int, chunk: int, action_dim: int | None = None) -> None:
        c = self.cfg
        missing = sorted(set(tasks) - set(c.tasks))
        if missing:
            raise ValueError(f"world model was trained on {c.tasks}, not on {missing}; train one on data of these tasks")
        if c.camera not in list(cameras):
            raise ValueError(f"world model predicts camera {c.camera!r}, which this policy does not read (it reads {list(cameras)})")
        if int(image_size) != c.image_size:
            raise ValueError(f"world model predicts {c.image_size}x{c.image_size} images; this policy reads {image_size}x{image_size}")
        if int(chunk) != c.chunk or (action_dim is not None and int(action_dim) != c.action_dim):
            raise ValueError(f"world model steps in chunks of {c.chunk} x {c.action_dim} actions; this policy acts in "
                             f"{chunk} x {action_dim}")  # fmt: skip


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) per image of uint8 ``(B, S, S, 3)`` pairs."""
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / mse)


@dataclass
class WorldModelTrainConfig:
    """``algo=world_model`` in ``rlvla train`` (loop settings in ``train.*``, data in ``data.path``)."""

    name: str = "world_model"
    camera: str = ""
    """Camera to model (default: the dataset's first)."""
    chunk: int = 4
    """Low-level steps per decision (the policy's chunk)."""
    horizon: int = 4
    """Decisions rolled open loop per training sequence."""
    latent: int = 256
    width: int = 16
    hidden: int = 512
    language: str = "minilm"
    latent_coef: float = 1.0
    success_coef: float = 0.1
    progress_coef: float = 1.0
    proprio_coef: float = 1.0

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.horizon < 1 or self.latent < 1 or self.width < 8 or self.hidden < 1:
            raise ValueError(f"invalid world model settings: chunk, horizon >= 1, width >= 8 (got {self})")
        if self.language not in ("minilm", "none"):
            raise ValueError(f"unknown language encoder {self.language!r}; valid: minilm, none")
        if min(self.latent_coef, self.success_coef, self.progress_coef, self.proprio_coef) < 0:
            raise ValueError("world model loss weights must be >= 0")


def rollout_loss(model: WorldModel, batch: dict, cfg: WorldModelTrainConfig) -> tuple[torch.Tensor, dict]:
    """Open-loop prediction loss of a batch of :class:`rlvla.data.sequences.DecisionSequences`."""
    img = batch["image"].to(model.device)  # (B, H+1, S, S, 3)
    b, h1 = img.shape[:2]
    h = h1 - 1
    target = img.permute(0, 1, 4, 2, 3).float() / 255.0
    z_all = model.encode(img.flatten(0, 1)).view(b, h1, -1)
    lang = model.embed(batch["instruction"])
    proprio = batch["proprio"].to(model.device)
    z, p = z_all[:, 0], proprio[:, 0]
    zs, ps, succ, prog = [], [], [], []
    for k in range(h):
        z, p, s, g = model.step(z, p, batch["action"][:, k].to(model.device), lang)
        zs.append(z)
        ps.append(p)
        succ.append(s)
        prog.append(g)
    zs, ps, succ, prog = torch.stack(zs, 1), torch.stack(ps, 1), torch.stack(succ, 1), torch.stack(prog, 1)
    dec = model.decode_logits(torch.cat([z_all[:, :1], zs], 1).flatten(0, 1)).view(b, h1, 3, *target.shape[-2:])
    image = F.binary_cross_entropy_with_logits(dec, target)  # per-pixel, on [0, 1] intensities
    mse = F.mse_loss(torch.sigmoid(dec[:, 1:]), target[:, 1:])
    latent = F.mse_loss(zs, z_all[:, 1:].detach())
    prop = F.mse_loss(ps, proprio[:, 1:])
    success = F.binary_cross_entropy_with_logits(succ, batch["success"].float().to(model.device))
    progress = F.mse_loss(torch.sigmoid(prog), batch["progress"].float().clamp(0, 1).to(model.device))
    loss = image + cfg.latent_coef * latent + cfg.proprio_coef * prop + cfg.success_coef * success + cfg.progress_coef * progress
    return loss, {"image_loss": float(image.detach()), "image_mse": float(mse.detach()), "latent_loss": float(latent.detach()),
                  "proprio_loss": float(prop.detach()), "success_loss": float(success.detach()),
                  "progress_loss": float(progress.detach())}  # fmt: skip


class WorldModelTrainer(AdamWTrainer):
    """One AdamW step per batch of :class:`rlvla.data.sequences.DecisionSequences` on :func:`rollout_loss`."""

    what = "world model loss"

    def __init__(self, model: WorldModel, cfg: WorldModelTrainConfig, steps: int, lr: float = 3e-4, weight_decay: float = 1e-4,
                 warmup_steps: int = 100, grad_clip: float = 1.0) -> None:  # fmt: skip
        super().__init__(model, steps, lr, weight_decay, warmup_steps, grad_clip)
        self.cfg = cfg

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        return rollout_loss(self.model, batch, self.cfg)
