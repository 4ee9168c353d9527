"""VLAPolicy: backbone + action head + value head, with everything RL needs.

The loop it serves::

    policy = make_policy(PolicyConfig(head=head_config("flow")))
    out = policy.act(obs)                                      # rollout: actions (B, K, A), log_prob, value, extras
    env.step(out.actions)                                      # a chunk of K actions per decision
    logp = policy.log_prob(obs, out.actions, out.extras)       # update: differentiable, equals out.log_prob
    loss, metrics = policy.bc_loss(batch)                      # supervised fine-tuning
    policy.save_pretrained(dir); VLAPolicy.from_pretrained(dir)

``obs`` is either an env observation dict (``image`` / ``image_<cam>``, ``proprio``, ``instruction``; batched or
single) or a dataset :class:`~rlvla.data.schema.Batch` (``observation.images.<cam>``, ``observation.state``, ``task``).
Log-prob levels: ``token`` (per element, (B, K, A); per token for the token head), ``action`` ((B, K)) and
``chunk`` ((B,)).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlvla.errors import CheckpointError  # noqa: F401  (part of this module's interface)
from rlvla.policies.backbone import Backbone, Inputs
from rlvla.policies.config import PolicyConfig, diff_configs
from rlvla.policies.heads import head_config, make_head

FORMAT = "rlvla-policy"
FORMAT_VERSION = 1
LEVELS = ("token", "action", "chunk")
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class Act:
    actions: torch.Tensor  # (B, K, A) in [-1, 1]
    log_prob: torch.Tensor | None  # at the requested level
    value: torch.Tensor  # (B,)
    extras: dict


def reduce_level(lp: torch.Tensor, level: str) -> torch.Tensor:
    """(B, K, A) elementwise log-probs -> the requested level."""
    if level == "token":
        return lp
    if level == "action":
        return lp.sum(-1)
    if level == "chunk":
        return lp.sum((-1, -2))
    raise ValueError(f"unknown log-prob level {level!r}; valid: {', '.join(LEVELS)}")


class VLAPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        if cfg.head is None:
            cfg = dataclasses.replace(cfg, head=head_config("token"))
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        d = self.backbone.dim
        self.head = make_head(cfg.head, d, cfg.chunk, cfg.action_dim)
        self.value_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 1))
        self.q_head = QEnsemble(d, cfg.chunk * cfg.action_dim, cfg.critic, cfg.critic_hidden) if cfg.critic else None

    @property
    def device(self) -> torch.device:
        return self.backbone.readouts.device

    # ------------------------------------------------------------------ inputs
    def prepare(self, obs) -> Inputs:
        if isinstance(obs, Inputs):
            return obs
        cams = self.cfg.cameras
        if "observation.state" in obs:  # a dataset batch
            try:
                images = torch.stack([torch.as_tensor(obs[f"observation.images.{c}"]) for c in cams], 1)
            except KeyError as e:
                raise KeyError(f"batch has no image for camera {e}; the policy uses cameras {cams}") from None
            return Inputs(images, torch.as_tensor(obs["observation.state"]).float(), list(obs["task"]),
                          self._condition(obs, len(obs["task"])))
        imgs = []
        for i, c in enumerate(cams):
            key = f"image_{c}" if f"image_{c}" in obs else ("image" if i == 0 else None)
            if key is None or key not in obs:
                raise KeyError(f"observation has no image for camera {c!r} (keys: {sorted(obs)})")
            imgs.append(torch.as_tensor(np.asarray(obs[key])))
        images = torch.stack(imgs, -4)  # (..., cams, H, W, 3)
        proprio = torch.as_tensor(np.asarray(obs["proprio"], dtype=np.float32))
        instr = obs["instruction"]
        if images.ndim == 4:  # a single observation
            images, proprio, instr = images[None], proprio[None], [instr]
        return Inputs(images, proprio, [str(t) for t in instr], self._condition(obs, len(proprio)))

    def _condition(self, obs, b: int) -> torch.Tensor | None:
        """The conditioning input: ``obs["condition"]`` when given, else the configured deployment value."""
        if self.cfg.condition.kind == "none":
            return None
        if "condition" in obs and obs["condition"] is not None:
            return torch.as_tensor(np.asarray(obs["condition"], dtype=np.float32)).reshape(b)
        return torch.full((b,), float(self.cfg.condition.value))

    # ------------------------------------------------------------------ RL interface
    def encode(self, obs):
        return self.backbone(self.prepare(obs))

    @torch.no_grad()  # not inference_mode: rollout tensors are re-scored with autograd later
    def act(self, obs, deterministic: bool = False, level: str = "chunk", with_log_prob: bool = True,
            carry: dict | None = None) -> Act:
        """Batched inference for rollouts (no grad). ``with_log_prob=False`` skips scoring (evaluation). ``carry``:
        the exploration noise carried over from each env's previous decision (chain heads in ``output`` mode; see
        :meth:`~rlvla.policies.heads.base.ChainHead._output_sample`)."""
        inputs = self.prepare(obs)
        z, zv = self.backbone(inputs)
        w = self.cfg.condition.guidance
        if self.cfg.condition.kind != "none" and w != 1.0 and self.cfg.head.name == "flow":
            if with_log_prob:
                raise ValueError("guided sampling (policy.condition.guidance != 1) has no log-prob; use it for evaluation only")
            null = dataclasses.replace(inputs, condition=torch.full((len(inputs),), float("nan")))
            zu, _ = self.backbone(null)
            actions, lp, extras = self.head.sample(z, deterministic=deterministic, with_log_prob=False, guide=(zu, w))
        else:
            kw = {} if carry is None else {"carry": carry}
            actions, lp, extras = self.head.sample(z, deterministic=deterministic, with_log_prob=with_log_prob, **kw)
        lp = None if lp is None else reduce_level(lp, level)
        return Act(actions, lp, self.value_head(zv)[:, 0], extras)

    def sample(self, obs, deterministic: bool = False, level: str = "chunk"):
        """-> actions (B, K, A), log_prob at ``level``, extras (what ``log_prob`` needs to re-score)."""
        z, _ = self.encode(obs)
        actions, lp, extras = self.head.sample(z, deterministic=deterministic)
        return actions, reduce_level(lp, level), extras

    def log_prob(self, obs, actions: torch.Tensor, extras: dict, level: str = "chunk") -> torch.Tensor:
        z, _ = self.encode(obs)
        return reduce_level(self.head.log_prob(z, actions, extras), level)

    def evaluate(self, obs, actions: torch.Tensor, extras: dict, level: str = "chunk"):
        """One backbone pass for an RL update: (log_prob, entropy or None, value)."""
        z, zv = self.encode(obs)
        return self.evaluate_features(z, zv, actions, extras, level)

    def evaluate_features(self, z, zv, actions: torch.Tensor, extras: dict, level: str = "chunk"):
        """``evaluate`` from backbone readouts ``(z, zv) = encode(obs)`` (RL with a frozen backbone encodes once)."""
        lp = reduce_level(self.head.log_prob(z, actions, extras), level)
        ent = self.head.entropy(z, extras)
        return lp, None if ent is None else reduce_level(ent, level), self.value_head(zv)[:, 0]

    @torch.no_grad()
    def deterministic_like(self, obs, actions: torch.Tensor, extras: dict, z: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic (evaluation) action for the same input and starting noise as the stochastic sample
        ``actions`` / ``extras``: (B, K, A). ``z``: the action readouts of ``obs`` if already computed."""
        z = self.encode(obs)[0] if z is None else z
        return self.head.deterministic_like(z, actions, extras)

    def entropy(self, obs, extras: dict, level: str = "chunk"):
        z, _ = self.encode(obs)
        ent = self.head.entropy(z, extras)
        return None if ent is None else reduce_level(ent, level)

    def value(self, obs) -> torch.Tensor:
        _, zv = self.encode(obs)
        return self.value_head(zv)[:, 0]

    # ------------------------------------------------------------------ online RL on a frozen trunk
    @torch.no_grad()
    def rl_features(self, obs) -> dict:
        """What an RL update on a frozen trunk needs per decision, computed once per iteration: the readouts
        ``z``, ``zv`` (B, D) and the fusion input tokens ``ctx`` (B, T, D), from which ``value_from_features``
        recomputes the VALUE readout with a trainable readout token."""
        ctx = self.backbone.tokens(self.prepare(obs))
        z, zv = self.backbone.fuse(ctx)
        return {"z": z, "zv": zv, "ctx": ctx}

    def trainable_value_readout(self) -> bool:
        """The VALUE readout token can be trained on a frozen trunk without moving the policy (``isolate_value``)."""
        return bool(self.cfg.backbone.isolate_value)

    def value_from_features(self, feats: dict, idx: torch.Tensor) -> torch.Tensor:
        """V of decisions ``idx`` from ``rl_features`` output: through the fusion again (grad reaches the VALUE
        readout token) when it is isolated, else from the cached value readout."""
        zv = self.backbone.fuse(feats["ctx"][idx])[1] if self.trainable_value_readout() else feats["zv"][idx]
        return self.value_head(zv)[:, 0]

    def critic_parameters(self, frozen_trunk: bool) -> list[nn.Parameter]:
        """The critic's own parameters (their own learning rate and gradient clip in online RL): the value head,
        and on a frozen trunk with an isolated VALUE readout the readout tokens (the ACT token gets no gradient
        from the value loss, so it stays put)."""
        params = list(self.value_head.parameters())
        if frozen_trunk and self.trainable_value_readout():
            params.append(self.backbone.readouts)
        return params

    def q_values(self, zv: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q ensemble over action chunks: value readouts (B, D), chunks (B, K, A) -> (critic, B)."""
        if self.q_head is None:
            raise ValueError("this policy has no Q ensemble (policy.critic = 0); train one with an offline algorithm "
                             "(algo=iql, cql or calql) or pass a critic checkpoint")  # fmt: skip
        return self.q_head(zv, actions.flatten(1))

    def bc_loss(self, batch, weights: torch.Tensor | None = None, z: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Behaviour cloning on ``batch["action"]`` (B, K, A) (or (B, A) when K = 1), masked by ``action_is_pad``;
        ``weights`` (B,) weight samples (advantage-weighted regression); ``z``: action readouts if already encoded."""
        actions = torch.as_tensor(batch["action"]).float().to(self.device)
        if actions.ndim == 2:
            actions = actions[:, None]
        if actions.shape[1:] != (self.cfg.chunk, self.cfg.action_dim):
            raise ValueError(
                f"batch actions have shape {tuple(actions.shape)}; this policy needs (B, {self.cfg.chunk}, {self.cfg.action_dim})"
            )
        pad = batch.get("action_is_pad")
        mask = None if pad is None else ~torch.as_tensor(pad).to(self.device)
        if z is None:
            z, _ = self.encode(batch)
        loss, metrics = self.head.bc_loss(z, actions, mask, weights)
        return loss, {"bc_loss": float(loss.detach()), **metrics}

    def likelihood(self, batch) -> torch.Tensor:
        """Per-sample log-likelihood of ``batch["action"]`` chunks (or the head's surrogate): (B,). For DPO."""
        actions = torch.as_tensor(batch["action"]).float().to(self.device)
        pad = batch.get("action_is_pad")
        mask = None if pad is None else ~torch.as_tensor(pad).to(self.device)
        z, _ = self.encode(batch)
        return self.head.likelihood(z, actions, mask)

    # ------------------------------------------------------------------ data-dependent set-up
    def set_stats(self, stats: dict) -> None:
        """Proprio normalisation from dataset statistics (LeRobot ``meta/stats.json`` layout)."""
        st = stats.get("observation.state")
        if st is None or "mean" not in st or "std" not in st:
            raise ValueError("dataset stats lack observation.state mean/std; re-collect the dataset")
        mean = torch.as_tensor(np.asarray(st["mean"], dtype=np.float32)).reshape(-1)
        std = torch.as_tensor(np.asarray(st["std"], dtype=np.float32)).reshape(-1)
        if mean.numel() != self.cfg.proprio_dim:
            raise ValueError(f"dataset state has {mean.numel()} dims, the policy expects {self.cfg.proprio_dim}")
        self.backbone.proprio_mean.copy_(mean)
        self.backbone.proprio_std.copy_(std.clamp_min(1e-3))

    def fit(self, actions: torch.Tensor) -> None:
        self.head.fit(actions)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``path`` atomically (a crash leaves the old copy)."""
        from rlvla.checkpoints import save_model_dir

        return save_model_dir(path, self.state_dict(), {"format": FORMAT, "version": FORMAT_VERSION, "policy": self.cfg.to_dict()})

    @staticmethod
    def read_config(path) -> PolicyConfig:
        path = Path(path)
        cfg_file = path / CONFIG
        if not cfg_file.exists():
            raise CheckpointError(f"{path}: no {CONFIG}; not a policy checkpoint (write one with save_pretrained / rlvla train)")
        try:
            meta = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{cfg_file}: corrupt JSON ({e}); restore the checkpoint or train again") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "policy" not in meta:
            raise CheckpointError(f"{cfg_file}: not an rlvla policy config (format {meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{cfg_file}: format version {meta.get('version')} is not supported (expected {FORMAT_VERSION})")
        try:
            return PolicyConfig.from_dict(meta["policy"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{cfg_file}: invalid policy config: {e}") from None

    @classmethod
    def from_pretrained(cls, path, map_location: str = "cpu") -> "VLAPolicy":
        policy = cls(cls.read_config(path))
        policy.load_weights(path, map_location=map_location)
        return policy

    def load_weights(self, path, map_location: str = "cpu") -> None:
        """Load weights from a checkpoint made with the same config; a different config is an error naming the fields."""
        path = Path(path)
        other = self.read_config(path).to_dict()
        mine = self.cfg.to_dict()
        diffs = diff_configs({k: v for k, v in other.items() if k != "tasks"}, {k: v for k, v in mine.items() if k != "tasks"})
        if diffs:
            raise CheckpointError(
                f"{path}: checkpoint was saved with a different policy config ({'; '.join(diffs[:4])}"
                f"{' ...' if len(diffs) > 4 else ''}); build the policy from the checkpoint (VLAPolicy.from_pretrained) "
                "or choose a matching config"
            )
        wfile = path / WEIGHTS
        if not wfile.exists():
            raise CheckpointError(f"{wfile}: weights file is missing; the checkpoint is incomplete")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(wfile), device=map_location)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{wfile}: corrupt weights file ({e}); restore the checkpoint or train again") from None
        own = self.state_dict()
        for k in own:  # checkpoints from before StandardizedLinear: its statistics are at identity
            layer, _, buf = k.rpartition(".")
            if buf in ("in_mean", "in_proj") and k not in state and f"{layer}.weight" in state:
                state[k] = own[k].clone()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"{wfile}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                f"wrong shape {shapes[:3]}); the file does not belong to this config.json"
            )
        for k, v in state.items():
            if not torch.isfinite(v).all() and v.is_floating_point():
                raise CheckpointError(f"{wfile}: tensor {k!r} contains NaN or inf; use an earlier checkpoint")
        self.load_state_dict(state)


class QEnsemble(nn.Module):
    """``n`` independent MLPs Q_i(zv, chunk) (REDQ / Cal-QL style ensembles; CQL uses 2), batched as one
    grouped computation: (B, D), (B, K*A) -> (n, B)."""

    def __init__(self, d: int, action_dim: int, n: int, hidden: int) -> None:
        super().__init__()
        self.n = n
        inp = d + action_dim

        def w(i, o):
            lin = [nn.Linear(i, o) for _ in range(n)]
            return nn.Parameter(torch.stack([m.weight.T for m in lin])), nn.Parameter(torch.stack([m.bias for m in lin])[:, None])

        self.w1, self.b1 = w(inp, hidden)
        self.w2, self.b2 = w(hidden, hidden)
        self.w3, self.b3 = w(hidden, 1)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)  # LayerNorm in the critic curbs over-estimation off the data (Ball et al. 2023)

    def forward(self, zv: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([zv, actions], -1)[None].expand(self.n, -1, -1)
        h = torch.nn.functional.silu(self.norm(torch.baddbmm(self.b1, x, self.w1)))
        h = torch.nn.functional.silu(self.norm(torch.baddbmm(self.b2, h, self.w2)))
        return torch.baddbmm(self.b3, h, self.w3)[..., 0]


def init_from(policy: VLAPolicy, path) -> list[str]:
    """Copy the weights of checkpoint ``path`` into ``policy`` where names and shapes match (an offline algorithm
    starting from an SFT policy adds a Q ensemble or a conditioning token); returns the names left as initialised."""
    from safetensors.torch import load_file

    path = Path(path)
    policy.read_config(path)  # a clear error for a non-checkpoint
    try:
        state = load_file(str(path / WEIGHTS))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise CheckpointError(f"{path / WEIGHTS}: cannot read weights ({e}); restore the checkpoint or train again") from None
    own = policy.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not take:
        raise CheckpointError(f"{path}: no weights match this policy's architecture; start from a checkpoint of the same backbone and head")
    own.update(take)
    policy.load_state_dict(own)
    return sorted(set(own) - set(take))


def make_policy(cfg: PolicyConfig | None = None, **overrides) -> VLAPolicy:
    return VLAPolicy(cfg or PolicyConfig(**overrides))
