"""``rlvla train algo=sft ...``: supervised fine-tuning of a VLA policy on a LeRobot dataset.

Recipe: compose config -> load data -> build policy -> (resume) -> loop: batch, update, log, checkpoint.
Resuming reproduces an uninterrupted run exactly on CPU: batches and the torch RNG are functions of
``(seed, step)``, and the optimiser state is restored from the checkpoint.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch

from rlvla.algos.offline.sft import SFT, NonFiniteLossError
from rlvla.configs import compose, policy_config, section
from rlvla.data.chunks import ChunkDataset
from rlvla.data.lerobot import LeRobotDataset, atomic_write_bytes, atomic_write_json
from rlvla.policies import VLAPolicy
from rlvla.runners.checkpoint import Checkpoints
from rlvla.runners.runlog import RunLogger
from rlvla.runners.signals import StopOnSignal

# Fields that may change when a run is resumed (they do not change the computation).
RESUMABLE_CHANGES = ("train.time_limit_s", "train.log_every", "train.ckpt_every", "train.threads", "eval.", "resume", "run_dir",
                     "algo.iterations", "algo.ckpt_every", "algo.online_iterations")  # online algos: constant learning rate, more iterations are fine


class TrainingError(RuntimeError):
    """Training stopped on a non-finite loss; the message names the last good checkpoint."""


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _config_diffs(old: dict, new: dict, prefix: str = "") -> list[str]:
    from rlvla.policies.config import diff_configs

    return [d for d in diff_configs(old, new, prefix) if not d.startswith(RESUMABLE_CHANGES)]


class _Progress:
    def __init__(self, total: int, start: int, enabled: bool, label: str = "sft") -> None:
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.p = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                              TimeElapsedColumn(), TimeRemainingColumn(), transient=False)  # fmt: skip
            self.p.start()
            self.task = self.p.add_task("", total=total, completed=start)

    def update(self, desc: str) -> None:
        if self.p:
            self.p.update(self.task, advance=1, description=desc)

    def close(self) -> None:
        if self.p:
            self.p.stop()


def train(cfg, progress: bool = True, on_step=None) -> dict:
    """Run (or resume) SFT as configured. ``on_step(step, metrics)`` is called after each update."""
    from omegaconf import OmegaConf

    from rlvla.algos.offline.algos import ALGOS as OFFLINE

    offline = cfg.algo.name in OFFLINE
    if cfg.algo.name != "sft" and not offline:
        from rlvla.runners.rl import train_online

        return train_online(cfg, progress=progress, on_step=on_step)
    loop = section(cfg, "train")
    data_cfg = section(cfg, "data")
    pcfg = policy_config(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(loop.threads or os.cpu_count() or 1)
    ckpts = Checkpoints(run_dir)
    latest = ckpts.latest()
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    if latest is not None and not cfg.resume:
        raise ValueError(f"{run_dir} already has checkpoints; pass resume=true to continue it or choose another run_dir")
    if cfg.eval.episodes > 0:  # validate now, not after hours of training
        from rlvla.envs.splits import check_split

        for s in cfg.eval.splits:
            check_split(s)
    if latest is not None and (run_dir / "config.yaml").exists():
        old = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        diffs = _config_diffs(old, cfg_dict)
        if diffs:
            raise ValueError(f"cannot resume {run_dir} with a different config ({'; '.join(diffs[:4])}); use a new run_dir")

    dataset = LeRobotDataset(data_cfg.path)
    init = None
    if offline:
        from rlvla.algos.offline.algos import OfflineRL, configure_policy, deployment_condition
        from rlvla.data.offline import OfflineChunks

        acfg = section(cfg, "algo")
        if data_cfg.episodes_per_task:
            raise ValueError("data.episodes_per_task applies to sft only; offline algorithms use the whole dataset")
        if cfg.init:
            from rlvla.runners.evaluate import resolve_checkpoint

            init = resolve_checkpoint(cfg.init)
            pcfg = VLAPolicy.read_config(init)
        pcfg = configure_policy(pcfg, acfg)
        data = OfflineChunks(dataset, pcfg.chunk, pcfg.cameras, acfg.gamma, acfg.reward, acfg.cond_gamma,
                             acfg.files_in_memory, image_size=pcfg.image_size)  # fmt: skip
        fingerprint = {"episodes": data.episodes_total, "frames": len(data)}
        if pcfg.condition.kind != "none":
            pcfg.condition.value = deployment_condition(acfg, data)
    else:
        data = ChunkDataset(dataset, pcfg.chunk, pcfg.cameras, data_cfg.episodes_per_task, image_size=pcfg.image_size)
        fingerprint = {"episodes": len(data.episodes), "frames": len(data)}
    if not data.env_tasks:
        raise ValueError(f"dataset {data_cfg.path} records no env_task per episode; collect it with `rlvla collect`")
    pcfg.tasks = data.env_tasks
    torch.manual_seed(loop.seed)
    policy = VLAPolicy(pcfg).to(loop.device)
    if init is not None:
        from rlvla.policies.policy import init_from

        fresh = init_from(policy, init)
        print(f"initialised from {init}" + (f"; new: {', '.join(sorted({k.split('.')[0] for k in fresh}))}" if fresh else ""),
              file=sys.stderr)  # fmt: skip
    else:
        policy.set_stats(data.stats())
        policy.fit(data.action if offline else data.data["action"])
    if offline:
        reference = VLAPolicy.from_pretrained(init, map_location=loop.device).to(loop.device) if (acfg.name == "dpo" and init is not None) else None
        algo = OfflineRL(policy, acfg, loop, data, reference=reference)
    else:
        algo = SFT(policy, loop.steps, loop.lr, loop.weight_decay, loop.warmup_steps, loop.grad_clip)
    if offline and acfg.online_iterations > 0:
        if init is None:
            raise ValueError("offline-to-online (algo.online_iterations > 0) continues an offline run: pass init=<its run dir>")
        from rlvla.runners.o2o import train_o2o

        atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg).encode())
        summary = train_o2o(cfg, policy, algo, data, ckpts, run_dir, fingerprint, progress=progress)
        atomic_write_json(run_dir / "train_summary.json", summary)
        return summary
    start = 0
    if latest is not None:
        start, tensors, meta = ckpts.load(latest)
        if meta.get("data", fingerprint) != fingerprint:
            raise ValueError(f"cannot resume {run_dir}: it trained on {meta['data']} of {data_cfg.path}, which now gives "
                             f"{fingerprint}; the dataset changed, use a new run_dir")  # fmt: skip
        policy.load_weights(latest / "policy", map_location=loop.device)
        algo.load_state(tensors, meta)
        print(f"resuming {run_dir} from step {start} ({latest.name})", file=sys.stderr)
    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg).encode())
    logger = RunLogger(run_dir, start)
    bar = _Progress(loop.steps, start, progress, label=cfg.algo.name)

    def save(step: int) -> Path:
        tensors, meta = algo.state()
        return ckpts.save(step, policy, tensors, {**meta, "data": fingerprint})

    # Ctrl-C / SIGTERM only set a flag, checked between updates: an update is never cut in half, so the
    # checkpoint written on the way out matches its step number.
    stop = StopOnSignal().__enter__()
    status, completed, metrics = "done", start, {}
    t0 = time.perf_counter()
    last_saved = latest
    samples = 0
    try:
        for step in range(start, loop.steps):
            if stop.requested:
                raise KeyboardInterrupt
            torch.manual_seed(step_seed(loop.seed, step))
            batch = data.batch(data.indices(step, loop.batch_size, loop.seed))
            try:
                metrics = algo.update(batch, step)
            except NonFiniteLossError as e:
                kept = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
                raise TrainingError(
                    f"training stopped: {e}; {kept}. Check the dataset for bad values, or start a new run_dir with a "
                    "lower train.lr or train.grad_clip"
                ) from None
            samples += loop.batch_size
            done = completed = step + 1
            if done % loop.log_every == 0 or done == loop.steps or step == start:
                logger.log(done, {**metrics, "samples_per_s": samples / (time.perf_counter() - t0)})
            if on_step is not None:
                on_step(done, metrics)
            if stop.requested and done < loop.steps:
                raise KeyboardInterrupt
            bar.update(f"loss {metrics['loss']:.4f}")
            if done % loop.ckpt_every == 0 and done < loop.steps:
                last_saved = save(done)
            if loop.time_limit_s and time.perf_counter() - t0 >= loop.time_limit_s and done < loop.steps:
                status = "time_limit"
                break
    except KeyboardInterrupt:
        if stop.force:
            raise
        status = "interrupted"
    finally:
        bar.close()
        logger.close()
        stop.__exit__()
    wall = time.perf_counter() - t0
    step = completed
    ckpt = save(step) if (last_saved is None or last_saved.name != f"step_{step:08d}") else last_saved
    if status == "done":
        policy.save_pretrained(run_dir / "policy")
    summary = {
        "status": status, "step": step, "steps": loop.steps, "wall_s": wall, "samples_per_s": samples / max(wall, 1e-9),
        "final_loss": metrics.get("loss"), "peak_rss_mb": peak_rss_mb(), "checkpoint": str(ckpt),
        "policy": str(run_dir / "policy") if status == "done" else str(ckpt / "policy"), "tasks": pcfg.tasks,
        "frames": len(data), "episodes": fingerprint["episodes"], "algo": cfg.algo.name,
    }  # fmt: skip
    atomic_write_json(run_dir / "train_summary.json", summary)
    return summary


def train_main(args) -> int:
    if args.help_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(compose([])))
        return 0
    cfg = compose(args.overrides)
    try:
        summary = train(cfg, progress=not args.quiet)
    except TrainingError as e:
        print(f"rlvla train: {e}", file=sys.stderr)
        return 1
    print(
        f"{summary['status']}: step {summary['step']}/{summary['steps']} in {summary['wall_s']:.0f} s "
        f"({summary['samples_per_s']:.0f} {'env steps' if 'env_steps' in summary else 'samples'}/s, peak RSS {summary['peak_rss_mb']:.0f} MB); policy: {summary['policy']}",
        file=sys.stderr,
    )
    if cfg.eval.episodes > 0 and summary["status"] == "done":
        from rlvla.runners.evaluate import evaluate

        res = evaluate(VLAPolicy.from_pretrained(summary["policy"]), summary["tasks"], list(cfg.eval.splits),
                       episodes=cfg.eval.episodes, num_envs=cfg.eval.num_envs, video_dir=Path(cfg.run_dir) / "videos",
                       progress=True)  # fmt: skip
        atomic_write_json(Path(cfg.run_dir) / "eval.json", {"checkpoint": summary["policy"], **res})
    return 130 if summary["status"] == "interrupted" else 0
