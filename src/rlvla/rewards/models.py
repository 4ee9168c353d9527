"""Learned reward models: image + instruction -> a score that can stand in for the simulator's reward.

Kinds (``RewardModelConfig.kind``):

- ``success``: a success classifier, ``P(the image shows the instructed task done)``; binary cross-entropy on
  frames labelled by the simulator (:class:`rlvla.data.frames.LabelledFrames`), batches balanced between success
  frames and others.
- ``progress``: task progress in [0, 1] (VLAC / GVL style): regression on the time index of successful episodes
  (``t / t_success``); frames of failed episodes only have to stay below ``failure_cap`` (a failure never
  finished, whatever its time index).
- ``preference``: a per-frame utility trained with the Bradley-Terry model on trajectory pairs (Christiano et al.
  2017): ``P(a > b) = sigmoid(mean_t u(a_t) - mean_t u(b_t))`` over ``frames`` frames sampled from each.

The network is a small FiLM-conditioned CNN per camera (shared weights; :class:`rlvla.policies.encoders.SmallCNN`)
on the frozen MiniLM instruction embedding, mean- and max-pooled, then an MLP. Saved like a policy: ``config.json``
(format ``rlvla-reward-model``: kind, tasks, cameras, image size, network) and ``model.safetensors``. A model is
refused for tasks, cameras or image sizes it was not trained on (:meth:`RewardModel.check_compatible`).

The loop it serves::

    model = RewardModel(RewardModelConfig(kind="success", tasks=[...], cameras=["corner"], image_size=64))
    trainer = RewardModelTrainer(model, steps=2000, lr=3e-4)
    metrics = trainer.update(frames, step, seed)      # one AdamW step
    p = model.score(images, instructions)             # (B,) in [0, 1] (success, progress) or a utility
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlvla.algos.optim import AdamWTrainer
from rlvla.checkpoints import ModelDir
from rlvla.policies.config import VisionConfig
from rlvla.policies.encoders import LANGUAGE_DIM, SmallCNN, embed_instructions, random_shift

FORMAT = "rlvla-reward-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
KINDS = ("success", "progress", "preference")
HINT = "train a reward model with `rlvla train algo=reward_model data.path=... run_dir=...` (a policy is not a reward model)"


@dataclass
class RewardModelConfig:
    kind: str = "success"
    tasks: list[str] = field(default_factory=list)
    """Env tasks the model was trained on (set from the dataset)."""
    cameras: list[str] = field(default_factory=lambda: ["corner"])
    image_size: int = 64
    width: int = 16
    depth: int = 4
    hidden: int = 256
    random_shift: int = 4
    """Training-time DrQ shift (pixels); none when scoring."""
    language: str = "minilm"
    """The frozen sentence encoder (``none``: instruction-blind)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown reward model kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not self.cameras or self.image_size < 8 or self.hidden < 1 or self.random_shift < 0:
            raise ValueError(f"invalid reward model config {self}: need cameras, image_size >= 8, hidden >= 1")
        if self.language not in ("minilm", "none"):
            raise ValueError(f"unknown language encoder {self.language!r}; valid: minilm, none")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RewardModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown reward model config keys {unknown}")
        return cls(**d)


class RewardModel(ModelDir, nn.Module):
    FORMAT, FORMAT_VERSION, HINT, CONFIG, WHAT = FORMAT, FORMAT_VERSION, HINT, RewardModelConfig, "reward model"

    def __init__(self, cfg: RewardModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = SmallCNN(VisionConfig(width=cfg.width, depth=cfg.depth, film=cfg.language != "none", random_shift=0),
                               LANGUAGE_DIM)  # fmt: skip
        c = self.vision.out_channels
        self.lang = nn.Linear(LANGUAGE_DIM, cfg.hidden)
        self.head = nn.Sequential(nn.Linear(2 * c * len(cfg.cameras) + cfg.hidden, cfg.hidden), nn.SiLU(),
                                  nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 1))  # fmt: skip

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _embed(self, instructions: list[str]) -> torch.Tensor:
        if self.cfg.language == "none":
            return torch.zeros(len(instructions), LANGUAGE_DIM, device=self.device)
        return embed_instructions(list(instructions)).to(self.device)

    def forward(self, images: dict, instructions: list[str], augment: bool = False) -> torch.Tensor:
        """``images``: camera -> uint8 ``(B, H, W, 3)`` (tensor or array); -> raw outputs ``(B,)`` (a logit for
        success and progress, the utility for preference)."""
        emb = self._embed(instructions)
        feats = []
        for cam in self.cfg.cameras:
            if cam not in images:
                raise ValueError(f"reward model needs images from camera {cam!r}; got {sorted(images)}")
            x = torch.as_tensor(np.asarray(images[cam]) if not torch.is_tensor(images[cam]) else images[cam]).to(self.device)
            if x.ndim != 4 or tuple(x.shape[1:]) != (self.cfg.image_size, self.cfg.image_size, 3):
                raise ValueError(f"reward model expects {self.cfg.image_size}x{self.cfg.image_size}x3 images from {cam!r}, got "
                                 f"{tuple(x.shape[1:])}")  # fmt: skip
            x = x.permute(0, 3, 1, 2).float() / 255.0
            if augment and self.cfg.random_shift:
                x = random_shift(x, self.cfg.random_shift)
            tok = self.vision(x, emb)  # (B, N, C)
            feats += [tok.mean(1), tok.amax(1)]
        return self.head(torch.cat(feats + [F.silu(self.lang(emb))], -1)).squeeze(-1)

    @torch.no_grad()
    def score(self, images: dict, instructions: list[str], batch: int = 256) -> torch.Tensor:
        """The model's reward for each frame ``(B,)``: success probability, progress in [0, 1], or utility."""
        was = self.training
        self.eval()
        out = []
        n = len(instructions)
        for k in range(0, n, batch):
            raw = self.forward({c: v[k : k + batch] for c, v in images.items()}, instructions[k : k + batch])
            out.append(raw if self.cfg.kind == "preference" else torch.sigmoid(raw))
        self.train(was)
        return torch.cat(out).float().cpu() if out else torch.zeros(0)

    # ------------------------------------------------------------------ compatibility
    def check_compatible(self, tasks, cameras, image_size: int) -> None:
        """Refuse (one line) a use on tasks, cameras or image sizes the model was not trained on."""
        missing = sorted(set(tasks) - set(self.cfg.tasks))
        if missing:
            raise ValueError(f"reward model was trained on {self.cfg.tasks}, not on {missing}; train one on data of these tasks")
        absent = [c for c in self.cfg.cameras if c not in list(cameras)]
        if absent:
            raise ValueError(f"reward model reads camera(s) {absent}, which this run does not render (it has {list(cameras)})")
        if int(image_size) != self.cfg.image_size:
            raise ValueError(f"reward model was trained on {self.cfg.image_size}x{self.cfg.image_size} images; this run renders "
                             f"{image_size}x{image_size}")  # fmt: skip


