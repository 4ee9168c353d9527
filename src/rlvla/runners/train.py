"""``rlvla train``: one entry point for every way of training a policy.

Recipe (all through :class:`rlvla.runners.loop.Loop`, which owns resume, signals, the NaN stop, the time limit,
checkpoints, logs and the summary):

- ``algo=sft`` and the offline methods (``awr``, ``iql``, ...): compose config -> dataset -> policy (new, or
  ``init``) -> :class:`DatasetRecipe` (batch of step ``i`` drawn for ``(seed, i)``, one update);
- offline then online (``algo.online_iterations > 0``): :mod:`rlvla.runners.o2o`;
- online RL (``ppo``, ``grpo``, ``rloo``, ``reinforce_pp``): :mod:`rlvla.runners.rl`.

Resuming reproduces an uninterrupted run exactly on CPU: batches and the torch RNG are functions of
``(seed, step)``, and the optimiser state is restored from the checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from rlvla.algos.offline.sft import SFT
from rlvla.checkpoints import resolve_checkpoint
from rlvla.configs import AUX_TARGETS, check_overrides, compose, policy_config, section
from rlvla.data.chunks import ChunkDataset
from rlvla.data.lerobot import LeRobotDataset
from rlvla.errors import TrainingError
from rlvla.io import atomic_write_json
from rlvla.policies import VLAPolicy
from rlvla.runners.loop import Loop, LoopSettings, Recipe, prepare_run_dir, step_seed


class DatasetRecipe(Recipe):
    """SFT, offline RL, reward models and world models: step ``i`` updates on the batch drawn from the data for
    ``(seed, i)``: ``data.batch(data.indices(i, batch_size, seed))``, or ``draw(i)`` when given."""

    def __init__(self, algo, data, batch_size: int, seed: int, tasks: list[str], fingerprint: dict, draw=None) -> None:
        self.algo, self.data, self.batch_size, self.seed = algo, data, batch_size, seed
        self.tasks, self.fingerprint = tasks, fingerprint
        self.draw = draw or (lambda i: data.batch(data.indices(i, batch_size, seed)))
        self.samples, self.t0 = 0, time.perf_counter()

    def begin(self, start: int, logger) -> None:
        self.t0 = time.perf_counter()

    def step(self, i: int, stop) -> dict:
        torch.manual_seed(step_seed(self.seed, i))
        metrics = self.algo.update(self.draw(i), i)
        self.samples += self.batch_size
        return {**metrics, "samples_per_s": self.samples / (time.perf_counter() - self.t0)}

    def state(self) -> tuple[dict, dict]:
        return self.algo.state()

    def load_state(self, tensors: dict, meta: dict) -> None:
        self.algo.load_state(tensors, meta)

    def describe(self, metrics: dict) -> str:
        return f"loss {metrics['loss']:.4f}"

    def summary(self, steps: int, wall_s: float) -> dict:
        return {"samples_per_s": steps * self.batch_size / max(wall_s, 1e-9), "tasks": self.tasks, "frames": len(self.data),
                "episodes": self.fingerprint["episodes"]}  # fmt: skip


def train(cfg, progress: bool = True, on_step=None) -> dict:
    """Run (or resume) the configured training: SFT, an offline method (then optionally online), or online RL.
    ``on_step(step, metrics)`` is called after each step."""
    from rlvla.algos.offline import CONFIGS as OFFLINE  # the live registry (a method registered at run time too)

    check_overrides(cfg)
    if cfg.algo.name == "reward_model":
        from rlvla.runners.reward import train_reward_model

        return train_reward_model(cfg, progress=progress, on_step=on_step)
    if cfg.algo.name == "world_model":
        from rlvla.runners.world_model import train_world_model

        return train_world_model(cfg, progress=progress, on_step=on_step)
    if cfg.algo.name != "sft" and cfg.algo.name not in OFFLINE:
        from rlvla.runners.rl import train_online

        return train_online(cfg, progress=progress, on_step=on_step)
    if cfg.eval.episodes > 0:  # validate now, not after hours of training
        from rlvla.envs.splits import check_split

        for s in cfg.eval.splits:
            check_split(s)
    loop = section(cfg, "train")
    torch.set_num_threads(loop.threads or os.cpu_count() or 1)
    policy, algo, data, fingerprint = _offline_setup(cfg, loop)
    if cfg.algo.get("online_iterations", 0) > 0:
        from rlvla.runners.o2o import train_o2o

        if not cfg.init:
            raise ValueError("offline-to-online (algo.online_iterations > 0) continues an offline run: pass init=<its run dir>")

        return train_o2o(cfg, policy, algo, data, fingerprint, progress=progress, on_step=on_step)
    recipe = DatasetRecipe(algo, data, loop.batch_size, loop.seed, list(policy.cfg.tasks), fingerprint)
    settings = LoopSettings(total=loop.steps, ckpt_every=loop.ckpt_every, log_every=loop.log_every, time_limit_s=loop.time_limit_s,
                            label=cfg.algo.name, nan_hint="Check the dataset for bad values, or start a new run_dir with a "
                            "lower train.lr or train.grad_clip")  # fmt: skip
    return Loop(cfg, recipe, policy, settings, fingerprint=fingerprint, progress=progress, on_step=on_step).run()


def _dataset_reward_scale(dataset) -> float:
    """The dense-reward scale of the suite the dataset was collected in (its episodes' ``env_task``)."""
    from rlvla.envs import reward_scale

    tasks = sorted({e["env_task"] for e in dataset.episodes if e.get("env_task")})
    if not tasks:
        raise ValueError(f"dataset {dataset.root} records no env_task per episode; collect it with `rlvla collect`")
    return reward_scale(tasks)


def _paraphrase_pools(dataset, episodes) -> dict[str, list[str]]:
    from rlvla.envs.suites import paraphrase_pools

    pairs = {(dataset.episodes[i]["env_task"], t) for i in episodes if dataset.episodes[i].get("env_task")
             for t in dataset.episodes[i].get("tasks", [])}  # fmt: skip
    return paraphrase_pools(sorted(pairs))


def prototype_groups(dataset, episodes) -> list[list[str]]:
    """The instructions of ``episodes`` grouped by meaning: each with its suite's training paraphrases (one group
    per distinct set), an instruction without paraphrases alone; sorted, so the same data gives the same groups."""
    pools = _paraphrase_pools(dataset, episodes)
    texts = {t for i in episodes for t in dataset.episodes[i].get("tasks", [])}
    return [list(g) for g in sorted({tuple(sorted({t, *pools.get(t, [])})) for t in texts})]


def prototype_partners(groups: list[list[str]], dataset, episodes) -> list[list[int]]:
    """For each prototype group, the groups whose instructions come only from other env tasks of the dataset
    (``algo.lang_mix``'s partners)."""
    tasks: list[set] = [set() for _ in groups]
    where = {t: k for k, g in enumerate(groups) for t in g}
    for i in episodes:
        for t in dataset.episodes[i].get("tasks", []):
            if t in where:
                tasks[where[t]].add(dataset.episodes[i].get("env_task"))
    return [[j for j in range(len(groups)) if tasks[j] and not tasks[j] & tasks[k]] for k in range(len(groups))]


def check_lang_mix(cfg) -> None:
    """``algo.lang_mix`` mixes instruction prototypes: refused without them (before any data is read)."""
    if float(getattr(cfg.algo, "lang_mix", 0.0)) > 0 and policy_config(cfg).backbone.language.prototype_temperature <= 0:
        raise ValueError("algo.lang_mix mixes instruction prototypes; set policy.backbone.language.prototype_temperature > 0")


def _sft_algo(cfg, policy, data, pcfg, loop, dataset) -> SFT:
    """SFT with its auxiliary targets: the episodes' recorded goals (``aux_goal``) and the object or goal position
    on rendered frames of random training layouts (``aux_object``)."""
    aux = float(cfg.algo.aux_goal)
    goals = data.data.get("aux.goal")
    stats = (goals.mean(0), goals.std(0).clamp_min(1e-3)) if goals is not None else None
    if aux > 0 and goals is None:
        raise ValueError(f"algo.aux_goal needs a dataset that records each episode's goal_pos; {cfg.data.path} does not "
                         "(re-collect it with `rlvla collect`)")  # fmt: skip
    frames, lang, partners = None, pcfg.backbone.language, None
    if float(cfg.algo.lang_mix) > 0:
        partners = prototype_partners(lang.prototypes, dataset, data.episodes)
        if not any(partners):  # one env task: nothing to mix with, and the setting would do nothing
            raise ValueError(f"algo.lang_mix mixes an instruction with another task's; {cfg.data.path} has instructions "
                             "of one env task only: set algo.lang_mix=0 or train on several tasks")  # fmt: skip
    if float(cfg.algo.aux_object) > 0:
        from rlvla.collectors.layouts import layout_frames

        frames = layout_frames(data.env_tasks, int(cfg.algo.aux_layouts), pcfg.image_size, pcfg.cameras, seed=loop.seed)
    return SFT(policy, loop.steps, loop.lr, loop.weight_decay, loop.warmup_steps, loop.grad_clip, aux, stats,
               proprio_noise=float(cfg.algo.proprio_noise), aux_object=float(cfg.algo.aux_object), layout_frames=frames,
               aux_batch=int(cfg.algo.aux_batch), aux_keys=AUX_TARGETS[str(cfg.algo.aux_target)],
               aux_warmup=int(cfg.algo.aux_warmup), aux_clone=float(cfg.algo.aux_clone),
               aux_restart=bool(cfg.algo.aux_restart), aux_keypoints=float(cfg.algo.aux_keypoints),
               aux_keypoint_target=str(cfg.algo.aux_keypoint_target),
               lang_noise=float(cfg.algo.lang_noise),
               lang_mix=float(cfg.algo.lang_mix), lang_partners=partners)  # fmt: skip


def _offline_setup(cfg, loop):
    """-> (policy, algorithm, dataset, fingerprint) for SFT or an offline method; ``init`` fixes the policy."""
    data_cfg, pcfg, offline = section(cfg, "data"), policy_config(cfg), cfg.algo.name != "sft"
    check_lang_mix(cfg)
    prepare_run_dir(cfg)  # refuse to overwrite or to resume another config before reading any data
    dataset, init, acfg = LeRobotDataset(data_cfg.path), None, section(cfg, "algo") if offline else None
    if offline:
        from rlvla.algos.offline.base import configure_policy, deployment_condition
        from rlvla.data.offline import OfflineChunks

        if data_cfg.episodes_per_task:
            raise ValueError("data.episodes_per_task applies to sft only; offline algorithms use the whole dataset")
        if cfg.init:
            init = resolve_checkpoint(cfg.init)
            pcfg = VLAPolicy.read_config(init)
        pcfg = configure_policy(pcfg, acfg)
        data = OfflineChunks(dataset, pcfg.chunk, pcfg.cameras, acfg.gamma, acfg.reward, getattr(acfg, "cond_gamma", 1.0),
                             acfg.files_in_memory, image_size=pcfg.image_size, reward_scale=_dataset_reward_scale(dataset))  # fmt: skip
        fingerprint = {"episodes": data.episodes_total, "frames": len(data)}
        if pcfg.condition.kind != "none":
            pcfg.condition.value = deployment_condition(acfg, data)
    else:
        data = ChunkDataset(dataset, pcfg.chunk, pcfg.cameras, data_cfg.episodes_per_task, image_size=pcfg.image_size)
        if data_cfg.paraphrase > 0:
            data.set_paraphrases(_paraphrase_pools(dataset, data.episodes), data_cfg.paraphrase, loop.seed)
        fingerprint = {"episodes": len(data.episodes), "frames": len(data)}
    if not data.env_tasks:
        raise ValueError(f"dataset {data_cfg.path} records no env_task per episode; collect it with `rlvla collect`")
    pcfg.tasks = data.env_tasks
    lang = pcfg.backbone.language
    if lang.prototype_temperature > 0 and not lang.prototypes:
        lang.prototypes = prototype_groups(dataset, data.episodes if not offline else range(dataset.num_episodes))
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
    if not offline:
        return policy, _sft_algo(cfg, policy, data, pcfg, loop, dataset), data, fingerprint
    from rlvla.algos.offline import method
    from rlvla.algos.offline.base import OfflineRL

    wants_ref = getattr(method(acfg.name), "NEEDS_REFERENCE", False) and init is not None
    reference = VLAPolicy.from_pretrained(init, map_location=loop.device).to(loop.device) if wants_ref else None
    return policy, OfflineRL(policy, acfg, loop, data, reference=reference), data, fingerprint


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
        from rlvla.collectors import evaluate

        res = evaluate(VLAPolicy.from_pretrained(summary["policy"]), summary["tasks"], list(cfg.eval.splits),
                       episodes=cfg.eval.episodes, num_envs=cfg.eval.num_envs, video_dir=Path(cfg.run_dir) / "videos",
                       progress=True)  # fmt: skip
        atomic_write_json(Path(cfg.run_dir) / "eval.json", {"checkpoint": summary["policy"], **res})
    return 130 if summary["status"] == "interrupted" else 0
