"""Supervised fine-tuning (behaviour cloning): minimise the head's ``bc_loss`` on expert action chunks.

The loop it serves::

    algo = SFT(policy, steps=..., lr=...)
    for step in range(start, steps):
        metrics = algo.update(batch, step)     # one AdamW step; raises NonFiniteLossError on NaN/inf
"""

from __future__ import annotations

import torch

from rlvla.algos.optim import load_optimizer_tensors, make_adamw, optimizer_tensors, warmup_cosine
from rlvla.errors import NonFiniteLossError


class SFT:
    def __init__(self, policy, steps: int, lr: float = 3e-4, weight_decay: float = 1e-4, warmup_steps: int = 100,
                 grad_clip: float = 1.0) -> None:  # fmt: skip
        self.policy = policy
        self.steps = steps
        self.lr = lr
        self.warmup = warmup_steps
        self.grad_clip = grad_clip
        self.opt = make_adamw(policy.parameters(), lr, weight_decay)

    def update(self, batch, step: int) -> dict:
        self.policy.train()
        lr = self.lr * warmup_cosine(step, self.steps, self.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss, metrics = self.policy.bc_loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {float(loss.detach())} at step {step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else float("inf"))
        if not torch.isfinite(gnorm):
            raise NonFiniteLossError(f"gradient norm is {float(gnorm)} at step {step}")
        self.opt.step()
        return {**metrics, "loss": float(loss.detach()), "grad_norm": float(gnorm), "lr": lr}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Training state apart from the deployable weights: optimiser tensors + JSON metadata."""
        return optimizer_tensors(self.opt)

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        load_optimizer_tensors(self.opt, tensors, meta)
