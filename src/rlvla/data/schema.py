"""The one batch schema shared by datasets, rollouts and algorithms.

A batch is a ``Batch`` (a dict of tensors plus the instruction strings) whose keys follow LeRobot's names.
Every tensor shares the leading batch shape ``*B`` (``(B,)`` for shuffled samples, ``(T, N)`` for rollouts):

=============================  =========  ==================  ============================================
key                            dtype      shape               meaning
=============================  =========  ==================  ============================================
observation.images.<camera>    uint8      (*B, H, W, 3)       upright RGB image from <camera>
observation.state              float32    (*B, D)             proprioception (hand xyz, gripper)
action                         float32    (*B, A) or          action, or an action chunk of K steps
                                          (*B, K, A)
next.reward                    float32    (*B,)               reward after the action (summed over a chunk)
next.done                      bool       (*B,)               episode ended after the action
next.terminated                bool       (*B,)               ended by success/failure: do not bootstrap
next.truncated                 bool       (*B,)               ended by the time limit: bootstrap
next.success                   bool       (*B,)               the task was achieved by this step
episode_index                  int64      (*B,)               episode id
frame_index                    int64      (*B,)               step within the episode
task_index                     int64      (*B,)               index into the dataset's task strings
task                           list[str]  len = prod(*B)      the instruction (not a tensor)
=============================  =========  ==================  ============================================

Only ``observation.state`` and one image or the action are needed for a given use; ``Batch.validate(required)``
checks the keys a consumer names and every key present. A missing or misshaped key is an error at the
boundary, never a silent default.
"""

from __future__ import annotations

import torch

IMAGE_PREFIX = "observation.images."

# key -> (dtype, number of trailing (per-sample) dims; None = 1 or 2 allowed)
_SPEC: dict[str, tuple[torch.dtype, int | None]] = {
    "observation.state": (torch.float32, 1),
    "action": (torch.float32, None),
    "next.reward": (torch.float32, 0),
    "next.done": (torch.bool, 0),
    "next.terminated": (torch.bool, 0),
    "next.truncated": (torch.bool, 0),
    "next.success": (torch.bool, 0),
    "episode_index": (torch.int64, 0),
    "frame_index": (torch.int64, 0),
    "task_index": (torch.int64, 0),
    "index": (torch.int64, 0),
    "timestamp": (torch.float32, 0),
    "next.return": (torch.float32, 0),
}


class BatchError(ValueError):
    """A batch that does not meet the schema."""


class Batch(dict):
    """A dict of tensors following the schema above (plus ``task``: a list of instruction strings)."""

    def validate(self, required=()) -> "Batch":
        for key in required:
            if key not in self:
                raise BatchError(f"batch is missing {key!r}; it has {sorted(self)}")
        lead = None
        for key, value in self.items():
            if key == "task":
                continue
            if not isinstance(value, torch.Tensor):
                raise BatchError(f"batch[{key!r}] must be a tensor, got {type(value).__name__}")
            if key.startswith(IMAGE_PREFIX):
                dtype, trailing = torch.uint8, 3
                if value.ndim < 3 or value.shape[-1] != 3:
                    raise BatchError(f"batch[{key!r}] must be (*B, H, W, 3) uint8, got shape {tuple(value.shape)}")
            elif key in _SPEC:
                dtype, trailing = _SPEC[key]
            else:
                continue  # extra keys (log-probs, advantages, ...) are their producer's business
            if value.dtype != dtype:
                raise BatchError(f"batch[{key!r}] must have dtype {dtype}, got {value.dtype}")
            if trailing is None:
                continue  # the action is checked against the others' leading shape below
            this_lead = tuple(value.shape[: value.ndim - trailing])
            if lead is None:
                lead = this_lead
            elif this_lead != lead:
                raise BatchError(f"batch[{key!r}] has leading shape {this_lead}, other keys have {lead}")
        if "action" in self and lead is not None:
            a = self["action"]
            if tuple(a.shape[: len(lead)]) != lead or a.ndim - len(lead) not in (1, 2):
                raise BatchError(f"batch['action'] must be {lead} + (A,) or + (K, A), got {tuple(a.shape)}")
        if "task" in self and lead is not None:
            n = 1
            for d in lead:
                n *= d
            if len(self["task"]) != n:
                raise BatchError(f"batch['task'] has {len(self['task'])} strings for {n} samples")
        return self

    @property
    def batch_shape(self) -> tuple[int, ...]:
        for key in ("next.reward", "episode_index", "observation.state"):
            if key in self:
                t = self[key]
                return tuple(t.shape) if key != "observation.state" else tuple(t.shape[:-1])
        raise BatchError("batch has no key from which to read its shape")

    def to(self, device) -> "Batch":
        return Batch({k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.items()})

    def image_keys(self) -> list[str]:
        return sorted(k for k in self if k.startswith(IMAGE_PREFIX))
