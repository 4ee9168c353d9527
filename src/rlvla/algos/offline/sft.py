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


def noisy_proprio(batch, std: torch.Tensor):
    """A copy of ``batch`` whose ``observation.state`` has Gaussian noise of per-dimension ``std`` added (the
    torch RNG, seeded per step by the training loop, so a resumed run draws the same noise)."""
    out = type(batch)(batch)
    state = torch.as_tensor(batch["observation.state"]).float()
    out["observation.state"] = state + torch.randn_like(state) * std.to(state.device)
    return out


class SFT:
    def __init__(self, policy, steps: int, lr: float = 3e-4, weight_decay: float = 1e-4, warmup_steps: int = 100,
                 grad_clip: float = 1.0, aux_goal: float = 0.0, goal_stats=None, proprio_noise: float = 0.0,
                 aux_object: float = 0.0, layout_frames: dict | None = None, aux_batch: int = 32,
                 aux_keys: tuple[str, ...] = ("obj_pos",), aux_warmup: int = 0, aux_clone: float = 1.0,
                 aux_restart: bool = False, aux_keypoints: float = 0.0, aux_keypoint_target: str = "affine", lang_noise: float = 0.0, lang_mix: float = 0.0,
                 lang_partners: list[list[int]] | None = None) -> None:  # fmt: skip
        self.policy = policy
        self.steps = steps
        self.lr = lr
        self.warmup = warmup_steps
        self.grad_clip = grad_clip
        self.aux_goal = float(aux_goal)
        self.proprio_noise = float(proprio_noise)
        # the auxiliary goal readout is trainer state (saved with the optimiser for resume), not part of the policy
        self.aux = torch.nn.Linear(policy.backbone.dim, 3).to(policy.device) if self.aux_goal > 0 else None
        self.goal_stats = goal_stats  # (mean, std) of the goals: the target is standardised
        self.aux_object = float(aux_object)
        self.aux_warmup = int(aux_warmup)  # the first steps train the layout target alone
        self.aux_clone = float(aux_clone)  # the layout loss's weight after the warm-up (x aux_object); 0: no layout batch
        self.aux_restart = bool(aux_restart) and self.aux_warmup > 0  # each stage has its own lr schedule
        self.lang_noise = float(lang_noise)  # instruction-embedding noise, for this trainer's steps only
        # cross-task prototype mixing, for this trainer's steps only: (probability, each prototype's partners)
        self.lang_mix = (float(lang_mix), lang_partners or []) if lang_mix > 0 else None
        self.aux_obj = None
        if self.aux_object > 0:
            if not layout_frames:
                raise ValueError("algo.aux_object needs layout frames (rlvla.collectors.layouts.layout_frames)")
            self.frames, self.aux_batch = layout_frames, int(aux_batch)
            self.aux_obj = self._layout_target(layout_frames, aux_keys).to(policy.device)
        self.aux_keypoints, self.kp_target, self.last_keypoint_loss = float(aux_keypoints), None, float("nan")
        self.kp_pixels = aux_keypoint_target == "pixels"
        if self.aux_keypoints > 0:
            self.kp_target = self._keypoint_target(layout_frames)
        params = list(policy.parameters()) + [p for m in (self.aux, self.aux_obj) if m is not None for p in m.parameters()]
        self.opt = make_adamw(params, lr, weight_decay)

    def _loss(self, batch, step: int) -> tuple[torch.Tensor, dict]:
        if self.aux_obj is not None and step < self.aux_warmup:
            aux = self._object_loss()
            return self.aux_object * aux, {"aux_object_loss": float(aux.detach()), "aux_warmup": 1.0, **self._kp_metric()}
        loss, metrics = self._bc_loss(batch)
        if self.aux_obj is None or self.aux_clone == 0:
            return loss, metrics
        aux = self._object_loss()
        return loss + self.aux_clone * self.aux_object * aux, {**metrics, "aux_object_loss": float(aux.detach()), **self._kp_metric()}

    def _kp_metric(self) -> dict:
        return {"aux_keypoint_loss": self.last_keypoint_loss} if self.kp_target is not None else {}

    def _layout_target(self, frames: dict, keys: tuple[str, ...]) -> torch.nn.Linear:
        """The layout target and its readout: positions (regression on standardised coordinates) and/or, for
        ``target_rank``, which candidate the instruction names (classification; its logits come first)."""
        self.aux_classes, self.aux_target = 0, None
        if "target_rank" in keys:
            ranks = torch.as_tensor(frames["target_rank"]).long()
            if bool((ranks < 0).any()):
                raise ValueError("algo.aux_target (candidate, grounded, colours: a named candidate) needs tasks "
                                 "with several candidates (--tasks grounded)")  # fmt: skip
            self.aux_rank, self.aux_classes = ranks, int(ranks.max()) + 1
        if "colour_pos" in keys and torch.as_tensor(frames["colour_pos"]).shape[1] == 0:
            raise ValueError("algo.aux_target=colours needs tasks whose candidates have colours (--tasks grounded)")
        pos_keys = [k for k in keys if k != "target_rank"]
        width = 0
        if pos_keys:
            pos = torch.cat([torch.as_tensor(frames[k]).float() for k in pos_keys], 1)
            self.aux_target = pos  # (N, 3 per key): the frames' targets
            self.aux_stats = (pos.mean(0), pos.std(0).clamp_min(1e-3))
            width = pos.shape[1]
        return torch.nn.Linear(self.policy.backbone.dim, self.aux_classes + width)

    def _keypoint_target(self, frames: dict | None) -> torch.Tensor:
        """The keypoints' targets on the layout frames: each colour's candidate x-y, standardised, (N, colours, 2)
        (``affine``); or each colour's pixel place and then the named candidate's, (N, colours + 1, 2) (``pixels``)."""
        spatial = getattr(self.policy.backbone.vision, "spatial", None)
        pos = torch.as_tensor(frames["colour_pos"]).float() if frames is not None and "colour_pos" in frames else None
        if pos is None or pos.shape[1] == 0:
            raise ValueError("algo.aux_keypoints needs algo.aux_target=colours on tasks whose candidates have colours (--tasks grounded)")
        colours = pos.shape[1] // 3
        need = colours + 1 if self.kp_pixels else colours
        if spatial is None or spatial.maps.out_channels < need:
            raise ValueError(f"algo.aux_keypoints={self.aux_keypoints} with aux_keypoint_target="
                             f"{'pixels' if self.kp_pixels else 'affine'} ties {need} keypoints: set "
                             f"policy.backbone.vision.keypoints >= {need} (cnn encoder)")  # fmt: skip
        if self.kp_pixels:  # each colour's pixel place, then the named one's: (N, colours + 1, 2)
            px = torch.as_tensor(frames["colour_px"]).float().reshape(len(pos), colours, 2)
            named = torch.as_tensor(frames["named_colour"]).long()
            return torch.cat([px, px[torch.arange(len(px)), named][:, None]], 1)
        xy = pos.reshape(len(pos), colours, 3)[..., :2]
        return (xy - xy.mean(0)) / xy.std(0).clamp_min(1e-3)

    def _keypoint_loss(self, idx: list[int], batch: int) -> torch.Tensor:
        """``affine``: how far each colour's keypoint (first camera) is from being an affine function of where that
        colour's candidate is: the residual of the batch's least-squares affine fit (ridge 1e-4), 1 - R^2 per
        coordinate; no readout to learn. ``pixels``: :meth:`_pixel_keypoint_loss`."""
        kp = self.policy.backbone.vision.spatial.last_keypoints
        kp = kp.reshape(batch, -1, *kp.shape[1:])[:, 0]  # (B, k, 2)
        target = self.kp_target[idx].to(kp.device)  # (B, colours (+ 1 for pixels), 2)
        if self.kp_pixels:
            return self._pixel_keypoint_loss(kp, target, batch)
        total = kp.new_zeros(())
        for c in range(target.shape[1]):
            a = torch.cat([kp[:, c], torch.ones_like(kp[:, c, :1])], 1)  # (B, 3)
            a = a - torch.cat([a[:, :2].mean(0, keepdim=True), a.new_zeros(1, 1)], 1)
            scale = a[:, :2].pow(2).mean().clamp_min(1e-12)
            w = torch.linalg.solve(a.T @ a + 1e-4 * scale * len(a) * torch.eye(3, device=a.device), a.T @ target[:, c])
            total = total + (target[:, c] - a @ w).pow(2).mean()
        return total / target.shape[1]

    def _pixel_keypoint_loss(self, kp: torch.Tensor, target: torch.Tensor, batch: int) -> torch.Tensor:
        """Smooth-L1 (pixels) from the first keypoints' image places to ``target`` (B, n, 2) pixel places, moved by
        the forward's random shift. A map cell ``j`` of a stride-``s`` grid centres on pixel ``s * j`` (3x3 stride-2
        convs, padding 1), and the keypoint's -1..1 spans cells 0..h-1."""
        bb = self.policy.backbone
        h, w = bb.vision.spatial.last_grid
        size = self.policy.cfg.image_size
        span = kp.new_tensor([size - size / w, size - size / h])  # pixels from the first cell's centre to the last's
        pred = (kp[:, : target.shape[1]] + 1) * span / 2
        if bb.last_shift is not None:
            target = target + bb.last_shift.reshape(batch, -1, 2)[:, 0, None]
        return torch.nn.functional.smooth_l1_loss(pred, target, beta=1.0)

    def _object_loss(self) -> torch.Tensor:
        """MSE of the standardised object (and/or goal) position predicted from the action readout, plus the
        cross-entropy of the named candidate where it is a target, on ``aux_batch`` layout frames drawn with the torch
        RNG (seeded per step: a resumed run draws the same frames)."""
        from rlvla.policies.backbone import Inputs

        f = self.frames
        idx = torch.randint(0, len(f["instructions"]), (self.aux_batch,)).tolist()
        inputs = Inputs(torch.as_tensor(f["images"][idx]), torch.as_tensor(f["proprio"][idx]).float(),
                        [f["instructions"][i] for i in idx])  # fmt: skip
        z, _ = self.policy.backbone(inputs)
        out, loss = self.aux_obj(z), z.new_zeros(())
        if self.aux_classes:
            loss = loss + torch.nn.functional.cross_entropy(out[:, : self.aux_classes], self.aux_rank[idx].to(z.device))
        if self.aux_target is not None:
            mean, std = (t.to(z.device) for t in self.aux_stats)
            target = (self.aux_target[idx].to(z.device) - mean) / std
            loss = loss + torch.nn.functional.mse_loss(out[:, self.aux_classes :], target)
        if self.kp_target is not None:
            kp_loss = self._keypoint_loss(idx, len(idx))
            self.last_keypoint_loss = float(kp_loss.detach())
            loss = loss + self.aux_keypoints * kp_loss
        return loss

    def _bc_loss(self, batch) -> tuple[torch.Tensor, dict]:
        if self.proprio_noise > 0:
            batch = noisy_proprio(batch, self.proprio_noise * self.policy.backbone.proprio_std)
        if self.aux is None:
            return self.policy.bc_loss(batch)
        if "aux.goal" not in batch:
            raise ValueError("algo.aux_goal needs a dataset that records each episode's goal_pos; re-collect it with `rlvla collect`")
        z, _ = self.policy.encode(batch)
        loss, metrics = self.policy.bc_loss(batch, z=z)
        mean, std = (t.to(z.device) for t in self.goal_stats)
        target = (torch.as_tensor(batch["aux.goal"]).float().to(z.device) - mean) / std
        aux = torch.nn.functional.mse_loss(self.aux(z), target)
        return loss + self.aux_goal * aux, {**metrics, "aux_goal_loss": float(aux.detach())}

    def _lr_scale(self, step: int) -> float:
        """Warm-up then cosine over the whole run, or (``aux_restart``) per stage: the layout warm-up at the full
        rate after its ramp (its loss sits on a plateau before it drops: a decaying rate can stall it there), then
        behaviour cloning with a ramp and cosine of its own (the new head starts at the full rate, not a decayed one)."""
        if not self.aux_restart:
            return warmup_cosine(step, self.steps, self.warmup)
        if step < self.aux_warmup:
            return min(1.0, (step + 1) / max(1, self.warmup))
        return warmup_cosine(step - self.aux_warmup, self.steps - self.aux_warmup, self.warmup)

    def update(self, batch, step: int) -> dict:
        self.policy.train()
        lr = self.lr * self._lr_scale(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.policy.backbone.lang_noise, self.policy.backbone.lang_mix = self.lang_noise, self.lang_mix
        try:
            loss, metrics = self._loss(batch, step)
        finally:
            self.policy.backbone.lang_noise, self.policy.backbone.lang_mix = 0.0, None
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {float(loss.detach())} at step {step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else float("inf"))
        if not torch.isfinite(gnorm):
            raise NonFiniteLossError(f"gradient norm is {float(gnorm)} at step {step}")
        self.opt.step()
        return {**metrics, "loss": float(loss.detach()), "grad_norm": float(gnorm), "lr": lr}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Training state apart from the deployable weights: optimiser tensors (+ the auxiliary readout) + JSON metadata."""
        tensors, meta = optimizer_tensors(self.opt)
        for name, m in (("aux_goal", self.aux), ("aux_object", self.aux_obj)):
            if m is not None:
                tensors.update({f"{name}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        for name, m in (("aux_goal", self.aux), ("aux_object", self.aux_obj)):
            if m is not None:
                m.load_state_dict({k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")})
        aux = ("aux_goal.", "aux_object.")
        load_optimizer_tensors(self.opt, {k: v for k, v in tensors.items() if not k.startswith(aux)}, meta)
