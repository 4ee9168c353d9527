"""``rlvla train algo=grpo|ppo|rloo|reinforce_pp init=POLICY``: online RL from a pretrained (e.g. SFT) policy.

Recipe: load ``init`` -> the RL policy (its exploration settings) -> :class:`RolloutRecipe`: each iteration
collects rollouts on training seeds (group sampling, dynamic sampling, layout replay;
:class:`~rlvla.collectors.RolloutEngine`) and updates on them (clipped surrogate;
:class:`~rlvla.algos.online.PolicyGradient`). :class:`~rlvla.runners.loop.Loop` owns resume, signals (Ctrl-C /
SIGTERM stop between decisions of a rollout: the partial iteration is discarded and a checkpoint of the last
whole iteration is written), the NaN stop, the time limit, checkpoints and logs.
"""

from __future__ import annotations

import copy
import os
import sys
import time

import torch

from rlvla.algos.online import PolicyGradient
from rlvla.algos.online.explore import with_exploration
from rlvla.checkpoints import resolve_checkpoint
from rlvla.collectors import RolloutEngine, evaluate, torch_threads
from rlvla.configs import section
from rlvla.errors import NonFiniteLossError
from rlvla.policies import VLAPolicy
from rlvla.runners.loop import Loop, LoopSettings, Recipe, peak_rss_mb, prepare_run_dir, step_seed


