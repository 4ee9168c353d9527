"""``rlvla train algo=grpo|ppo|rloo|reinforce_pp init=POLICY``: online RL from a pretrained (e.g. SFT) policy.

Recipe: load ``init`` (or the run's latest checkpoint) -> env pool -> loop: collect rollouts (group sampling,
dynamic sampling), update (clipped surrogate), log, checkpoint. Ctrl-C / SIGTERM stop between decisions of a
rollout or between updates: the partial iteration is discarded and a checkpoint of the last whole iteration is
written; the same command resumes from it. A NaN/inf advantage or loss stops the run with a one-line message
naming the last good checkpoint.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import torch

from rlvla.algos.offline.sft import NonFiniteLossError
from rlvla.algos.online import PolicyGradient, RolloutEngine, RolloutInterrupted
from rlvla.algos.online.explore import with_exploration
from rlvla.configs import section
from rlvla.data.lerobot import atomic_write_bytes, atomic_write_json
from rlvla.policies import VLAPolicy
from rlvla.runners.checkpoint import Checkpoints
from rlvla.runners.runlog import RunLogger
from rlvla.runners.signals import StopOnSignal


def train_online(cfg, progress: bool = True, on_step=None) -> dict:
    from omegaconf import OmegaConf

    from rlvla.runners.evaluate import _threads, resolve_checkpoint
    from rlvla.runners.train import TrainingError, _config_diffs, _Progress, peak_rss_mb, step_seed

    algo_cfg = section(cfg, "algo")
    loop = section(cfg, "train")
    run_dir = Path(cfg.run_dir)
    if not cfg.init:
        raise ValueError(f"algo={algo_cfg.name} needs init=<policy dir or SFT run> to start from (train one with algo=sft)")
    init = resolve_checkpoint(cfg.init)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = loop.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    ckpts = Checkpoints(run_dir)
    latest = ckpts.latest()
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    if latest is not None and not cfg.resume:
        raise ValueError(f"{run_dir} already has checkpoints; pass resume=true to continue it or choose another run_dir")
    if latest is not None and (run_dir / "config.yaml").exists():
        old = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        diffs = _config_diffs(old, cfg_dict)
        if diffs:
            raise ValueError(f"cannot resume {run_dir} with a different config ({'; '.join(diffs[:4])}); use a new run_dir")
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
    start, env_steps = 0, 0
    resume_engine = None
    if latest is not None:
        start, tensors, meta = ckpts.load(latest)
        policy.load_weights(latest / "policy", map_location=loop.device)
        algo.load_state(tensors, meta)
        env_steps = int(meta.get("env_steps", 0))
        resume_engine = meta.get("engine")
        print(f"resuming {run_dir} from iteration {start} ({latest.name})", file=sys.stderr)
    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg).encode())
    workers = None if algo_cfg.workers < 0 else algo_cfg.workers
    logger = RunLogger(run_dir, start)
    bar = _Progress(algo_cfg.iterations, start, progress, label=algo_cfg.name)

    def save(it: int) -> Path:
        tensors, meta = algo.state()
        engine_state = engine.state() if engine is not None else resume_engine
        return ckpts.save(it, policy, tensors, {**meta, "env_steps": env_steps, "init": str(init), "engine": engine_state})

    def heldout(it: int) -> dict:
        """The deterministic policy on held-out layouts (validation seeds): a point of the learning curve."""
        from rlvla.runners.evaluate import evaluate

        with _threads(1):
            r = evaluate(policy, tasks, ["id"], episodes=algo_cfg.eval_episodes, workers=workers, seeds="validation")["splits"]["id"]
        policy.eval()
        out = {"heldout/success": r["success_rate"], "heldout/ci_low": r["ci95"][0], "heldout/ci_high": r["ci95"][1],
               **{f"heldout/success/{t}": v["success_rate"] for t, v in r["tasks"].items()}}  # fmt: skip
        print(f"held-out success at iteration {it}: {r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", file=sys.stderr)
        return out

    status, completed, metrics = "done", start, {}
    t0 = time.perf_counter()
    last_saved = latest
    stop = StopOnSignal().__enter__()
    engine = None
    try:
        engine = RolloutEngine(policy, tasks, algo_cfg, seed=loop.seed, workers=workers)
        engine.load_state(resume_engine)
        one_thread = engine.pool.workers > 0  # idle OpenMP threads would starve the env workers
        if algo_cfg.eval_every and start == 0:
            logger.log(0, {"env_steps": 0, **heldout(0)})
        for it in range(start, algo_cfg.iterations):
            if stop.requested:
                raise KeyboardInterrupt
            torch.manual_seed(step_seed(loop.seed, it))
            t_it = time.perf_counter()
            with _threads(1 if one_thread else threads):
                ro = engine.collect(it, should_stop=lambda: stop.requested, need_values=algo.uses_value)
            t_up = time.perf_counter()
            try:
                metrics = {**ro.stats, **algo.update(ro, it)}
            except NonFiniteLossError as e:
                kept = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
                raise TrainingError(f"training stopped: {e}; {kept}. Start a new run_dir with a lower algo.lr, or "
                                    "check the rewards") from None  # fmt: skip
            env_steps += int(ro.stats["rollout/env_steps"])
            done = completed = it + 1
            metrics.update({"time/update_s": time.perf_counter() - t_up, "time/iteration_s": time.perf_counter() - t_it,
                            "env_steps": env_steps, "peak_rss_mb": peak_rss_mb()})  # fmt: skip
            if algo_cfg.eval_every and done % algo_cfg.eval_every == 0:
                metrics.update(heldout(done))
            logger.log(done, metrics)
            if on_step is not None:
                on_step(done, metrics)
            bar.update(f"success {metrics['rollout/success']:.2f}  kept {metrics['rollout/groups_kept']}"
                       f"/{metrics['rollout/groups_drawn']} groups  {metrics['rollout/env_steps_per_s']:.0f} steps/s")  # fmt: skip
            if done % algo_cfg.ckpt_every == 0 and done < algo_cfg.iterations:
                last_saved = save(done)
            if loop.time_limit_s and time.perf_counter() - t0 >= loop.time_limit_s and done < algo_cfg.iterations:
                status = "time_limit"
                break
    except (KeyboardInterrupt, RolloutInterrupted):
        if stop.force:
            raise
        status = "interrupted"
    finally:
        if engine is not None:
            engine.close()
        bar.close()
        logger.close()
        stop.__exit__()
    wall = time.perf_counter() - t0
    ckpt = save(completed) if (last_saved is None or last_saved.name != f"step_{completed:08d}") else last_saved
    if status == "done":
        policy.save_pretrained(run_dir / "policy")
    summary = {
        "status": status, "step": completed, "steps": algo_cfg.iterations, "algo": algo_cfg.name, "wall_s": wall,
        "env_steps": env_steps, "final_loss": metrics.get("train/loss"), "peak_rss_mb": peak_rss_mb(),
        "checkpoint": str(ckpt), "policy": str(run_dir / "policy") if status == "done" else str(ckpt / "policy"),
        "init": str(init), "tasks": tasks, "samples_per_s": env_steps / max(wall, 1e-9),
    }  # fmt: skip
    atomic_write_json(run_dir / "train_summary.json", summary)
    return summary
