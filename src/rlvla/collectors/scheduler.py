"""The one episode scheduler: queued episodes on an env pool, run in lanes so inference overlaps simulation.

RL rollouts (:mod:`.rollout`), evaluation and test-time search (:mod:`.evaluate`) all run through
:meth:`Lanes.run`; a collector supplies four callables::

    start(ids) -> {env: first obs}                   begin the next queued episode on each env of ids that has one
    act(ids, obs list) -> ({env: action}, payload)   one batched decision for the envs of a lane
    record(ids, payload, acted obs, stepped) -> {env: next obs}   book one decision; ended episodes return nothing
    queued(env) -> bool                              whether the env has episodes waiting

Lanes are the envs of one worker each: while one lane's worker steps, the next lane's actions are computed
(one lane when envs run in-process, or when a selector drives the pool itself). A collector that runs elsewhere
(Ray actors, a learned world model) implements the pool's ``reset`` / ``step_async`` / ``step_wait``.
"""

from __future__ import annotations

from rlvla.envs.pool import EnvWorkerError


class RolloutInterrupted(Exception):
    """``should_stop()`` became true during collection; the partial iteration was discarded."""


class Lanes:
    def __init__(self, pool, n_envs: int, overlap: bool = True) -> None:
        self.pool = pool
        owner = getattr(pool, "owner", None)
        n_lanes = getattr(pool, "workers", 0) if overlap and owner is not None and hasattr(pool, "step_async") else 0
        self.lanes = [[i for i in range(n_envs) if owner[i] == w] for w in range(n_lanes)] if n_lanes >= 2 else [list(range(n_envs))]

    def _async(self, actions: dict):
        return ("async", self.pool.step_async(actions)) if hasattr(self.pool, "step_async") else ("sync", actions)

    def _wait(self, token) -> dict:
        return self.pool.step_wait(token[1]) if token[0] == "async" else self.pool.step(token[1])

    def run(self, start, act, record, queued, should_stop=None, on_worker_error=None) -> None:
        """Run until no env has an episode running or queued. ``on_worker_error(err) -> results that arrived``
        (after requeueing the lost envs' episodes); without it a dead worker raises."""
        everyone = [i for lane in self.lanes for i in lane]
        obs = start(everyone)
        pending: dict[int, tuple] = {}
        while obs or pending or any(queued(i) for i in everyone):
            if should_stop is not None and should_stop():
                raise RolloutInterrupted
            for li, lane in enumerate(self.lanes):
                if li in pending:
                    ids, payload, acted, token = pending.pop(li)
                    try:
                        stepped = self._wait(token)
                    except EnvWorkerError as e:
                        if on_worker_error is None:
                            raise
                        stepped = on_worker_error(e)
                    obs.update(record(ids, payload, acted, stepped))
                obs.update(start([i for i in lane if i not in obs and queued(i)]))  # ended or lost envs with work
                ids = [i for i in lane if i in obs]
                if ids:
                    acted = {i: obs.pop(i) for i in ids}
                    actions, payload = act(ids, [acted[i] for i in ids])
                    pending[li] = (ids, payload, acted, self._async(actions))