class RolloutRecipe(Recipe):
    """Iteration ``i``: collect a rollout (sampling seeded by ``(seed, i)``), update on it, log what explains it."""

    def __init__(self, policy, algo: PolicyGradient, algo_cfg, tasks: list[str], seed: int, threads: int, init) -> None:
        self.policy, self.algo, self.cfg, self.tasks = policy, algo, algo_cfg, tasks
        self.seed, self.threads, self.init = seed, threads, init
        self.workers = None if algo_cfg.workers < 0 else algo_cfg.workers
        self.engine, self.resume_engine, self.wm = None, None, None
        self.env_steps = self.env_steps_start = 0
        self.real_steps = self.real_steps_start = 0
        from rlvla.collectors.relabel import RewardRelabeller

        self.relabel = RewardRelabeller(policy, tasks, algo_cfg, seed)

    def begin(self, start: int, logger) -> None:
        if self.cfg.world_model:  # imagined rollouts: one batched forward pass per decision, in this process
            from functools import partial

            from rlvla.worldmodels.env import ImaginedPool, load_world_model

            self.wm = load_world_model(self.cfg.world_model)
            pc = self.policy.cfg
            self.wm.check_compatible(self.tasks, pc.cameras, pc.image_size, pc.chunk, pc.action_dim)
            self.engine = RolloutEngine(self.policy, self.tasks, self.cfg, seed=self.seed, workers=0,
                                        make_pool=partial(ImaginedPool, world_model=self.wm))  # fmt: skip
        else:
            self.engine = RolloutEngine(self.policy, self.tasks, self.cfg, seed=self.seed, workers=self.workers)
        self.engine.load_state(self.resume_engine)
        self.one_thread = self.engine.pool.workers > 0  # idle OpenMP threads would starve the env workers
        if self.cfg.eval_every and start == 0:
            logger.log(0, {"env_steps": 0, **self.heldout(0)})

    def step(self, it: int, stop) -> dict:
        torch.manual_seed(step_seed(self.seed, it))
        t_it = time.perf_counter()
        with torch_threads(1 if self.one_thread else self.threads):
            try:
                ro = self.engine.collect(it, should_stop=lambda: stop.requested, need_values=self.algo.uses_value)
            except FloatingPointError as e:  # a world model predicted NaN/inf: stop, naming the iteration
                raise NonFiniteLossError(f"{str(e).splitlines()[0]} during the rollout of iteration {it}") from None
        t_up = time.perf_counter()
        extra = self.relabel(ro, it)  # learned reward and exploration bonus (nothing when neither is set)
        metrics = {**ro.stats, **extra, **self.algo.update(ro, it)}
        self.env_steps += int(ro.stats["rollout/env_steps"])
        real = getattr(self.engine.pool, "real_steps", None)  # imagined rollouts: only their starts were real
        self.real_steps = real + self.real_steps_start if real is not None else self.env_steps
        metrics["rollout/real_env_steps"] = self.real_steps
        if self.wm is not None and self.wm.cfg.data_frames:  # imagination's whole real cost: starts + the model's data
            metrics["rollout/real_env_steps_total"] = self.real_steps + self.wm.cfg.data_frames
        metrics.update({"time/update_s": time.perf_counter() - t_up, "time/iteration_s": time.perf_counter() - t_it,
                        "env_steps": self.env_steps, "peak_rss_mb": peak_rss_mb()})  # fmt: skip
        if self.cfg.eval_every and (it + 1) % self.cfg.eval_every == 0:
            metrics.update(self.heldout(it + 1))
        return metrics

    def heldout(self, it: int) -> dict:
        """The deterministic policy on held-out layouts (validation seeds): a point of the learning curve."""
        with torch_threads(1):
            r = evaluate(self.policy, self.tasks, ["id"], episodes=self.cfg.eval_episodes, workers=self.workers,
                         seeds="validation")["splits"]["id"]  # fmt: skip
        self.policy.eval()
        out = {"heldout/success": r["success_rate"], "heldout/ci_low": r["ci95"][0], "heldout/ci_high": r["ci95"][1],
               **{f"heldout/success/{t}": v["success_rate"] for t, v in r["tasks"].items()}}  # fmt: skip
        print(f"held-out success at iteration {it}: {r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", file=sys.stderr)
        return out

    def state(self) -> tuple[dict, dict]:
        tensors, meta = self.algo.state()
        rt, rm = self.relabel.state()
        engine = self.engine.state() if self.engine is not None else self.resume_engine
        return {**tensors, **rt}, {**meta, **rm, "env_steps": self.env_steps, "real_env_steps": self.real_steps, "init": str(self.init),
                                   "engine": engine}  # fmt: skip

    def load_state(self, tensors: dict, meta: dict) -> None:
        self.algo.load_state(tensors, meta)
        self.relabel.load_state(tensors, meta)
        self.env_steps = self.env_steps_start = int(meta.get("env_steps", 0))
        self.real_steps = self.real_steps_start = int(meta.get("real_env_steps", 0))
        self.resume_engine = meta.get("engine")

    def describe(self, m: dict) -> str:
        return (f"success {m['rollout/success']:.2f}  kept {m['rollout/groups_kept']}/{m['rollout/groups_drawn']} groups  "
                f"{m['rollout/env_steps_per_s']:.0f} steps/s")  # fmt: skip

    def summary(self, steps: int, wall_s: float) -> dict:
        return {"env_steps": self.env_steps, "real_env_steps": self.real_steps, "imagined": bool(self.cfg.world_model),
                "world_model_data_frames": self.wm.cfg.data_frames if self.wm is not None else 0,
                "init": str(self.init), "tasks": self.tasks,
                "samples_per_s": (self.env_steps - self.env_steps_start) / max(wall_s, 1e-9)}  # fmt: skip

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def train_online(cfg, progress: bool = True, on_step=None) -> dict:
    algo_cfg, loop = section(cfg, "algo"), section(cfg, "train")
    if not cfg.init:
        raise ValueError(f"algo={algo_cfg.name} needs init=<policy dir or SFT run> to start from (train one with algo=sft)")
    init = resolve_checkpoint(cfg.init)
    prepare_run_dir(cfg)  # refuse to overwrite or to resume another config before loading anything
    threads = loop.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    policy = VLAPolicy.from_pretrained(init, map_location=loop.device)
    # the RL policy: the initial one with this run's exploration settings (recorded in every checkpoint's config)
    policy = with_exploration(policy, algo_cfg.explore_noise, algo_cfg.explore_steps, algo_cfg.denoise_steps,
                              algo_cfg.explore_temperature)  # fmt: skip
    ref = None
    if algo_cfg.kl_coef > 0 or algo_cfg.freeze_backbone:  # frozen trunk: the drift from the start is logged cheaply
        ref = copy.deepcopy(policy).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    tasks = list(algo_cfg.tasks) or list(policy.cfg.tasks)
    if not tasks:
        raise ValueError(f"{init} records no training tasks; pass algo.tasks=[task,...]")
    algo = PolicyGradient(policy, algo_cfg, ref, loop.grad_clip, loop.weight_decay, seed=loop.seed)
    recipe = RolloutRecipe(policy, algo, algo_cfg, tasks, loop.seed, threads, init)
    settings = LoopSettings(total=algo_cfg.iterations, ckpt_every=algo_cfg.ckpt_every, time_limit_s=loop.time_limit_s,
                            label=algo_cfg.name, unit="iteration",
                            nan_hint="Start a new run_dir with a lower algo.lr, or check the rewards")  # fmt: skip
    return Loop(cfg, recipe, policy, settings, progress=progress, on_step=on_step).run()
