"""Scripted experts for every MetaWorld task, with action noise and failure injection.

An expert reads the privileged simulator state from ``info["state"]`` (never the policy's observation) and
returns one low-level action. Because it only needs ``info``, it runs the same way beside a single env or a
vector env.

Failure injection: with probability ``failure_prob`` an episode is marked to fail. From a random step in the
first ``failure_window`` of the episode the expert stops doing its task and instead drifts: it repeats a random
direction with the gripper open, so the episode ends unsuccessful for a reason a learner can see in pixels.
"""

from __future__ import annotations

import numpy as np

from rlvla.envs.suites import ExpertConfig, resolve_task


class ScriptedExpert:
    """MetaWorld's hand-written policy for ``task``, wrapped with noise and failure injection."""

    def __init__(self, task: str, config: ExpertConfig | None = None, seed: int | None = None) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.task = resolve_task(task)
        self.policy = ENV_POLICY_MAP[self.task]()
        self.config = config or ExpertConfig()
        self.rng = np.random.default_rng(seed)
        self.begin_episode()

    def begin_episode(self) -> None:
        """Call at every reset: draws whether (and when) this episode's failure happens."""
        c = self.config
        self.step_count = 0
        self.fails = bool(self.rng.random() < c.failure_prob)
        self.fail_at = int(self.rng.integers(c.failure_window[0], c.failure_window[1] + 1)) if self.fails else -1
        drift = self.rng.normal(size=3)
        self._drift = np.concatenate([0.6 * drift / np.linalg.norm(drift), [-1.0]]).astype(np.float32)

    def act(self, info: dict) -> np.ndarray:
        state = np.asarray(info["state"], dtype=np.float64)
        if self.fails and self.step_count >= self.fail_at:
            action = self._drift.copy()
        else:
            action = np.asarray(self.policy.get_action(state), dtype=np.float32)
        if self.config.noise_std > 0:
            action = action + self.rng.normal(0.0, self.config.noise_std, size=action.shape)
        self.step_count += 1
        return np.clip(action, -1.0, 1.0).astype(np.float32)
