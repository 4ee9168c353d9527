"""The rollout engine: vectorised envs + batched policy inference -> trajectories in the one batch schema.

One iteration collects ``groups_per_task`` groups per task; a group is ``group_size`` episodes started from the
same layout seed (GRPO/RLOO need several rollouts of one initial state). Seeds are drawn from ``RL_SEEDS`` (the
training range below the validation slice) as a function of ``(seed, iteration, round)`` only, so neither
evaluation nor validation seeds are ever trained on and a resumed run draws the same layouts. Every decision is one batched ``policy.act`` for all running envs; each env runs the chunk.

Dynamic sampling (DAPO, Yu et al. 2025): a group whose episodes all scored alike (all succeeded without
``speed_score``, or all failed without ``progress_score``) carries no group-relative signal. It is dropped and a
new round of groups is drawn for the tasks that lost groups, at most ``max_refill_rounds`` times, so the engine
never loops forever; dropped groups are counted in the stats.

Layout replay (``replay`` > 0; prioritised level replay, Jiang et al. 2021, at the granularity GRPO needs): the
layouts whose latest group had mixed outcomes are kept per task (newest first, at most ``4 x groups_per_task``), and
that fraction of every round's groups replays them instead of drawing fresh seeds. A layout leaves the list when
it is drawn and comes back only if its new group is mixed again, so a solved layout is not replayed. Most fresh
layouts give a policy near its SFT start the same outcome in every episode (measured: 5-8 of 9-11 groups dropped
per iteration), so replay spends fewer env steps on groups that carry no signal. The list is part of the
checkpoint (:meth:`RolloutEngine.state`), so a resumed run replays the same layouts.

Env workers that die mid-rollout are restarted (:meth:`EnvPool.restart_dead_workers`); their unfinished
episodes are discarded and run again from the same seed, so the iteration completes with whole groups.

The loop it serves::

    engine = RolloutEngine(policy, tasks, cfg)
    ro = engine.collect(iteration)        # Rollout: ro.batch (Batch, N decisions), ro.episodes, ro.stats
    engine.close()
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from rlvla.algos.online.pg import resolve_level
from rlvla.collectors.scheduler import Lanes
from rlvla.data.schema import IMAGE_PREFIX, Batch
from rlvla.envs import resolve_tasks
from rlvla.envs.pool import EnvPool, EnvWorkerError, stack_obs
from rlvla.envs.splits import RL_SEEDS
from rlvla.rewards import decision_reward


@dataclass
class Episode:
    task: str
    seed: int
    group: int
    steps: list = field(default_factory=list)  # one dict per decision
    success: bool = False
    ret: float = 0.0  # environment (dense) return
    length: int = 0  # low-level env steps
    terminated: bool = False
    truncated: bool = False
    final_obs: dict | None = None
    final_value: float = 0.0  # V(final observation) when truncated (time-limit bootstrap), else 0
    progress: float = 0.0  # best dense progress seen (the env's info["progress"], in [0, 1])
    noise: torch.Tensor | None = None  # the last decision's exploration noise (correlated exploration)

    def score(self, progress_score: float, speed_score: float = 0.0, max_steps: int = 0) -> float:
        """The outcome score group advantages compare: a failure scores ``progress_score`` x its progress, a
        success 1 plus ``speed_score`` x the fraction of the time limit (``max_steps`` env steps) it left unused."""
        if not self.success:
            return progress_score * self.progress
        if not speed_score:
            return 1.0
        if max_steps < 1:
            raise ValueError(f"a speed score needs the episode's time limit (max_steps >= 1), got {max_steps}")
        return 1.0 + speed_score * max(0.0, 1.0 - self.length / max_steps)


@dataclass
class Rollout:
    """``batch``: N decisions in the batch schema, episodes contiguous, plus ``old_log_prob`` (N, ...level),
    ``value`` (N,), ``next_value`` (N,) (V of the following observation; 0 after termination), ``score`` (N,)
    (the episode's outcome score, for group advantages), ``group_index`` (N,) and ``extras.<key>`` (what the head
    needs to re-score its actions). ``episodes``: per-episode dicts; ``stats``: floats for the log."""

    batch: Batch
    episodes: list[dict]
    stats: dict
    final: Batch | None = None
    """Each episode's observation after its last decision (images, state, task; one row per episode)."""

    def next_observations(self) -> Batch:
        """The observation each decision led to ``(N, ...)``: the next decision's, or the episode's final one."""
        b, n = self.batch, len(self)
        ep = b["episode_index"]
        last = torch.ones(n, dtype=torch.bool)
        last[:-1] = ep[1:] != ep[:-1]
        nxt = torch.clamp(torch.arange(n) + 1, max=n - 1)
        out = Batch()
        for k in [k for k in b if k.startswith(IMAGE_PREFIX)] + ["observation.state"]:
            v = b[k][nxt].clone()
            v[last] = self.final[k][ep[last]]  # episode ids are the episodes' positions (0..E-1, in order)
            out[k] = v
        task = [b["task"][i] for i in nxt.tolist()]
        for i in torch.nonzero(last).flatten().tolist():
            task[i] = self.final["task"][int(ep[i])]
        out["task"] = task
        return out

    def __len__(self) -> int:
        return int(self.batch["next.reward"].shape[0]) if "next.reward" in self.batch else 0

    def extras(self, idx=None) -> dict:
        out = {}
        for k, v in self.batch.items():
            if k.startswith("extras."):
                out[k[len("extras.") :]] = v if idx is None else v[idx]
        return out

    def select(self, idx: torch.Tensor) -> Batch:
        return Batch({k: ([v[i] for i in idx.tolist()] if k == "task" else v[idx]) for k, v in self.batch.items()})


