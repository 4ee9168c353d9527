"""Optimiser, learning-rate schedule and optimiser-state (de)serialisation shared by algorithms."""

from __future__ import annotations

import math

import torch


def make_adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, norms, embeddings of position/readout)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=True
    )


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state into flat tensors (for safetensors) and JSON metadata."""
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"state.{pid}.{k}"] = t.detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if not name.startswith("state."):
            continue
        _, pid, k = name.split(".", 2)
        state.setdefault(int(pid), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class AdamWTrainer:
    """One AdamW step per ``update(batch, step)`` on ``self.loss(batch, step) -> (loss, metrics)``: warm-up + cosine
    learning rate, gradient clip, a stop on a non-finite loss or gradient; optimiser state as tensors + JSON."""

    what = "loss"

    def __init__(self, model, steps: int, lr: float = 3e-4, weight_decay: float = 1e-4, warmup_steps: int = 100,
                 grad_clip: float = 1.0) -> None:  # fmt: skip
        self.model, self.steps, self.lr, self.warmup, self.grad_clip = model, steps, lr, warmup_steps, grad_clip
        self.opt = make_adamw(list(model.parameters()), lr, weight_decay)

    def loss(self, batch, step: int):
        raise NotImplementedError

    def update(self, batch, step: int) -> dict:
        from rlvla.errors import NonFiniteLossError

        self.model.train()
        lr = self.lr * warmup_cosine(step, self.steps, self.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss, metrics = self.loss(batch, step)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"{self.what} is {float(loss.detach())} at step {step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip if self.grad_clip > 0 else float("inf"))
        if not torch.isfinite(gnorm):
            raise NonFiniteLossError(f"gradient norm of the {self.what} is {float(gnorm)} at step {step}")
        self.opt.step()
        return {**metrics, "loss": float(loss.detach()), "grad_norm": float(gnorm), "lr": lr}

    def state(self) -> tuple[dict, dict]:
        return optimizer_tensors(self.opt)

    def load_state(self, tensors: dict, meta: dict) -> None:
        load_optimizer_tensors(self.opt, tensors, meta)