# ---------------------------------------------------------------------------------------------- losses
def success_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: ``logits`` and ``labels`` (B,)."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def progress_loss(logits: torch.Tensor, progress: torch.Tensor, failure_cap: float) -> torch.Tensor:
    """``progress`` (B,): a target in [0, 1], or NaN for a failed episode's frame, which is penalised only above
    ``failure_cap`` (squared hinge). Squared error on sigmoid(logits) for the others."""
    p = torch.sigmoid(logits)
    known = torch.isfinite(progress)
    err = torch.where(known, p - torch.nan_to_num(progress), F.relu(p - failure_cap))
    return (err**2).mean()


def bradley_terry_loss(u_win: torch.Tensor, u_lose: torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(mean u(winner) - mean u(loser))`` over pairs; ``u_*`` ``(P, T)`` per-frame utilities."""
    return -F.logsigmoid(u_win.mean(-1) - u_lose.mean(-1)).mean()


@dataclass
class RewardTrainConfig:
    """``algo=reward_model`` in ``rlvla train`` (loop settings in ``train.*``, data in ``data.path``)."""

    name: str = "reward_model"
    kind: str = "success"
    """success (classifier), progress (regressor) or preference (Bradley-Terry)."""
    cameras: list[str] = field(default_factory=list)
    """Cameras to read (default: the dataset's first)."""
    width: int = 16
    depth: int = 4
    hidden: int = 256
    random_shift: int = 4
    language: str = "minilm"
    failure_cap: float = 0.8
    """progress: frames of failed episodes are penalised above this."""
    pair_frames: int = 8
    """preference: frames sampled from each trajectory of a pair."""

    def __post_init__(self) -> None:
        RewardModelConfig(kind=self.kind, width=self.width, depth=self.depth, hidden=self.hidden, random_shift=self.random_shift,
                          language=self.language)  # validates  # fmt: skip
        if not 0 < self.failure_cap <= 1 or self.pair_frames < 1:
            raise ValueError(f"need failure_cap in (0, 1] and pair_frames >= 1 (got {self.failure_cap}, {self.pair_frames})")


class RewardModelTrainer(AdamWTrainer):
    """Batches drawn from :class:`LabelledFrames` for ``(seed, step)`` (:meth:`draw`), one AdamW step each."""

    what = "reward model loss"

    def __init__(self, model: RewardModel, cfg: RewardTrainConfig, steps: int, lr: float = 3e-4, weight_decay: float = 1e-4,
                 warmup_steps: int = 100, grad_clip: float = 1.0) -> None:  # fmt: skip
        super().__init__(model, steps, lr, weight_decay, warmup_steps, grad_clip)
        self.cfg = cfg

    def draw(self, frames, step: int, seed: int, batch_size: int) -> dict:
        """The frames (and targets) of batch ``step``: balanced success frames, uniform frames with their progress, or
        preference pairs of ``pair_frames`` frames each."""
        kind = self.cfg.kind
        if kind == "preference":
            pairs = max(1, batch_size // (2 * self.cfg.pair_frames))
            win, lose = frames.preference_pairs(step, pairs, self.cfg.pair_frames, seed)
            return {**frames.frames(np.r_[win.reshape(-1), lose.reshape(-1)]), "pairs": pairs}
        if kind == "success":
            idx = frames.balanced_indices(step, batch_size, seed)
            return {**frames.frames(idx), "target": torch.from_numpy(frames.success[idx])}
        idx = frames.uniform_indices(step, batch_size, seed)
        return {**frames.frames(idx), "target": torch.from_numpy(frames.progress[idx]).float()}

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        out = self.model(batch["images"], batch["instruction"], augment=True)
        if self.cfg.kind == "preference":
            u = out.view(2, batch["pairs"], self.cfg.pair_frames)
            return bradley_terry_loss(u[0], u[1]), {"pair_accuracy": float((u[0].mean(-1) > u[1].mean(-1)).float().mean())}
        target = batch["target"].to(out.device)
        if self.cfg.kind == "success":
            return success_loss(out, target), {"accuracy": float(((out > 0) == target).float().mean())}
        return progress_loss(out, target, self.cfg.failure_cap), {}
