"""Collect episodes into a LeRobot v3.0 dataset: expert demonstrations, noisy or failing experts, and rollouts of
a policy checkpoint (mixed-quality data for offline RL).

Recipe: a pool of ``spawn`` workers runs the episodes (scripted expert or policy, plus rendering) and the parent
writes each finished episode atomically, in a fixed order, so the dataset does not depend on the number of
workers. Every step stores its reward, success flag and Monte-Carlo return (``next.return``, discounted by
``RETURN_GAMMA``). Each episode records its ``source`` (the expert's noise and failure settings, or the policy);
``--episodes N`` means N episodes per task *of this source*, so one directory mixes sources by running collect
once per source. Layout seeds are training seeds that no earlier episode of the task used. Running the same
command again continues where it stopped.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rlvla.data.lerobot import LeRobotWriter
from rlvla.envs import EVAL_SEEDS, TRAIN_SEEDS, resolve_tasks
from rlvla.envs.render import check_cameras, parse_cameras
from rlvla.envs.splits import VALIDATION_SEEDS
from rlvla.envs.suites import ExpertConfig
from rlvla.rewards import episode_returns

RETURN_GAMMA = 0.99
PROPRIO_NAMES = ["hand_x", "hand_y", "hand_z", "gripper"]
ACTION_NAMES = ["dx", "dy", "dz", "grip"]


@dataclass
class CollectConfig:
    tasks: tuple[str, ...]
    episodes: int  # per task
    out: str
    image_size: int = 64
    cameras: tuple[str, ...] = ("corner",)
    max_steps: int = 200
    noise_std: float = 0.0
    failure_prob: float = 0.0
    seed_offset: int = 0
    workers: int = 0  # 0: one per core
    policy: str = ""  # a policy checkpoint: its rollouts instead of the expert's
    deterministic: bool = False  # policy rollouts: the head's deterministic sample instead of a random one
    camera_every: int = 1  # a new image every k steps, the last repeated between (envs' camera_every)
    run_to_limit: bool = False  # episodes run to max_steps after a success (MetaWorld's convention) instead of ending
    seeds: str = "train"  # "eval": evaluation seeds, for held-out test sets that nothing may train on

    @property
    def source(self) -> str:
        if self.policy:
            return f"policy:{self.policy}" + (":deterministic" if self.deterministic else "")
        camera = f":camera_every={self.camera_every}" if self.camera_every != 1 else ""
        limit = ":run_to_limit" if self.run_to_limit else ""
        return f"expert:noise={self.noise_std:g}:failure={self.failure_prob:g}{camera}{limit}"

    def __post_init__(self) -> None:
        self.tasks = resolve_tasks(self.tasks)
        self.cameras = check_cameras(self.cameras)
        if not self.cameras:
            raise ValueError("collect needs at least one camera")
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")
        if self.camera_every < 1:
            raise ValueError(f"--camera-every must be >= 1, got {self.camera_every}")
        if self.seeds not in ("train", "eval"):
            raise ValueError(f"--seeds must be train or eval, got {self.seeds!r}")
        if self.seeds == "eval":
            if self.seed_offset < 0 or EVAL_SEEDS.start + self.seed_offset + 100 * self.episodes >= EVAL_SEEDS.stop:
                raise ValueError(f"seed offset {self.seed_offset} leaves the evaluation seed range [{EVAL_SEEDS.start}, {EVAL_SEEDS.stop})")
        elif self.seed_offset < 0 or TRAIN_SEEDS.start + self.seed_offset + 100 * self.episodes >= VALIDATION_SEEDS.start:
            raise ValueError(
                f"seed offset {self.seed_offset} leaves the training seed range; demonstrations are only collected "
                f"on training seeds [{TRAIN_SEEDS.start}, {VALIDATION_SEEDS.start}) (the seeds above are for validation)"
            )
        ExpertConfig(noise_std=self.noise_std, failure_prob=self.failure_prob)  # validates
        if self.policy:
            from rlvla.checkpoints import resolve_checkpoint
            from rlvla.policies import VLAPolicy

            self.policy = str(resolve_checkpoint(self.policy))
            pc = VLAPolicy.read_config(self.policy)
            if pc.image_size != self.image_size or list(pc.cameras) != list(self.cameras)[: len(pc.cameras)]:
                raise ValueError(f"policy {self.policy} sees {pc.image_size}px images from {pc.cameras}; collect with "
                                 f"--image-size {pc.image_size} --cameras {','.join(pc.cameras)}")  # fmt: skip


def features(cameras, image_size: int) -> dict:
    """The dataset's features (LeRobot descriptions) for episodes recorded with ``cameras``."""
    f = {}
    for cam in cameras:
        f[f"observation.images.{cam}"] = {
            "dtype": "image", "shape": [image_size, image_size, 3], "names": ["height", "width", "channels"],
        }  # fmt: skip
    f["observation.state"] = {"dtype": "float32", "shape": [4], "names": PROPRIO_NAMES}
    f["action"] = {"dtype": "float32", "shape": [4], "names": ACTION_NAMES}
    for k in ("next.reward", "next.return"):
        f[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("next.done", "next.terminated", "next.truncated", "next.success"):
        f[k] = {"dtype": "bool", "shape": [1], "names": None}
    return f


# ------------------------------------------------------------------------------------------- worker side
_ENVS: dict = {}
_POLICIES: dict = {}


class _PolicyActor:
    """A policy checkpoint driving an env one low-level step at a time: a new chunk every K steps (open loop)."""

    def __init__(self, path: str, deterministic: bool, seed: int) -> None:
        import torch

        from rlvla.policies import VLAPolicy

        torch.set_num_threads(1)
        if path not in _POLICIES:
            _POLICIES[path] = VLAPolicy.from_pretrained(path).eval()
        self.policy, self.det, self.queue = _POLICIES[path], deterministic, []
        torch.manual_seed(seed)

    def act(self, obs) -> np.ndarray:
        if not self.queue:
            self.queue = list(self.policy.act(obs, deterministic=self.det, with_log_prob=False).actions[0].numpy())
        return np.asarray(self.queue.pop(0), dtype=np.float32)


def _run_episode(job: dict) -> dict:
    """Run one expert episode (in a worker); return its frames and metadata."""
    from rlvla.envs import make_env, split_task

    every = job.get("camera_every", 1)
    to_limit = bool(job.get("run_to_limit", False))
    key = (job["task"], job["image_size"], tuple(job["cameras"]), job["max_steps"], every, to_limit)
    if key not in _ENVS:
        extra = {"camera_every": every} if every != 1 else {}
        if to_limit:
            extra["terminate_on_success"] = False
        _ENVS[key] = make_env(job["task"], image_size=job["image_size"], cameras=tuple(job["cameras"]), max_steps=job["max_steps"],
                              **extra)  # fmt: skip
    env = _ENVS[key]
    if job["policy"]:
        expert = _PolicyActor(job["policy"], job["deterministic"], job["seed"])
    else:
        suite, task = split_task(job["task"])
        if suite.expert is None:
            raise ValueError(f"suite {suite.name!r} has no scripted expert; collect with --policy CHECKPOINT")
        expert = suite.expert(task, ExpertConfig(noise_std=job["noise_std"], failure_prob=job["failure_prob"]), seed=job["seed"])
        expert.begin_episode()
    obs, info = env.reset(seed=job["seed"])
    ever = False
    goal = [float(x) for x in np.asarray(info.get("goal_pos", np.full(3, np.nan)), np.float64).reshape(-1)[:3]]
    cams = env.cameras
    buf: dict[str, list] = {k: [] for k in features(cams, job["image_size"])}
    done = False
    while not done:
        action = expert.act(obs) if job["policy"] else expert.act(info)
        for i, cam in enumerate(cams):
            buf[f"observation.images.{cam}"].append(obs["image"] if i == 0 else obs[f"image_{cam}"])
        buf["observation.state"].append(obs["proprio"])
        buf["action"].append(action)
        obs, reward, term, trunc, info = env.step(action)
        done = term or trunc
        buf["next.reward"].append(reward)
        buf["next.done"].append(done)
        buf["next.terminated"].append(term)
        buf["next.truncated"].append(trunc)
        buf["next.success"].append(info["success"])
        ever = ever or bool(info["success"])
    buf["next.return"] = episode_returns(np.asarray(buf["next.reward"], dtype=np.float64), RETURN_GAMMA)
    frames = {k: np.asarray(v) for k, v in buf.items()}
    meta = {
        "env_task": job["task"], "split": "id", "layout_seed": job["seed"], "success": ever,
        "seeds": job.get("seeds", "train"),
        "expert_noise_std": float(job["noise_std"]), "failure_injected": bool(getattr(expert, "fails", False)),
        "source": job["source"], "goal_pos": goal,  # the simulator's goal: analysis and auxiliary targets only
    }  # fmt: skip
    return {"frames": frames, "task": env.instruction, "meta": meta}


# ------------------------------------------------------------------------------------------- parent side
def collect(cfg: CollectConfig, progress: bool = True) -> dict:
    """Collect ``cfg.episodes`` episodes per task into ``cfg.out``; returns a summary."""
    feats = features(cfg.cameras, cfg.image_size)
    if (Path(cfg.out) / "meta" / "info.json").exists():
        from rlvla.data.lerobot import LeRobotDataset

        if "next.return" not in LeRobotDataset(cfg.out).features:  # collected before returns were stored
            feats.pop("next.return")
    writer = LeRobotWriter(cfg.out, features=feats, fps=80)
    done_per_task: dict[str, int] = {t: 0 for t in cfg.tasks}
    first = (EVAL_SEEDS if cfg.seeds == "eval" else TRAIN_SEEDS).start + cfg.seed_offset
    next_seed: dict[str, int] = {t: first for t in cfg.tasks}
    for e in writer.episodes:
        t = e.get("env_task")
        if t in done_per_task:
            # older datasets have no source column: their episodes are the plain expert's
            if (e.get("seeds") or "train") != cfg.seeds:
                raise ValueError(f"{cfg.out} holds episodes on {e.get('seeds') or 'train'} seeds; a dataset keeps training and "
                                 f"evaluation seeds apart: collect --seeds {cfg.seeds} into another directory")  # fmt: skip
            if (e.get("source") or "expert:noise=0:failure=0") == cfg.source:
                done_per_task[t] += 1
            next_seed[t] = max(next_seed[t], int(e["layout_seed"]) + 1)
    resumed = sum(done_per_task.values())

    def jobs():
        # Round-robin over tasks so an interrupted run leaves a balanced dataset.
        pending = dict(done_per_task)
        while any(pending[t] < cfg.episodes for t in cfg.tasks):
            for t in cfg.tasks:
                if pending[t] < cfg.episodes:
                    seed = next_seed[t]
                    next_seed[t] += 1
                    pending[t] += 1
                    yield {
                        "task": t, "seed": seed, "image_size": cfg.image_size, "cameras": list(cfg.cameras),
                        "max_steps": cfg.max_steps, "noise_std": cfg.noise_std, "failure_prob": cfg.failure_prob,
                        "policy": cfg.policy, "deterministic": cfg.deterministic, "source": cfg.source,
                        "camera_every": cfg.camera_every, "run_to_limit": cfg.run_to_limit, "seeds": cfg.seeds,
                    }  # fmt: skip

    total = len(cfg.tasks) * cfg.episodes - resumed
    workers = cfg.workers or min(mp.cpu_count(), max(1, total))
    results = _map(jobs(), workers)
    stats = {"episodes": 0, "frames": 0, "successes": 0, "resumed_from": resumed}
    bar = _progress(total, progress)
    try:
        for r in results:
            writer.add_episode({k: v for k, v in r["frames"].items() if k in feats}, r["task"], r["meta"])
            stats["episodes"] += 1
            stats["frames"] += len(r["frames"]["action"])
            stats["successes"] += int(r["meta"]["success"])
            bar.advance()
    finally:
        bar.close()
        close = getattr(results, "close", None)
        if close:
            close()
    stats["total_episodes"] = writer.info["total_episodes"]
    stats["config"] = asdict(cfg)
    return stats


def _map(jobs, workers: int):
    if workers <= 1:
        return (_run_episode(j) for j in jobs)
    ctx = mp.get_context("spawn")  # never fork a process that may hold a GL context
    pool = ctx.Pool(workers)

    def gen():
        try:
            yield from pool.imap(_run_episode, jobs, chunksize=1)
        finally:
            pool.terminate()
            pool.join()

    return gen()


class _progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self._p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._p = Progress("collect", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False)
            self._p.start()
            self._task = self._p.add_task("collect", total=total)

    def advance(self) -> None:
        if self._p:
            self._p.advance(self._task)

    def close(self) -> None:
        if self._p:
            self._p.stop()


def collect_main(args) -> int:
    cfg = CollectConfig(
        tasks=args.tasks, episodes=args.episodes, out=args.out, image_size=args.image_size,
        cameras=parse_cameras(args.cameras), max_steps=args.max_steps, noise_std=args.noise,
        failure_prob=args.failure_prob, seed_offset=args.seed_offset, workers=args.workers,
        policy=args.policy, deterministic=args.deterministic, camera_every=args.camera_every,
        run_to_limit=args.run_to_limit, seeds=args.seeds,
    )  # fmt: skip
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    s = collect(cfg, progress=not args.quiet)
    print(
        f"collected {s['episodes']} episodes ({s['frames']} frames, {s['successes']} successful) into {cfg.out}; "
        f"dataset now has {s['total_episodes']} episodes"
    )
    return 0