@dataclass
class RolloutSettings:
    """What the engine reads from a config. An online algorithm's config has some of these fields (a group method
    has no success bonus, PPO no dynamic sampling); the ones it lacks take these defaults."""

    group_size: int = 1
    groups_per_task: int = 1
    envs_per_task: int = 2
    max_steps: int = 200
    terminate_on_success: bool = True
    max_worker_restarts: int = 10
    level: str = "auto"
    dynamic_sampling: bool = False
    max_refill_rounds: int = 0
    replay: float = 0.0
    progress_score: float = 0.0
    speed_score: float = 0.0
    explore_correlation: float = 0.0
    layout_edge: float = 0.0
    success_bonus: float = 1.0
    shaping: float = 0.0
    env_reward: float = 0.0
    gamma: float = 0.99

    @classmethod
    def of(cls, cfg) -> "RolloutSettings":
        return cfg if isinstance(cfg, cls) else cls(**{f.name: getattr(cfg, f.name, f.default) for f in fields(cls)})


class RolloutEngine:
    def __init__(self, policy, tasks, cfg, seed: int = 0, workers: int | None = None, make_pool=EnvPool) -> None:
        """``cfg``: :class:`RolloutSettings` or an online algorithm's config (its missing fields take the defaults).
        ``make_pool(specs, workers)``: anything with EnvPool's reset/step/restart_dead_workers/close (tests pass toy
        environments)."""
        self.policy = policy
        self.cfg = cfg = RolloutSettings.of(cfg)
        self.level = resolve_level(cfg.level, policy)
        self.seed = int(seed)
        self.tasks = tuple(tasks) if make_pool is not EnvPool else resolve_tasks(tasks)
        pc = policy.cfg
        self.cams = list(pc.cameras)
        self.env_tasks = [t for t in self.tasks for _ in range(cfg.envs_per_task)]
        extra = dict(getattr(pc, "env_kwargs", None) or {})
        if not cfg.terminate_on_success:
            extra["terminate_on_success"] = False
        if cfg.layout_edge:
            extra["layout_edge"] = cfg.layout_edge
        specs = [dict(name=t, split="id", image_size=pc.image_size, cameras=tuple(pc.cameras), chunk=pc.chunk,
                      max_steps=cfg.max_steps, **extra) for t in self.env_tasks]  # fmt: skip
        if cfg.explore_correlation and getattr(pc.head, "stochastic", "") != "output":
            raise ValueError("algo.explore_correlation needs a flow or diffusion head exploring with explore_steps=output, "
                             f"not {pc.head.name} with stochastic={getattr(pc.head, 'stochastic', None)!r}")  # fmt: skip
        self.pool = make_pool(specs, workers=workers)
        self.worker_restarts = 0
        self.env_steps = 0
        self.replay: dict[str, list[int]] = {t: [] for t in self.tasks}  # mixed-outcome layouts, newest last

    def _score(self, e: Episode) -> float:
        return e.score(self.cfg.progress_score, self.cfg.speed_score, self.cfg.max_steps)

    def state(self) -> dict:
        """What a resumed run needs to draw the same layouts: the replay list."""
        return {"replay": {t: list(v) for t, v in self.replay.items()}}

    def load_state(self, state: dict | None) -> None:
        for t, seeds in ((state or {}).get("replay") or {}).items():
            if t in self.replay:
                self.replay[t] = [int(s) for s in seeds]

    def close(self) -> None:
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ seeds
    def group_seeds(self, iteration: int, round_: int, n: int) -> list[int]:
        rng = np.random.default_rng([self.seed, iteration, round_, 7919])
        return [int(s) for s in rng.integers(RL_SEEDS.start, RL_SEEDS.stop, size=n)]

    # ------------------------------------------------------------------ collection
    def collect(self, iteration: int, should_stop=None, need_values: bool = False) -> Rollout:
        cfg = self.cfg
        t0 = time.perf_counter()
        steps0 = self.env_steps
        restarts0 = self.worker_restarts
        want = {t: cfg.groups_per_task for t in self.tasks}
        kept: list[list[Episode]] = []
        dropped = drawn = replayed = 0
        rounds = 0
        all_eps: list[Episode] = []
        while True:
            jobs = []
            seeds = self.group_seeds(iteration, rounds, sum(want.values()))
            for t in self.tasks:
                # half up (not Python's half-to-even round): replay=0.5 of one wanted group replays it
                n_replay = min(int(cfg.replay * want.get(t, 0) + 0.5), len(self.replay[t]))
                for k in range(want.get(t, 0)):
                    jobs.append((t, self.replay[t].pop() if k < n_replay else seeds[len(jobs)]))
                replayed += n_replay
            groups = self._run_groups(jobs, base_gid=drawn, should_stop=should_stop)
            drawn += len(groups)
            all_eps += [e for g in groups for e in g]
            for g in groups:
                outcomes = {e.success for e in g}
                if len(outcomes) > 1 and cfg.replay > 0:
                    rep = self.replay[g[0].task]
                    rep.append(g[0].seed)
                    del rep[: max(0, len(rep) - 4 * cfg.groups_per_task)]
                if cfg.dynamic_sampling and len(g) > 1 and len({self._score(e) for e in g}) == 1:
                    dropped += 1
                else:
                    kept.append(g)
            rounds += 1
            have = {t: sum(1 for g in kept if g[0].task == t) for t in self.tasks}
            want = {t: cfg.groups_per_task - have[t] for t in self.tasks if have[t] < cfg.groups_per_task}
            if not cfg.dynamic_sampling or not want or rounds > cfg.max_refill_rounds:
                break
        if need_values:
            self._final_values([e for g in kept for e in g])
        wall = time.perf_counter() - t0
        succ_by_task = {t: [e.success for e in all_eps if e.task == t] for t in self.tasks}
        stats = {
            "rollout/success": float(np.mean([e.success for e in all_eps])),
            "rollout/return": float(np.mean([e.ret for e in all_eps])),
            "rollout/length": float(np.mean([e.length for e in all_eps])),
            "rollout/episodes": len(all_eps),
            "rollout/groups_drawn": drawn,
            "rollout/groups_dropped": dropped,
            "rollout/groups_kept": len(kept),
            "rollout/groups_replayed": replayed,
            "rollout/refill_rounds": rounds - 1,
            "rollout/worker_restarts": self.worker_restarts - restarts0,
            "rollout/env_steps": self.env_steps - steps0,
            "rollout/env_steps_per_s": (self.env_steps - steps0) / max(wall, 1e-9),
            "rollout/wall_s": wall,
            **{f"rollout/success/{t}": float(np.mean(v)) for t, v in succ_by_task.items() if v},
        }
        return self._to_rollout(kept, stats)

    def _run_groups(self, jobs: list[tuple[str, int]], base_gid: int, should_stop=None) -> list[list[Episode]]:
        """Run ``group_size`` episodes of each (task, seed) job; -> one list of episodes per job, in order."""
        policy = self.policy
        queues = self._queue(jobs, base_gid)
        done: list[Episode] = []
        cur: dict[int, Episode] = {}
        policy.eval()

        def act(ids, obs_list):
            carry = self._carry([cur[i] for i in ids])
            a = policy.act(stack_obs(obs_list), deterministic=False, level=self.level, with_log_prob=True, carry=carry)
            if carry is not None:
                for j, i in enumerate(ids):
                    cur[i].noise = a.extras["noise"][j]
            acts = a.actions.cpu().numpy()
            if policy.cfg.chunk == 1:
                acts = acts[:, 0]
            return {i: acts[j] for j, i in enumerate(ids)}, a

        def lost(err: EnvWorkerError) -> dict:
            for i in self._restart(err):  # their episodes are gone: run them again from the same seed
                if i in cur:
                    ep = cur.pop(i)
                    queues[i].insert(0, (ep.task, ep.seed, ep.group))
            return err.partial

        Lanes(self.pool, len(queues)).run(
            start=lambda ids: self._start(ids, queues, cur), act=act,
            record=lambda ids, a, acted, stepped: self._consume(ids, a, acted, stepped, cur, done),
            queued=lambda i: bool(queues[i]), should_stop=should_stop, on_worker_error=lost,
        )  # fmt: skip
        groups: dict[int, list[Episode]] = {}
        for ep in done:
            groups.setdefault(ep.group, []).append(ep)
        return [groups[base_gid + gi] for gi in range(len(jobs))]

    def _carry(self, eps: list[Episode]) -> dict | None:
        """Correlated exploration: each episode's noise carried into its next decision (its first decision draws
        the stationary std), or None when the noise is independent."""
        rho = self.cfg.explore_correlation
        if not rho:
            return None
        pc = self.policy.cfg
        zero = torch.zeros(pc.chunk, pc.action_dim)
        drift = torch.stack([zero if e.noise is None else rho * e.noise for e in eps])
        scale = torch.tensor([1.0 if e.noise is None else math.sqrt(1 - rho * rho) for e in eps])
        return {"drift": drift, "scale": scale}

    def _queue(self, jobs: list[tuple[str, int]], base_gid: int) -> dict[int, list[tuple[str, int, int]]]:
        """The episodes of each job, spread round-robin over the envs of its task: env -> [(task, seed, group)]."""
        by_task: dict[str, list[int]] = {}
        for i, t in enumerate(self.env_tasks):
            by_task.setdefault(t, []).append(i)
        queues: dict[int, list[tuple[str, int, int]]] = {i: [] for i in range(len(self.env_tasks))}
        n = 0
        for gi, (t, seed) in enumerate(jobs):
            for _ in range(self.cfg.group_size):
                envs = by_task[t]
                queues[envs[n % len(envs)]].append((t, seed, base_gid + gi))
                n += 1
        return queues

    def _start(self, ids, queues, cur: dict) -> dict:
        """Begin the next queued episode on each of ``ids`` (one reset call; lost workers' envs are requeued and
        tried again); -> {env: first observation}."""
        ids = sorted({i for i in ids if queues[i]})
        if not ids:
            return {}
        jobs_now = {i: queues[i].pop(0) for i in ids}
        obs = {}
        try:
            res = self.pool.reset({i: j[1] for i, j in jobs_now.items()})
        except EnvWorkerError as e:
            res = e.partial
            lost = set(self._restart(e))
            for i, j in jobs_now.items():
                if i in lost or i not in res:
                    queues[i].insert(0, j)
            obs.update(self._start([i for i in jobs_now if i not in res], queues, cur))
        for i, (t, seed, gid) in jobs_now.items():
            if i in res:
                cur[i] = Episode(t, seed, gid)
                obs[i] = res[i][0]
                cur[i].steps.append({"phi": 0.0})
        return obs

    def _consume(self, ids, act, acted: dict, stepped, cur, done) -> dict:
        """Record one decision's results for envs ``ids`` (an ended episode moves from ``cur`` to ``done``);
        -> the next observations of the episodes that go on."""
        cfg = self.cfg
        # one unbind per tensor instead of one indexing call per env and field (the per-step cost of small policies)
        actions, log_probs, values = act.actions.unbind(0), act.log_prob.unbind(0), act.value.tolist()
        extras = [dict(zip(act.extras, vs)) for vs in zip(*(v.unbind(0) for v in act.extras.values()))] if act.extras else None
        nxt = {}
        for j, i in enumerate(ids):
            if i not in stepped or i not in cur:
                continue
            ob, r, term, trunc, info = stepped[i]
            ep = cur[i]
            prev = ep.steps[-1]
            phi = float(info["progress"])
            reward = decision_reward(first_success=bool(info["success"]) and not ep.success, phi=phi, phi_prev=prev["phi"],
                                     env_reward=r, success_bonus=cfg.success_bonus, shaping=cfg.shaping,
                                     env_weight=cfg.env_reward, gamma=cfg.gamma)  # fmt: skip
            prev.update(
                obs=acted[i], action=actions[j], log_prob=log_probs[j], value=values[j],
                extras=extras[j] if extras else {}, reward=float(reward), terminated=bool(term),
                truncated=bool(trunc) and not term, success=bool(info["success"]) or ep.success,
            )  # fmt: skip
            ep.success = ep.success or bool(info["success"])
            ep.progress = min(1.0, max(ep.progress, phi))
            ep.ret += float(r)
            ep.length += int(info["substeps"])
            self.env_steps += int(info["substeps"])
            if term or trunc:
                ep.terminated, ep.truncated = bool(term), bool(trunc) and not term
                ep.final_obs = ob
                done.append(ep)
                del cur[i]
            else:
                ep.steps.append({"phi": phi})
                nxt[i] = ob
        return nxt

    def _restart(self, err: EnvWorkerError) -> list[int]:
        self.worker_restarts += 1
        if self.worker_restarts > self.cfg.max_worker_restarts:
            raise EnvWorkerError(
                f"{err} (after {self.worker_restarts - 1} worker restarts in this run; raise "
                "algo.max_worker_restarts or look for the cause in the worker's message)",
                err.partial, err.lost,
            )  # fmt: skip
        import sys

        print(f"rlvla: {str(err).splitlines()[0]}; restarting it and re-running its episodes", file=sys.stderr)
        owner = getattr(self.pool, "owner", None)
        failed = {owner[i] for i in err.lost} if owner is not None else None
        return self.pool.restart_dead_workers(failed) or list(err.lost)

    @torch.no_grad()
    def _final_values(self, eps: list[Episode]) -> None:
        """V(final observation) of truncated episodes (time-limit bootstrap); terminated ones get 0."""
        trunc = [e for e in eps if e.truncated]
        for e in eps:
            e.final_value = 0.0
        for k in range(0, len(trunc), 64):
            part = trunc[k : k + 64]
            v = self.policy.value(stack_obs([e.final_obs for e in part]))
            for e, val in zip(part, v.tolist()):
                e.final_value = float(val)

    # ------------------------------------------------------------------ to the batch schema
    def _to_rollout(self, groups: list[list[Episode]], stats: dict) -> Rollout:
        steps, episodes = [], []
        ep_idx = 0
        for g in groups:
            for e in g:
                n = len(e.steps)
                for k, s in enumerate(e.steps):
                    nv = e.steps[k + 1]["value"] if k + 1 < n else e.final_value
                    steps.append((s, ep_idx, k, e, nv))
                episodes.append({"task": e.task, "seed": e.seed, "group": e.group, "success": e.success,
                                 "return": e.ret, "length": e.length, "decisions": n, "progress": e.progress})  # fmt: skip
                ep_idx += 1
        if not steps:
            return Rollout(Batch(), episodes, stats)
        b = Batch()
        first = steps[0][0]["obs"]
        for ci, cam in enumerate(self.cams):
            key = f"image_{cam}" if f"image_{cam}" in first else "image"
            b[IMAGE_PREFIX + cam] = torch.from_numpy(np.stack([s["obs"][key] for s, *_ in steps]))
        b["observation.state"] = torch.from_numpy(np.stack([s["obs"]["proprio"] for s, *_ in steps]).astype(np.float32))
        b["task"] = [str(s["obs"]["instruction"]) for s, *_ in steps]
        b["action"] = torch.stack([s["action"] for s, *_ in steps]).float()
        b["next.reward"] = torch.tensor([s["reward"] for s, *_ in steps], dtype=torch.float32)
        b["next.terminated"] = torch.tensor([s["terminated"] for s, *_ in steps])
        b["next.truncated"] = torch.tensor([s["truncated"] for s, *_ in steps])
        b["next.done"] = b["next.terminated"] | b["next.truncated"]
        b["next.success"] = torch.tensor([s["success"] for s, *_ in steps])
        b["episode_index"] = torch.tensor([i for _, i, *_ in steps], dtype=torch.int64)
        b["frame_index"] = torch.tensor([k for _, _, k, *_ in steps], dtype=torch.int64)
        b["group_index"] = torch.tensor([e.group for *_, e, _ in steps], dtype=torch.int64)
        b["task_id"] = torch.tensor([self.tasks.index(e.task) for *_, e, _ in steps], dtype=torch.int64)
        b["score"] = torch.tensor([self._score(e) for *_, e, _ in steps], dtype=torch.float32)
        b["old_log_prob"] = torch.stack([s["log_prob"] for s, *_ in steps]).float()
        b["value"] = torch.tensor([s["value"] for s, *_ in steps], dtype=torch.float32)
        b["next_value"] = torch.tensor([nv for *_, nv in steps], dtype=torch.float32)
        for k in sorted(steps[0][0]["extras"]):
            b[f"extras.{k}"] = torch.stack([s["extras"][k] for s, *_ in steps])
        eps = [e for g in groups for e in g]
        final = Batch()
        for cam in self.cams:
            key = f"image_{cam}" if f"image_{cam}" in eps[0].final_obs else "image"
            final[IMAGE_PREFIX + cam] = torch.from_numpy(np.stack([e.final_obs[key] for e in eps]))
        final["observation.state"] = torch.from_numpy(np.stack([e.final_obs["proprio"] for e in eps]).astype(np.float32))
        final["task"] = [str(e.final_obs["instruction"]) for e in eps]
        return Rollout(b.validate(), episodes, stats, final)

