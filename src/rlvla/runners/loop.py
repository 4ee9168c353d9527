"""The one training loop: what every ``rlvla train`` run shares, whatever it learns from.

A recipe (:class:`Recipe`: ``DatasetRecipe`` in :mod:`.train` for SFT and offline RL, ``MixedRecipe`` in :mod:`.o2o`
for offline-to-online, ``RolloutRecipe`` in :mod:`.rl` for online RL) supplies the steps::

    recipe.begin(start, logger)          # once, inside the loop's signal handling (e.g. start env workers)
    metrics = recipe.step(i, stop)       # draw step i's batch (a function of (seed, i)) and update on it
    tensors, meta = recipe.state()       # what a checkpoint needs besides the policy weights
    recipe.load_state(tensors, meta)     # the inverse, on resume (raises on a checkpoint it cannot continue)
    recipe.close()

The loop owns the rest, in one place: refusing to overwrite or to resume with another config or dataset, resuming
from the latest checkpoint, Ctrl-C / SIGTERM between whole steps (a checkpoint of the last whole step is written),
a non-finite loss -> :class:`~rlvla.errors.TrainingError` naming the last good checkpoint, the time limit (over
the whole run: the elapsed time travels in the checkpoint, so a resumed invocation gets only what is left),
periodic and final checkpoints, ``metrics.jsonl`` + TensorBoard, the progress bar and ``train_summary.json``.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlvla.checkpoints import Checkpoints
from rlvla.collectors import RolloutInterrupted
from rlvla.errors import NonFiniteLossError, TrainingError
from rlvla.io import atomic_write_bytes, atomic_write_json
from rlvla.memory import TreePeak
from rlvla.runners.runlog import RunLogger
from rlvla.runners.signals import StopOnSignal

# Fields that may change when a run is resumed (they do not change the computation).
RESUMABLE_CHANGES = ("train.time_limit_s", "train.log_every", "train.ckpt_every", "train.threads", "eval.", "resume", "run_dir",
                     "overrides", "algo.iterations", "algo.ckpt_every", "algo.online_iterations")  # fmt: skip


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def config_diffs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What differs between a run's saved config and the resuming one, except fields that may change on resume and
    fields the config no longer has (an older version's keys that the code cannot read any more)."""
    from rlvla.policies.config import diff_configs

    def known(o, n):
        if not (isinstance(o, dict) and isinstance(n, dict)):
            return o
        return {k: known(v, n[k]) for k, v in o.items() if k in n}

    return [d for d in diff_configs(known(old, new), new, prefix) if not d.startswith(RESUMABLE_CHANGES)]


@dataclass
class LoopSettings:
    total: int
    """Steps (SFT, offline) or iterations (online) of the whole run."""
    ckpt_every: int
    log_every: int = 1
    time_limit_s: float = 0.0
    """Training wall time of the whole run, across resumed invocations; 0 = no limit."""
    label: str = "train"
    nan_hint: str = "Start a new run_dir with a lower learning rate"
    """What to do about a non-finite loss (the error's last words)."""
    unit: str = "step"
    """What one step is called in messages (``step``, ``iteration``)."""


class Recipe:
    """What a training recipe gives the loop (see the module docstring); the defaults do nothing."""

    def begin(self, start: int, logger: RunLogger) -> None:
        """Called once inside the loop's signal handling, before step ``start``."""

    def step(self, i: int, stop: StopOnSignal) -> dict:
        raise NotImplementedError

    def state(self) -> tuple[dict, dict]:
        raise NotImplementedError

    def load_state(self, tensors: dict, meta: dict) -> None:
        raise NotImplementedError

    def describe(self, metrics: dict) -> str:
        """The progress bar's text after a step."""
        return ""

    def summary(self, steps: int, wall_s: float) -> dict:
        """Recipe-specific fields of ``train_summary.json`` (``steps`` taken in ``wall_s`` by this invocation)."""
        return {}

    def close(self) -> None:
        """Called once when the loop ends, however it ends."""


class Progress:
    def __init__(self, total: int, start: int, enabled: bool, label: str) -> None:
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


def prepare_run_dir(cfg) -> tuple[Path, Checkpoints, Path | None]:
    """The run directory, its checkpoints and the latest one; refuses to overwrite or to resume another config."""
    from omegaconf import OmegaConf

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpts = Checkpoints(run_dir)
    latest = ckpts.latest()
    if latest is not None and not cfg.resume:
        raise ValueError(f"{run_dir} already has checkpoints; pass resume=true to continue it or choose another run_dir")
    if latest is not None and (run_dir / "config.yaml").exists():
        old = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        diffs = config_diffs(old, OmegaConf.to_container(cfg, resolve=True))
        if diffs:
            raise ValueError(f"cannot resume {run_dir} with a different config ({'; '.join(diffs[:4])}); use a new run_dir")
    return run_dir, ckpts, latest


class Loop:
    """Runs a recipe for ``settings.total`` steps in ``cfg.run_dir`` (see the module docstring)."""

    def __init__(self, cfg, recipe, policy, settings: LoopSettings, fingerprint: dict | None = None, progress: bool = True,
                 on_step=None) -> None:  # fmt: skip
        self.cfg, self.recipe, self.policy, self.s = cfg, recipe, policy, settings
        self.fingerprint, self.progress, self.on_step = fingerprint, progress, on_step
        self.run_dir, self.ckpts, self.latest = prepare_run_dir(cfg)
        self.start, self.elapsed_before = 0, 0.0

    def resume(self) -> int:
        """Load the latest checkpoint (if any) into the recipe and the policy; -> the step to continue from."""
        latest = self.latest
        if latest is None:
            return 0
        start, tensors, meta = self.ckpts.load(latest)
        if self.fingerprint is not None and meta.get("data", self.fingerprint) != self.fingerprint:
            raise ValueError(f"cannot resume {self.run_dir}: it trained on {meta['data']} of {self.cfg.data.path}, which now "
                             f"gives {self.fingerprint}; the dataset changed, use a new run_dir")  # fmt: skip
        self.policy.load_weights(latest / "policy", map_location=self.cfg.train.device)
        self.recipe.load_state(tensors, meta)
        self.start, self.elapsed_before = start, float(meta.get("elapsed_s", 0.0))
        print(f"resuming {self.run_dir} from {self.s.unit} {start} ({latest.name})", file=sys.stderr)
        return start

    def save(self, step: int, elapsed: float) -> Path:
        tensors, meta = self.recipe.state()
        data = {} if self.fingerprint is None else {"data": self.fingerprint}
        return self.ckpts.save(step, self.policy, tensors, {**meta, **data, "elapsed_s": elapsed})

    def run(self) -> dict:
        """Train to the end, the time limit or a signal; -> the run's summary (also ``train_summary.json``)."""
        from omegaconf import OmegaConf

        self.resume()
        atomic_write_bytes(self.run_dir / "config.yaml", OmegaConf.to_yaml(self.cfg).encode())
        t0 = time.perf_counter()
        with TreePeak() as peak:
            status, done, metrics, last_saved = self._steps(t0)
        wall = time.perf_counter() - t0
        elapsed = self.elapsed_before + wall
        ckpt = self.save(done, elapsed) if (last_saved is None or last_saved.name != f"step_{done:08d}") else last_saved
        if status == "done":
            self.policy.save_pretrained(self.run_dir / "policy")
        summary = {
            "status": status, "step": done, "steps": self.s.total, "algo": str(self.cfg.algo.name), "wall_s": wall,
            "elapsed_s": elapsed, "final_loss": metrics.get("loss", metrics.get("train/loss")),
            "peak_rss_mb": max(peak.peak_mb, peak_rss_mb()), "checkpoint": str(ckpt),
            "policy": str(self.run_dir / "policy") if status == "done" else str(ckpt / "policy"),
            **self.recipe.summary(done - self.start, wall),
        }  # fmt: skip
        atomic_write_json(self.run_dir / "train_summary.json", summary)
        return summary

    def _steps(self, t0: float) -> tuple[str, int, dict, Path | None]:
        s, start = self.s, self.start
        logger = RunLogger(self.run_dir, start)
        bar = Progress(s.total, start, self.progress, label=s.label)
        stop = StopOnSignal().__enter__()  # a signal only sets a flag, checked between whole steps
        status, done, metrics, last_saved = "done", start, {}, self.latest

        def out_of_time() -> bool:
            return bool(s.time_limit_s) and self.elapsed_before + time.perf_counter() - t0 >= s.time_limit_s

        try:
            self.recipe.begin(start, logger)
            for i in range(start, s.total):
                if stop.requested:
                    raise KeyboardInterrupt
                if out_of_time():  # a resumed run that has used its whole time limit takes no step
                    status = "time_limit"
                    break
                metrics = self._one(i, stop, last_saved)
                done = i + 1
                if done % s.log_every == 0 or done == s.total or i == start:
                    logger.log(done, metrics)
                if self.on_step is not None:
                    self.on_step(done, metrics)
                if stop.requested and done < s.total:
                    raise KeyboardInterrupt
                bar.update(self.recipe.describe(metrics))
                if done % s.ckpt_every == 0 and done < s.total:
                    last_saved = self.save(done, self.elapsed_before + time.perf_counter() - t0)
                if out_of_time() and done < s.total:
                    status = "time_limit"
                    break
        except (KeyboardInterrupt, RolloutInterrupted):  # a rollout stopped between decisions: the iteration is dropped
            if stop.force:
                raise
            status = "interrupted"
        finally:
            self.recipe.close()
            bar.close()
            logger.close()
            stop.__exit__()
        return status, done, metrics, last_saved

    def _one(self, i: int, stop, last_saved: Path | None) -> dict:
        try:
            return self.recipe.step(i, stop)
        except NonFiniteLossError as e:
            kept = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
            raise TrainingError(f"training stopped: {e}; {kept}. {self.s.nan_hint}") from None
