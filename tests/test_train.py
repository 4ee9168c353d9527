"""SFT training runner and evaluation: exact resume, NaN stop, config errors, checkpoint handling, eval JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rlvla.data.lerobot import LeRobotWriter
from rlvla.runners.collect import features

TINY_BACKBONE = [
    "policy.backbone.dim=32", "policy.backbone.layers=1", "policy.backbone.vision.width=8",
    "policy.backbone.language.encoder=none",
    "train.batch_size=8", "train.log_every=1", "train.warmup_steps=2", "train.lr=1e-3",
]  # fmt: skip
TINY = TINY_BACKBONE + ["policy.head.dim=32", "policy.head.layers=1", "policy.head.bins=32"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small synthetic LeRobot dataset: 4 episodes, 2 tasks, random images, smooth actions."""
    return _write_dataset(tmp_path_factory.mktemp("data") / "ds", ("reach-v3", "push-v3"))


def _write_dataset(root, env_tasks):
    w = LeRobotWriter(root, features(("corner",), 64), episode_meta={"env_task": "string"})
    rng = np.random.default_rng(0)
    for e in range(4):
        n = 12 + e
        t = np.linspace(0, 1, n, dtype=np.float32)[:, None]
        frames = {
            "observation.images.corner": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
            "observation.state": rng.normal(size=(n, 4)).astype(np.float32),
            "action": np.clip(np.sin(t * (e + 1) + np.arange(4)), -1, 1).astype(np.float32),
            "next.reward": rng.random(n).astype(np.float32),
            "next.done": np.r_[np.zeros(n - 1, bool), True],
            "next.terminated": np.r_[np.zeros(n - 1, bool), True],
            "next.truncated": np.zeros(n, bool),
            "next.success": np.r_[np.zeros(n - 1, bool), True],
            "next.return": np.zeros(n, np.float32),
        }
        task = env_tasks[e % len(env_tasks)]
        w.add_episode(frames, f"do {task}", meta={"env_task": task})
    return root


def _cfg(dataset, run_dir, *extra, base=TINY):
    from rlvla.configs import compose

    return compose([*base, f"data.path={dataset}", f"run_dir={run_dir}", *extra])


def _losses(run_dir):
    from rlvla.runners.runlog import read_metrics

    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


def test_resume_reproduces_uninterrupted_run(dataset, tmp_path):
    from rlvla.runners.train import train

    full = train(_cfg(dataset, tmp_path / "a", "train.steps=8", "train.ckpt_every=3"), progress=False)
    assert full["status"] == "done" and full["step"] == 8

    def stop_at_5(step, metrics):
        if step == 5:
            raise KeyboardInterrupt

    part = train(_cfg(dataset, tmp_path / "b", "train.steps=8", "train.ckpt_every=3"), progress=False, on_step=stop_at_5)
    assert part["status"] == "interrupted" and part["step"] == 5
    assert (tmp_path / "b" / "checkpoints" / "step_00000005" / "policy" / "model.safetensors").exists()
    resumed = train(_cfg(dataset, tmp_path / "b", "train.steps=8", "train.ckpt_every=3"), progress=False)
    assert resumed["status"] == "done" and resumed["step"] == 8
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [s for s, _ in a] == list(range(1, 9)) and [s for s, _ in b] == list(range(1, 9))
    assert a == b  # bit-identical loss sequence
    from rlvla.policies import VLAPolicy

    pa, pb = VLAPolicy.from_pretrained(tmp_path / "a" / "policy"), VLAPolicy.from_pretrained(tmp_path / "b" / "policy")
    for (k, va), vb in zip(pa.state_dict().items(), pb.state_dict().values()):
        assert torch.equal(va, vb), k


def test_resume_refuses_a_different_config(dataset, tmp_path):
    from rlvla.runners.train import train

    train(_cfg(dataset, tmp_path / "r", "train.steps=2"), progress=False)
    with pytest.raises(ValueError, match="different config.*train.lr"):
        train(_cfg(dataset, tmp_path / "r", "train.steps=2", "train.lr=0.5"), progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(dataset, tmp_path, monkeypatch):
    from rlvla.errors import TrainingError
    from rlvla.policies import VLAPolicy
    from rlvla.runners.train import train

    real = VLAPolicy.bc_loss
    calls = {"n": 0}

    def poisoned(self, batch):
        loss, m = real(self, batch)
        calls["n"] += 1
        return (loss * float("nan"), m) if calls["n"] == 5 else (loss, m)

    monkeypatch.setattr(VLAPolicy, "bc_loss", poisoned)
    with pytest.raises(TrainingError, match=r"loss is nan at step 4.*step_00000003"):
        train(_cfg(dataset, tmp_path / "n", "train.steps=8", "train.ckpt_every=3"), progress=False)
    good = tmp_path / "n" / "checkpoints" / "step_00000003" / "policy"
    p = VLAPolicy.from_pretrained(good)  # loads: finite weights
    assert all(torch.isfinite(v).all() for v in p.state_dict().values() if v.is_floating_point())
    assert not (tmp_path / "n" / "checkpoints" / "step_00000004").exists()


def test_checkpoint_into_other_head_fails_clearly(dataset, tmp_path):
    from rlvla.configs import policy_config
    from rlvla.policies import CheckpointError, VLAPolicy
    from rlvla.runners.train import train

    s = train(_cfg(dataset, tmp_path / "t", "train.steps=1"), progress=False)
    other = VLAPolicy(policy_config(_cfg(dataset, tmp_path / "x", "head=flow", "policy.head.hidden=32", base=TINY_BACKBONE)))
    with pytest.raises(CheckpointError, match=r"different policy config \(head\.name: 'token' vs 'flow'"):
        other.load_weights(s["policy"])


def rlvla(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "rlvla.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "train.stepz=3"], "unknown key train.stepz; did you mean train.steps"),
        (["train", "head=transformer"], "Could not find 'head/transformer'"),
        (["train", "head=flow", "policy.head.logprob=exact"], "unknown flow logprob 'exact'"),
        (["train", "train.steps=0", "data.path=X"], "train needs steps"),
        (["train", "data.path=X"], "does not exist"),
        (["eval", "X"], "does not exist"),
    ],
)
def test_cli_bad_input_one_line(tmp_path, args, needle):
    args = [a.replace("X", str(tmp_path / "missing")) for a in args]
    r = rlvla(*args, f"run_dir={tmp_path / 'run'}" if args[0] == "train" else "--json")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and "Warning" not in ln and "warn" not in ln]
    assert len(lines) == 1 and needle in lines[0], r.stderr


# statsmodels 0.15.0: proportion_confint(k, 3, alpha=0.05, method="wilson")
WILSON_OF_3 = {0: (0.0, 0.5614970317550455), 1: (0.06149194472039626, 0.7923403991979523),
               2: (0.2076596008020477, 0.9385080552796037), 3: (0.43850296824495444, 1.0)}  # fmt: skip


def test_cli_train_then_eval_json(dataset, tmp_path):
    run = tmp_path / "cli"
    r = rlvla("train", *TINY, f"data.path={dataset}", f"run_dir={run}", "train.steps=3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (run / "policy" / "model.safetensors").exists() and list((run / "tensorboard").glob("events.*"))
    r = rlvla("eval", str(run), "--splits", "id,ood-visual", "--episodes", "3", "--max-steps", "12", "--workers", "0",
              "--num-envs", "2", "--videos", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["checkpoint"].endswith("policy")
    for split in ("id", "ood-visual"):
        s = res["splits"][split]
        k = sum(e[2] for e in s["per_episode"])
        assert s["episodes"] == 3 and s["success_rate"] == pytest.approx(k / 3)
        assert s["ci95"] == pytest.approx(WILSON_OF_3[k], rel=1e-9, abs=1e-15)  # statsmodels' values, not the clamps
        assert s["mean_length"] <= 12 and s["latency_ms"]["p50"] > 0 and s["latency_ms"]["p95"] >= s["latency_ms"]["p50"]
        assert set(s["tasks"]) == {"reach-v3", "push-v3"}
    # paired layouts: the same (task, seed) episodes on both splits
    assert [e[:2] for e in res["splits"]["id"]["per_episode"]] == [e[:2] for e in res["splits"]["ood-visual"]["per_episode"]]
    assert len(list((run / "videos").glob("*.gif"))) == 2
    # a sampler setting the head does not have is a one-line error, not silently ignored
    r = rlvla("eval", str(run), "--denoise-steps", "3", "--json")
    assert r.returncode == 2 and "flow and diffusion" in r.stderr.strip().splitlines()[-1], r.stderr
    r = rlvla("eval", str(run), "--explore-noise", "0.2", "--json")  # a sampler setting without sampling
    assert r.returncode == 2 and "add --sample" in r.stderr.strip().splitlines()[-1], r.stderr


def test_sigint_checkpoints_at_a_whole_step(dataset, tmp_path):
    import os
    import signal
    import time

    run = tmp_path / "sig"
    p = subprocess.Popen([sys.executable, "-m", "rlvla.cli", "train", *TINY, f"data.path={dataset}", f"run_dir={run}",
                          "train.steps=100000", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3):
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] >= 3
    ckpt = run / "checkpoints" / f"step_{summary['step']:08d}"
    meta = json.loads((ckpt / "trainer.json").read_text())
    assert meta["step"] == summary["step"]
    from safetensors.torch import load_file

    adam_steps = {float(v) for k, v in load_file(str(ckpt / "trainer.safetensors")).items() if k.endswith(".step")}
    assert adam_steps == {float(summary["step"])}  # optimiser state matches the step number: no half update


def test_resume_refuses_a_changed_dataset(dataset, tmp_path):
    import shutil

    from rlvla.data.lerobot import LeRobotDataset
    from rlvla.runners.train import train

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    train(_cfg(ds, tmp_path / "r", "train.steps=4", "train.ckpt_every=2"), progress=False, on_step=_stop_at(2))
    w = LeRobotWriter(ds)
    e = LeRobotDataset(ds).episode(0)
    w.add_episode({k: v for k, v in e.items() if k in features(("corner",), 64)}, "do reach-v3", meta={"env_task": "reach-v3"})
    with pytest.raises(ValueError, match="dataset changed"):
        train(_cfg(ds, tmp_path / "r", "train.steps=4", "train.ckpt_every=2"), progress=False)


def _stop_at(n):
    def cb(step, metrics):
        if step == n:
            raise KeyboardInterrupt

    return cb


def test_image_size_mismatch_is_a_clear_error(dataset):
    from rlvla.data.chunks import ChunkDataset
    from rlvla.data.lerobot import LeRobotDataset

    with pytest.raises(ValueError, match=r"64x64 images .* expects 32x32 \(set policy.image_size=64"):
        ChunkDataset(LeRobotDataset(dataset), 4, ["corner"], image_size=32)


def test_checkpoints_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    """A power cut after ``save`` returns must not lose the checkpoint: its files are fsynced while still under the
    temporary name (before the rename publishes them), and the checkpoints directory after the rename."""
    import os

    from rlvla.checkpoints import Checkpoints
    from rlvla.policies import PolicyConfig, make_policy
    from rlvla.policies.config import BackboneConfig
    from rlvla.policies.heads import head_config

    bb = BackboneConfig(dim=16, heads=2, layers=1, vision={"width": 4, "depth": 2}, language={"encoder": "none"})
    policy = make_policy(PolicyConfig(head=head_config("gaussian", hidden=16), chunk=2, action_dim=4, image_size=16, backbone=bb))
    synced, real, real_replace = [], os.fsync, os.replace

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    def replace_spy(src, dst):
        synced.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(os, "replace", replace_spy)
    final = Checkpoints(tmp_path).save(3, policy, {"x": torch.zeros(2)}, {"note": "t"})
    tmp = str(tmp_path / "checkpoints" / ".step_00000003.tmp")
    for f in ("policy/model.safetensors", "policy/config.json", "trainer.safetensors", "trainer.json", "policy", ""):
        assert os.path.join(tmp, f).rstrip("/") in synced, f"{f or 'the checkpoint directory'} was not fsynced"
    publish = synced.index(("replace", tmp, str(final)))
    assert synced.index(os.path.join(tmp, "policy/model.safetensors")) < publish  # contents durable before the rename
    assert str(tmp_path / "checkpoints") in synced[publish + 1 :]  # and the rename itself made durable after it
    assert (final / "trainer.json").exists() and (tmp_path / "checkpoints" / "latest").read_text() == final.name


@pytest.fixture(scope="module")
def flow_init(tmp_path_factory):
    from rlvla.policies import PolicyConfig, make_policy
    from rlvla.policies.config import BackboneConfig
    from rlvla.policies.heads import head_config

    bb = BackboneConfig(dim=16, heads=2, layers=1, vision={"width": 4, "depth": 2}, language={"encoder": "none"})
    policy = make_policy(PolicyConfig(head=head_config("flow", hidden=16), chunk=4, action_dim=4, image_size=16, backbone=bb))
    return policy.save_pretrained(tmp_path_factory.mktemp("init") / "flow")


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["algo=grpo", "head=token"], r"fixes the policy .* head=token would be ignored"),
        (["algo=iql", "policy.chunk=8"], r"policy.chunk=8 would be ignored"),
        (["algo=grpo", "train.steps=10", "train.lr=1e-3"], r"train.steps=10 train.lr=1e-3 would be ignored; of train"),
        (["algo=ppo", "data.path=runs/demos"], r"data.path=runs/demos would be ignored"),
        (["algo=sft"], r"algo=sft trains a new policy .* ignores init="),
    ],
)
def test_overrides_a_run_would_ignore_are_errors(flow_init, overrides, match):
    """`rlvla train algo=grpo head=token init=<a flow checkpoint>` used to train the flow policy without a word."""
    from rlvla.configs import check_overrides, compose

    with pytest.raises(ValueError, match=match):
        check_overrides(compose([*overrides, f"init={flow_init}"]))


def test_overrides_that_apply_pass_the_check(flow_init):
    from rlvla.configs import check_overrides, compose

    check_overrides(compose(["algo=grpo", f"init={flow_init}", "train.seed=3", "train.time_limit_s=60", "algo.lr=1e-5"]))
    check_overrides(compose(["algo=grpo", f"init={flow_init}", "head=flow", "policy.chunk=4", "policy.backbone.dim=16"]))  # agree
    check_overrides(compose(["algo=sft", "head=flow", "policy.chunk=8", "train.steps=10", "data.path=d"]))
    check_overrides(compose(["algo=iql", f"init={flow_init}", "train.steps=10", "algo.beta=0.3", "data.path=d"]))
    assert compose(["algo=sft", "train.steps=10"]).overrides == ["algo=sft", "train.steps=10"]


def test_the_time_limit_covers_the_whole_run_across_resumes(dataset, tmp_path):
    """``train.time_limit_s`` used to restart with each resumed invocation. The elapsed training time travels in the
    checkpoint: a run resumed after it has used its limit takes no further step."""
    import json as _json

    from rlvla.runners.train import train

    def stop_at_3(step, metrics):
        if step == 3:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    part = train(_cfg(dataset, run, "train.steps=8"), progress=False, on_step=stop_at_3)
    assert part["status"] == "interrupted" and part["step"] == 3
    meta = _json.loads((run / "checkpoints" / "step_00000003" / "trainer.json").read_text())
    assert meta["elapsed_s"] > 0 and part["elapsed_s"] == pytest.approx(meta["elapsed_s"])
    limit = meta["elapsed_s"] / 2  # already used up
    again = train(_cfg(dataset, run, "train.steps=8", f"train.time_limit_s={limit}"), progress=False)
    assert again["status"] == "time_limit" and again["step"] == 3  # no step taken
    rest = train(_cfg(dataset, run, "train.steps=8", "train.time_limit_s=0"), progress=False)
    assert rest["status"] == "done" and rest["step"] == 8 and rest["elapsed_s"] > meta["elapsed_s"]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["algo=awr", "algo.cql_alpha=5"], r"unknown key algo.cql_alpha for algo=awr; valid algo keys: .*beta"),
        (["algo=grpo", "algo.vf_coef=1"], r"unknown key algo.vf_coef for algo=grpo"),
        (["algo=ppo", "algo.progress_score=0.5"], r"unknown key algo.progress_score for algo=ppo"),
        (["algo=dpo", "algo.online_iterations=2"], r"unknown key algo.online_iterations for algo=dpo"),
        (["train.stpes=3"], r"unknown key train.stpes; did you mean train.steps"),
    ],
)
def test_a_key_the_algorithm_does_not_have_is_an_error_naming_the_valid_ones(overrides, match):
    """Each algorithm's config holds only its own fields: `algo=awr algo.cql_alpha=5` used to be accepted and ignored."""
    from rlvla.configs import compose

    with pytest.raises(ValueError, match=match):
        compose(overrides)


def test_quickstart_presets_fill_only_what_was_not_passed():
    """The grounded quickstart's preset: 50 demos, 3000 SFT steps with the grounded recipe in front of --sft,
    baselines on id and ood-position at 500 steps, evaluation episodes cut at 100 steps, the top-down camera; an
    option passed on the command line wins; other task lists get the plain preset (the corner camera); every
    preset's SFT recipe composes."""
    from types import SimpleNamespace

    from rlvla.runners.quickstart import GROUNDED_SFT, PRESETS, SFT_DEFAULTS, _compose, apply_preset

    names = ("episodes", "steps", "budget", "baseline_steps", "baseline_splits", "rl_budget", "cameras", "eval_max_steps")
    args = apply_preset(SimpleNamespace(tasks="grounded/quickstart", sft=["algo.aux_layouts=8"], **dict.fromkeys(names)))
    assert (args.episodes, args.steps, args.baseline_steps, args.baseline_splits) == (50, 3000, 500, "id,ood-position")
    assert args.eval_max_steps == 100
    assert args.sft == [*GROUNDED_SFT, "algo.aux_layouts=8"]
    args = apply_preset(SimpleNamespace(tasks="grounded/quickstart", sft=[], **{**dict.fromkeys(names), "steps": 10}))
    assert args.steps == 10 and args.episodes == 50 and args.cameras == "topview"
    # 0 is an answer, not a blank: --eval-max-steps 0 runs the grounded episodes to the task's own limit
    args = apply_preset(SimpleNamespace(tasks="grounded/quickstart", sft=[], **{**dict.fromkeys(names), "eval_max_steps": 0}))
    assert args.eval_max_steps == 0 and args.baseline_steps == 500
    args = apply_preset(SimpleNamespace(tasks="reach-v3", sft=[], **dict.fromkeys(names)))
    assert (args.episodes, args.steps, args.baseline_splits, args.sft, args.cameras, args.eval_max_steps) == (2, 1500, "", [], "corner", 0)
    for preset in PRESETS.values():
        cfg = _compose(["head=flow", *SFT_DEFAULTS, *preset.sft])
        assert cfg.algo.aux_object == 1.0
    # --cameras: the cameras the demos are recorded from are the ones the policy reads
    from pathlib import Path

    from rlvla.runners.quickstart import _sft_overrides

    two = SimpleNamespace(head="flow", steps=10, budget=5.0, sft=[], cameras="topview,corner")
    assert list(_compose(_sft_overrides(two, Path("d"), Path("o"))).policy.cameras) == ["topview", "corner"]


def test_the_quickstart_rl_recipe_composes_for_every_online_algorithm():
    """The recipe's group settings (progress score, refill rounds) apply to group methods only: `rlvla quickstart
    --algo ppo` composed keys PPO does not have, and failed only after collection, SFT and evaluation."""
    from types import SimpleNamespace

    from rlvla.algos.online import CONFIGS
    from rlvla.runners.quickstart import RL_DEFAULTS, _check_args, rl_defaults

    for algo in CONFIGS:
        _check_args(SimpleNamespace(cameras="corner", head="flow", algo=algo, rl=[], sft=[], tasks="grounded", baseline_splits="id,ood-position"))
    assert rl_defaults("grpo") == list(RL_DEFAULTS)
    assert not any(o.startswith(("algo.progress_score", "algo.max_refill_rounds")) for o in rl_defaults("ppo"))
    with pytest.raises(ValueError, match="unknown key algo.nope"):
        _check_args(SimpleNamespace(cameras="corner", head="flow", algo="grpo", rl=["algo.nope=1"], sft=[], tasks="grounded", baseline_splits="id"))
    with pytest.raises(ValueError, match="unknown split 'ood-pos' in --baseline-splits"):
        _check_args(SimpleNamespace(cameras="corner", head="flow", algo="grpo", rl=[], sft=[], tasks="grounded", baseline_splits="id,ood-pos"))
    with pytest.raises(ValueError, match="unknown task 'grounded/nope'"):
        _check_args(SimpleNamespace(cameras="corner", head="flow", algo="grpo", rl=[], sft=[], tasks="grounded/nope", baseline_splits="id"))
    # the SFT overrides are checked up front too, with the quickstart's SFT recipe in front of them
    for head in ("token", "diffusion", "flow", "gaussian"):
        _check_args(SimpleNamespace(cameras="corner", head=head, algo="grpo", rl=[], sft=["algo.proprio_noise=0"], tasks="quickstart", baseline_splits=""))
    with pytest.raises(ValueError, match="unknown key algo.nope"):
        _check_args(SimpleNamespace(cameras="corner", head="flow", algo="grpo", rl=[], sft=["algo.nope=1"], tasks="quickstart", baseline_splits=""))
    with pytest.raises(ValueError, match="unknown camera 'top'"):
        _check_args(SimpleNamespace(cameras="corner,top", head="flow", algo="grpo", rl=[], sft=[], tasks="quickstart", baseline_splits=""))
    with pytest.raises(ValueError, match="--cameras names no camera"):
        _check_args(SimpleNamespace(cameras=",", head="flow", algo="grpo", rl=[], sft=[], tasks="quickstart", baseline_splits=""))
    with pytest.raises(ValueError, match="--eval-max-steps must be >= 0"):
        _check_args(SimpleNamespace(cameras="corner", head="flow", algo="grpo", rl=[], sft=[], tasks="quickstart", baseline_splits="", eval_max_steps=-1))
    # the policy's own checks and the cross-section ones, before any collection
    for bad, msg in ((["policy.backbone.language.prototype_temperature=-1"], "must be >= 0"),
                     (["algo.lang_mix=0.5"], "algo.lang_mix mixes instruction prototypes")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            _check_args(SimpleNamespace(cameras="corner", head="flow", algo="grpo", rl=[], sft=bad, tasks="quickstart", baseline_splits=""))


def test_paraphrase_augmentation_swaps_only_same_meaning_instructions(tmp_path):
    """data.paraphrase: a sample's instruction becomes another training phrasing of the same meaning (the same
    task and, in the grounded suite, the same colour); batches stay a pure function of (seed, step)."""
    from rlvla.data.chunks import ChunkDataset
    from rlvla.data.lerobot import LeRobotDataset
    from rlvla.envs.metaworld.grounded import paraphrases
    from rlvla.envs.metaworld.instructions import INSTRUCTIONS
    from rlvla.runners.train import _paraphrase_pools

    root = tmp_path / "ds"
    w = LeRobotWriter(root, features(("corner",), 16), episode_meta={"env_task": "string"})
    said = {"grounded/push": "push the puck to the red target", "reach-v3": "reach the goal"}
    for e, (task, text) in enumerate(said.items()):
        n = 30
        frames = {"observation.images.corner": np.zeros((n, 16, 16, 3), np.uint8), "observation.state": np.zeros((n, 4), np.float32),
                  "action": np.zeros((n, 4), np.float32), "next.reward": np.zeros(n, np.float32),
                  "next.done": np.r_[np.zeros(n - 1, bool), True], "next.terminated": np.r_[np.zeros(n - 1, bool), True],
                  "next.truncated": np.zeros(n, bool), "next.success": np.r_[np.zeros(n - 1, bool), True],
                  "next.return": np.zeros(n, np.float32)}  # fmt: skip
        w.add_episode(frames, text, meta={"env_task": task})
    ds = LeRobotDataset(root)
    data = ChunkDataset(ds, 2, ("corner",), image_size=16)
    plain = data.batch(np.arange(60))["task"]
    data.set_paraphrases(_paraphrase_pools(ds, data.episodes), 0.5, seed=0)
    got = data.batch(np.arange(60))["task"]
    assert got == data.batch(np.arange(60))["task"] and got != plain
    push = set(got[:30]) - {said["grounded/push"]}
    reach = set(got[30:]) - {said["reach-v3"]}
    assert push and all("red" in s for s in push) and push <= set(paraphrases("grounded/push", said["grounded/push"]))
    assert reach and reach <= set(INSTRUCTIONS["reach-v3"]["train"])
    assert 8 <= sum(a != b for a, b in zip(got, plain)) <= 30  # about half of 60, less the draws of the same string
    with pytest.raises(ValueError, match="data.paraphrase must be in"):
        data.set_paraphrases({}, 1.5, seed=0)


def test_auxiliary_goal_loss_trains_and_stays_out_of_the_policy(dataset, tmp_path):
    """algo.aux_goal: the action readout also predicts the episode's recorded goal (training only). A dataset
    without goals is refused with one line; with goals the auxiliary loss falls and the deployed weights are the
    policy's own (the auxiliary readout lives in the trainer state)."""
    from safetensors.torch import load_file

    from rlvla.runners.train import train

    with pytest.raises(ValueError, match="algo.aux_goal needs a dataset that records each episode's goal_pos"):
        train(_cfg(dataset, tmp_path / "nogoal", "algo.aux_goal=1.0", "train.steps=2"), progress=False)
    root = tmp_path / "ds"
    w = LeRobotWriter(root, features(("corner",), 64), episode_meta={"env_task": "string"})
    rng = np.random.default_rng(0)
    for e in range(4):
        n = 10
        frames = {"observation.images.corner": np.full((n, 64, 64, 3), 40 * e, np.uint8),
                  "observation.state": rng.normal(size=(n, 4)).astype(np.float32), "action": np.zeros((n, 4), np.float32),
                  "next.reward": np.zeros(n, np.float32), "next.done": np.r_[np.zeros(n - 1, bool), True],
                  "next.terminated": np.r_[np.zeros(n - 1, bool), True], "next.truncated": np.zeros(n, bool),
                  "next.success": np.r_[np.zeros(n - 1, bool), True], "next.return": np.zeros(n, np.float32)}  # fmt: skip
        w.add_episode(frames, "reach", meta={"env_task": "reach-v3", "goal_pos": [0.1 * e, 0.8, 0.2]})
    run = tmp_path / "aux"
    out = train(_cfg(root, run, "algo.aux_goal=1.0", "train.steps=40"), progress=False)
    assert out["status"] == "done"
    from rlvla.runners.runlog import read_metrics

    aux = [r["aux_goal_loss"] for r in read_metrics(run)]
    assert np.mean(aux[-5:]) < 0.5 * np.mean(aux[:5])  # the goal (one per image brightness) is learnt
    assert not any(k.startswith("aux") for k in load_file(str(run / "policy" / "model.safetensors")))


def _fake_layout_frames(asked: list, ranks: bool = True):
    """A stand-in for ``layout_frames``: 64 frames whose bright square sits where the object is (x in [-0.1, 0.1]);
    the "named candidate" is the square's third of that range (``ranks=False``: a suite without candidates)."""

    def frames(tasks, n, image_size, cameras, seed=0):
        asked.append((sorted(tasks), n, image_size, tuple(cameras)))
        g = np.random.default_rng(seed)
        pos = np.c_[g.uniform(-0.1, 0.1, 64), np.full(64, 0.8), np.full(64, 0.1)].astype(np.float32)
        images = np.zeros((64, 1, 64, 64, 3), np.uint8)
        for i, x in enumerate(pos[:, 0]):
            c = int((x + 0.1) / 0.2 * 52)
            images[i, 0, 28:36, c : c + 12] = 255
        return {"images": images, "proprio": g.normal(size=(64, 4)).astype(np.float32), "obj_pos": pos,
                "goal_pos": pos * np.float32([-1, 1, 1]), "instructions": ["do reach-v3"] * 64, "task": ["reach-v3"] * 64,
                "target_rank": np.digitize(pos[:, 0], [-0.1 / 3, 0.1 / 3]) if ranks else np.full(64, -1),
                "colour_pos": np.c_[pos, pos * np.float32([-1, 1, 1]), pos * np.float32([0.5, 1, 1])] if ranks
                else np.zeros((64, 0), np.float32),
                # every colour drawn at the square's centre (pixels), the named one drawn at random
                "colour_px": np.tile(np.c_[(pos[:, 0] + 0.1) / 0.2 * 52 // 1 + 5.5, np.full(64, 31.5)], 3).astype(np.float32)
                if ranks else np.zeros((64, 0), np.float32),
                "named_colour": g.integers(0, 3, 64) if ranks else np.full(64, -1)}  # fmt: skip

    return frames


def test_object_position_loss_on_layout_frames_trains_and_stays_out_of_the_policy(dataset, tmp_path, monkeypatch):
    """algo.aux_object: the action readout also predicts the object's position on frames of random training
    layouts (training only). Tiny learning: on frames whose bright square sits where the object is, the
    auxiliary loss falls below half its start; the deployed weights are the policy's own; the frames are asked for
    the dataset's tasks, once; a bad setting is refused with one line."""
    from safetensors.torch import load_file

    import rlvla.collectors.layouts as layouts
    from rlvla.configs import SFTConfig
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    asked = []
    frames = _fake_layout_frames(asked)
    monkeypatch.setattr(layouts, "layout_frames", frames)
    run = tmp_path / "auxobj"
    out = train(_cfg(dataset, run, "algo.aux_object=1.0", "algo.aux_layouts=32", "train.steps=60"), progress=False)
    assert out["status"] == "done" and asked == [(["push-v3", "reach-v3"], 32, 64, ("corner",))]
    aux = [r["aux_object_loss"] for r in read_metrics(run)]
    assert np.mean(aux[-5:]) < 0.5 * np.mean(aux[:5])
    assert not any(k.startswith("aux") for k in load_file(str(run / "policy" / "model.safetensors")))
    with pytest.raises(ValueError, match="algo.aux_object must be >= 0 and algo.aux_layouts, algo.aux_batch >= 1"):
        SFTConfig(aux_object=1.0, aux_layouts=0)
    with pytest.raises(ValueError, match="unknown algo.aux_target 'hand'"):
        SFTConfig(aux_target="hand")
    # both targets (the goal: where the instruction picks one of several candidates): six outputs, both learnt
    run = tmp_path / "auxboth"
    out = train(_cfg(dataset, run, "algo.aux_object=1.0", "algo.aux_target=both", "train.steps=60"), progress=False)
    aux = [r["aux_object_loss"] for r in read_metrics(run)]
    assert out["status"] == "done" and np.mean(aux[-5:]) < 0.5 * np.mean(aux[:5])
    trainer = load_file(str(run / "checkpoints" / "step_00000060" / "trainer.safetensors"))
    assert trainer["aux_object.weight"].shape == (6, 32)


@pytest.mark.parametrize("target,start,tol,width", [("candidate", np.log(3), 0.3, 3), ("grounded", np.log(3) + 1.0, 0.5, 9),
                                                     ("colours", np.log(3) + 1.0, 0.5, 18)])  # fmt: skip
def test_named_candidate_targets_train(dataset, tmp_path, monkeypatch, target, start, tol, width):
    """algo.aux_target=candidate: which candidate the instruction names, as a class (three here); ``grounded``: that
    class (its 3 logits first) plus the object and goal positions (6 more), one loss; ``colours``: those plus every
    candidate's position by colour (9 more). Tiny learning: the loss starts
    near its chance value (log 3, + 1 for the MSE of a standardised target) and falls below half its start; the
    readout has one output per class and coordinate; tasks without candidates are refused in one line."""
    from safetensors.torch import load_file

    import rlvla.collectors.layouts as layouts
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    monkeypatch.setattr(layouts, "layout_frames", _fake_layout_frames([]))
    run = tmp_path / target
    out = train(_cfg(dataset, run, "algo.aux_object=1.0", f"algo.aux_target={target}", "algo.aux_warmup=80",
                     "train.steps=80", "algo.aux_batch=64"), progress=False)  # fmt: skip
    aux = [r["aux_object_loss"] for r in read_metrics(run)]
    assert out["status"] == "done" and abs(np.mean(aux[:3]) - start) < tol
    assert np.mean(aux[-5:]) < 0.5 * np.mean(aux[:5])
    trainer = load_file(str(run / "checkpoints" / "step_00000080" / "trainer.safetensors"))
    assert trainer["aux_object.weight"].shape == (width, 32)
    monkeypatch.setattr(layouts, "layout_frames", _fake_layout_frames([], ranks=False))
    with pytest.raises(ValueError, match=f"algo.aux_target .*{target}.* needs tasks with several candidates"):
        train(_cfg(dataset, tmp_path / "nocand", "algo.aux_object=1.0", f"algo.aux_target={target}"), progress=False)


def test_keypoints_tied_to_colours_learn_where_each_colour_is(dataset, tmp_path, monkeypatch):
    """algo.aux_keypoints: keypoint c must be an affine function of where colour c's candidate is (the residual of
    the batch's least-squares fit). Tiny learning: on frames whose bright square sits where every colour's candidate
    is (x, -x, x / 2), that residual falls below half its start; its metric is logged; the setting is refused in one
    line without the per-colour target or with fewer keypoints than colours."""
    import rlvla.collectors.layouts as layouts
    from rlvla.configs import SFTConfig
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    monkeypatch.setattr(layouts, "layout_frames", _fake_layout_frames([]))
    common = ["algo.aux_object=1.0", "algo.aux_target=colours", "algo.aux_warmup=60", "train.steps=60", "algo.aux_batch=64"]
    run = tmp_path / "kp"
    out = train(_cfg(dataset, run, *common, "policy.backbone.vision.keypoints=4", "algo.aux_keypoints=1.0"), progress=False)
    kp = [r["aux_keypoint_loss"] for r in read_metrics(run)]
    assert out["status"] == "done" and len(kp) == 60
    assert np.mean(kp[-5:]) < 0.5 * np.mean(kp[:5]), (kp[:5], kp[-5:])
    with pytest.raises(ValueError, match="algo.aux_keypoints must be >= 0 and needs algo.aux_object > 0 with algo.aux_target=colours"):
        SFTConfig(aux_object=1.0, aux_target="grounded", aux_keypoints=1.0)
    with pytest.raises(ValueError, match=r"set policy.backbone.vision.keypoints >= 3"):
        train(_cfg(dataset, tmp_path / "kp2", *common, "policy.backbone.vision.keypoints=2", "algo.aux_keypoints=1.0"),
              progress=False)


def test_keypoints_tied_to_pixel_places_learn_to_sit_on_the_candidate(dataset, tmp_path, monkeypatch):
    """algo.aux_keypoint_target=pixels: keypoints 0-2 must sit where each colour is drawn and keypoint 3 where the
    named one is, in pixels, through the random shift. Tiny learning: on frames whose bright square is every
    candidate, the smooth-L1 distance starts where flat maps put the keypoints (the image centre: ~8 px from the
    squares) and falls below a third of that; four keypoints are needed (one line otherwise); an unknown target is
    refused in one line."""
    import rlvla.collectors.layouts as layouts
    from rlvla.configs import SFTConfig
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    monkeypatch.setattr(layouts, "layout_frames", _fake_layout_frames([]))
    common = ["algo.aux_object=1.0", "algo.aux_target=colours", "algo.aux_warmup=150", "train.steps=150", "algo.aux_batch=64",
              "algo.aux_keypoints=20.0", "algo.aux_keypoint_target=pixels", "policy.backbone.vision.random_shift=4"]  # fmt: skip
    run = tmp_path / "px"
    out = train(_cfg(dataset, run, *common, "policy.backbone.vision.keypoints=4"), progress=False)
    kp = [r["aux_keypoint_loss"] for r in read_metrics(run)]
    assert out["status"] == "done" and len(kp) == 150 and 5 < np.mean(kp[:3]) < 12, kp[:3]
    assert np.mean(kp[-5:]) < np.mean(kp[:5]) / 3, (kp[:5], kp[-5:])
    with pytest.raises(ValueError, match=r"ties 4 keypoints: set policy.backbone.vision.keypoints >= 4"):
        train(_cfg(dataset, tmp_path / "px2", *common, "policy.backbone.vision.keypoints=3"), progress=False)
    with pytest.raises(ValueError, match="unknown algo.aux_keypoint_target 'world'; valid: affine, pixels"):
        SFTConfig(aux_object=1.0, aux_target="colours", aux_keypoints=1.0, aux_keypoint_target="world")


def test_cloning_without_the_layout_batch_after_the_warmup(dataset, tmp_path, monkeypatch):
    """algo.aux_clone=0: after the warm-up no layout batch is drawn (no ``aux_object_loss`` in the cloning rows,
    and the layout loss is computed on warm-up steps only: 5 calls in a 5 + 3 step run); a weight > 0 draws it at
    every step; a negative weight, or aux_clone=0 with no warm-up (frames no step would use), is refused in one line."""
    import rlvla.collectors.layouts as layouts
    from rlvla.algos.offline.sft import SFT
    from rlvla.configs import SFTConfig
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    monkeypatch.setattr(layouts, "layout_frames", _fake_layout_frames([]))
    run = tmp_path / "clone0"
    train(_cfg(dataset, run, "algo.aux_object=1.0", "algo.aux_warmup=10", "algo.aux_clone=0", "train.steps=20"), progress=False)
    rows = read_metrics(run)
    assert all("aux_object_loss" in r for r in rows[:10]) and not any("aux_object_loss" in r for r in rows[10:])
    assert all("bc_loss" in r for r in rows[10:])
    calls = []
    monkeypatch.setattr(SFT, "_object_loss", lambda self: calls.append(1) or torch.zeros((), requires_grad=True))
    for weight, expected in (("0", 5), ("0.5", 8)):
        calls.clear()
        train(_cfg(dataset, tmp_path / f"clone_{weight}", "algo.aux_object=1.0", "algo.aux_warmup=5", f"algo.aux_clone={weight}",
                   "train.steps=8"), progress=False)  # fmt: skip
        assert len(calls) == expected
    with pytest.raises(ValueError, match="algo.aux_clone and algo.lang_noise must be >= 0"):
        SFTConfig(aux_object=1.0, aux_clone=-1.0)
    with pytest.raises(ValueError, match="algo.aux_clone=0 without algo.aux_warmup renders layout frames that no step uses"):
        SFTConfig(aux_object=1.0, aux_clone=0.0)


def test_instruction_noise_is_sfts_own_and_has_its_scale(dataset, tmp_path):
    """algo.lang_noise: known answer for the noise the backbone adds to the instruction embedding in training mode
    (vector norm ~ the setting: 0.5 +- 5% over 400 samples of 384 dims); none in eval mode or at the default;
    after an SFT run the policy's backbone carries no noise (RL and evaluation see the embedding as it is); a
    negative setting is refused in one line."""
    from rlvla.configs import SFTConfig
    from rlvla.policies import VLAPolicy
    from rlvla.runners.train import train

    captured = []
    out = train(_cfg(dataset, tmp_path / "ln", "algo.lang_noise=0.5", "train.steps=3"), progress=False)
    policy = VLAPolicy.from_pretrained(out["policy"])
    assert policy.backbone.lang_noise == 0.0
    hook = policy.backbone.lang_proj.register_forward_hook(lambda m, i, o: captured.append(i[0].detach().clone()))
    from rlvla.policies.backbone import Inputs

    inputs = Inputs(torch.zeros(400, 1, 64, 64, 3, dtype=torch.uint8), torch.zeros(400, 4), ["push the puck"] * 400)
    policy.train()
    policy.backbone(inputs)  # default: no noise, even in training mode
    policy.backbone.lang_noise = 0.5
    policy.backbone(inputs)
    policy.eval()
    policy.backbone(inputs)  # eval mode: none
    hook.remove()
    clean, noisy, evaluated = captured
    assert torch.allclose(clean, evaluated) and torch.allclose(clean[0], clean[-1])
    norms = (noisy - clean).norm(dim=-1)
    assert abs(float(norms.mean()) - 0.5) < 0.025
    with pytest.raises(ValueError, match="algo.aux_clone and algo.lang_noise must be >= 0"):
        SFTConfig(lang_noise=-0.1)


def test_restarted_schedule_gives_the_cloning_stage_its_own_warmup(dataset, tmp_path, monkeypatch):
    """algo.aux_restart: known answer for the learning rate at every step of a 10 + 10 step run with a 4-step
    warm-up: the layout stage climbs 1/4, 2/4, ... of train.lr and stays there; the cloning stage climbs again and
    decays by its own cosine to 10% at its end; without it one schedule spans the run (cloning starts decayed)."""
    import math

    import rlvla.collectors.layouts as layouts
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    monkeypatch.setattr(layouts, "layout_frames", _fake_layout_frames([]))

    def expected(step, total):
        if step < 4:
            return 3e-4 * (step + 1) / 4
        return 3e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 4) / (total - 4)))))

    lrs = {}
    for name, extra in (("restart", ("algo.aux_restart=true",)), ("one", ())):
        run = tmp_path / name
        train(_cfg(dataset, run, "algo.aux_object=1.0", "algo.aux_warmup=10", "train.steps=20", "train.warmup_steps=4",
                   "train.log_every=1", "train.lr=3e-4", *extra), progress=False)  # fmt: skip
        lrs[name] = [r["lr"] for r in read_metrics(run)]
    warm = [3e-4 * min(1.0, (s + 1) / 4) for s in range(10)]  # the warm-up: a ramp, then the full rate
    assert np.allclose(lrs["restart"], warm + [expected(s, 10) for s in range(10)])
    assert np.allclose(lrs["one"], [expected(s, 20) for s in range(20)])


def test_layout_target_warmup_trains_the_trunk_alone_before_cloning(dataset, tmp_path, monkeypatch):
    """algo.aux_warmup=N: the first N steps train only the layout target. Known answer: after a run made only of
    warm-up steps the action head is exactly its initial value (it got no gradient) while the trunk moved and the
    target's loss fell; after the warm-up, behaviour cloning runs as usual; a warm-up without the target is refused."""
    from safetensors.torch import load_file

    import rlvla.collectors.layouts as layouts
    from rlvla.configs import SFTConfig
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    monkeypatch.setattr(layouts, "layout_frames", _fake_layout_frames([]))
    runs = {}
    for name, steps in (("one", 1), ("warm", 60)):
        runs[name] = tmp_path / name
        out = train(_cfg(dataset, runs[name], "algo.aux_object=1.0", "algo.aux_warmup=60", f"train.steps={steps}"), progress=False)
        assert out["status"] == "done"
    one, warm = (load_file(str(runs[n] / "policy" / "model.safetensors")) for n in ("one", "warm"))
    head = [k for k in warm if k.startswith("head.")]
    assert head and all(torch.equal(one[k], warm[k]) for k in head)
    assert any(not torch.equal(one[k], warm[k]) for k in warm if k.startswith("backbone."))
    rows = read_metrics(runs["warm"])
    assert all(r["aux_warmup"] == 1.0 and "bc_loss" not in r for r in rows)
    aux = [r["aux_object_loss"] for r in rows]
    assert np.mean(aux[-5:]) < 0.5 * np.mean(aux[:5])
    run = tmp_path / "then_bc"
    train(_cfg(dataset, run, "algo.aux_object=1.0", "algo.aux_warmup=10", "train.steps=20"), progress=False)
    rows = read_metrics(run)
    assert [r.get("aux_warmup", 0.0) for r in rows] == [1.0] * 10 + [0.0] * 10
    assert all("bc_loss" in r for r in rows[10:])
    with pytest.raises(ValueError, match="algo.aux_warmup must be >= 0 and needs algo.aux_object > 0"):
        SFTConfig(aux_warmup=100)


def test_layout_frames_are_the_simulators_layouts_on_training_seeds():
    """Known answer: each layout's object position is the one a fresh env reports at that seed's reset; two frames
    per layout, the second after the arm moved; the seeds lie in RL's training range, off the validation slice."""
    from rlvla.collectors.layouts import LAYOUT_SEED_OFFSET, layout_frames
    from rlvla.envs import make_env
    from rlvla.envs.splits import RL_SEEDS, VALIDATION_SEEDS

    f = layout_frames(["reach-v3"], 3, 32, ("corner",), moves=4)
    assert f["images"].shape == (6, 1, 32, 32, 3) and f["images"].dtype == np.uint8 and f["proprio"].shape == (6, 4)
    env = make_env("reach-v3", image_size=32)
    try:
        for k in range(3):
            obs, info = env.reset(seed=LAYOUT_SEED_OFFSET + k)
            assert np.allclose(f["obj_pos"][2 * k], info["obj_pos"][:3], atol=1e-6)
            assert np.allclose(f["goal_pos"][2 * k], info["goal_pos"][:3], atol=1e-6)
            assert np.array_equal(f["images"][2 * k, 0], obs["image"]) and f["instructions"][2 * k] == obs["instruction"]
            assert np.abs(f["proprio"][2 * k + 1, :3] - f["proprio"][2 * k, :3]).max() > 0.002  # the hand moved
            assert not np.array_equal(f["images"][2 * k + 1], f["images"][2 * k])  # and its frame is a new render
    finally:
        env.close()
    assert LAYOUT_SEED_OFFSET + 3 <= RL_SEEDS.stop <= VALIDATION_SEEDS.start
    assert list(f["target_rank"]) == [-1] * 6 and f["colour_pos"].shape == (6, 0)  # one goal: no candidate to name
    assert f["colour_px"].shape == (6, 0) and list(f["named_colour"]) == [-1] * 6
    # the grounded suite: the named candidate's place among the candidates, left to right in x
    g = layout_frames(["grounded/reach"], 4, 32, ("corner",), moves=0)
    env = make_env("grounded/reach", image_size=32)
    try:
        for k in range(4):
            _, info = env.reset(seed=LAYOUT_SEED_OFFSET + k)
            xs = info["candidates"][:, 0]
            assert g["target_rank"][k] == int(np.sum(xs < xs[info["target_index"]]))
            assert np.allclose(g["goal_pos"][k], info["candidates"][info["target_index"]], atol=1e-6)
            by_name = dict(zip(info["colours"], info["candidates"]))  # every candidate, in the order of its colour's name
            assert np.allclose(g["colour_pos"][k], np.concatenate([by_name[c] for c in sorted(by_name)]), atol=1e-6)
            px = dict(zip(info["colours"], env.candidate_pixels()))  # where the camera draws each, by colour name
            assert np.allclose(g["colour_px"][k], np.concatenate([px[c] for c in sorted(px)]), atol=1e-4)
            assert sorted(px)[g["named_colour"][k]] == info["target_colour"]
    finally:
        env.close()
    with pytest.raises(ValueError, match="layout frames need layouts >= 1"):
        layout_frames(["reach-v3"], 0, 32, ("corner",))
    # the same call again in this process: the same frames, not rendered again; other arguments render anew
    assert layout_frames(["grounded/reach"], 4, 32, ("corner",), moves=0) is g
    h = layout_frames(["grounded/reach"], 4, 32, ("corner",), moves=0, seed=1)
    assert h is not g and np.array_equal(h["images"][:3], g["images"][1:])  # seed 1 starts one layout later


def test_proprio_noise_adds_noise_in_units_of_the_dataset_std(dataset, tmp_path, monkeypatch):
    """algo.proprio_noise: the state the SFT loss sees is the recorded state plus Gaussian noise whose std is the
    setting times the policy's per-dimension proprio std (known answer on 20 000 draws, within 3%); the batch
    itself is not modified; a negative setting is refused; a run with it trains and records it."""
    from rlvla.algos.offline.sft import noisy_proprio
    from rlvla.configs import SFTConfig
    from rlvla.runners.train import train

    state = torch.zeros(20_000, 3)
    batch = {"observation.state": state, "task": ["a"] * 20_000}
    std = torch.tensor([0.5, 2.0, 0.1])
    torch.manual_seed(0)
    out = noisy_proprio(batch, std)
    assert torch.allclose(out["observation.state"].std(0), std, rtol=0.03)
    assert out["observation.state"].mean(0).abs().max() < 0.05
    assert batch["observation.state"] is state and float(state.abs().sum()) == 0.0 and out["task"] is batch["task"]
    with pytest.raises(ValueError, match="algo.proprio_noise must be >= 0"):
        SFTConfig(proprio_noise=-0.1)
    import rlvla.algos.offline.sft as sft_module

    seen = []
    monkeypatch.setattr(sft_module, "noisy_proprio", lambda b, s: seen.append(s.clone()) or noisy_proprio(b, s))
    run = tmp_path / "noise"
    assert train(_cfg(dataset, run, "algo.proprio_noise=0.5", "train.steps=3"), progress=False)["status"] == "done"
    assert "proprio_noise: 0.5" in (run / "config.yaml").read_text()
    from safetensors.torch import load_file

    saved_std = load_file(str(run / "policy" / "model.safetensors"))["backbone.proprio_std"]
    assert not torch.allclose(saved_std, torch.ones_like(saved_std))  # the dataset's std, not the identity default
    assert len(seen) == 3 and all(torch.allclose(s, 0.5 * saved_std) for s in seen)  # every step, scaled by it


def test_sft_fills_the_instruction_prototypes_and_the_policy_keeps_them(dataset, tmp_path):
    """policy.backbone.language.prototype_temperature > 0: SFT groups its dataset's instructions (each with its
    suite's training paraphrases: for MetaWorld, every training instruction of the task), the saved policy carries
    the groups in its config and reads an instruction as the softmax(cos / T) mix of the groups' normalised mean
    embeddings (known answer for two groups); a policy with the setting but no prototypes fails in one line; a bad
    setting is refused at composition."""
    from rlvla.configs import compose, policy_config
    from rlvla.envs.metaworld.instructions import INSTRUCTIONS
    from rlvla.policies import VLAPolicy
    from rlvla.policies.config import LanguageConfig
    from rlvla.policies.encoders import LanguageEncoder, embed_instructions
    from rlvla.runners.train import train

    out = train(_cfg(dataset, tmp_path / "proto", "policy.backbone.language.encoder=minilm",
                     "policy.backbone.language.prototype_temperature=0.05", "train.steps=2"), progress=False)  # fmt: skip
    policy = VLAPolicy.from_pretrained(out["policy"])
    lang = policy.backbone.language
    groups = [sorted({f"do {t}", *INSTRUCTIONS[t]["train"]}) for t in ("push-v3", "reach-v3")]
    assert sorted(lang.cfg.prototypes) == sorted(groups)
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    protos = torch.stack([unit(unit(embed_instructions(g)).mean(0)) for g in lang.cfg.prototypes])
    texts = ["do reach-v3", "push the puck to the goal", "an instruction from nowhere"]
    w = torch.softmax(unit(embed_instructions(texts)) @ protos.T / 0.05, dim=-1)
    assert torch.allclose(lang(texts, torch.device("cpu")), w @ protos, atol=1e-5)
    assert float(w[0, lang.cfg.prototypes.index(groups[1])]) > 0.9  # reach's instruction reads as reach's prototype
    with pytest.raises(ValueError, match="prototype_temperature > 0 but the policy has no prototypes"):
        LanguageEncoder(LanguageConfig(prototype_temperature=0.05))(["do reach-v3"], torch.device("cpu"))
    for bad, msg in (("-1", "must be >= 0"), ("0.05 policy.backbone.language.freeze=false", "needs the frozen minilm")):
        first, *rest = bad.split()
        with pytest.raises(ValueError, match=msg):
            policy_config(compose([f"policy.backbone.language.prototype_temperature={first}", *rest]))


def test_cross_task_prototype_mixing_is_sfts_own_and_has_its_law(dataset, tmp_path):
    """algo.lang_mix: known answer for the mix (each mixed row is w * its own prototype + (1 - w) * a partner's,
    w in [0.5, 1], over 400 rows about half mixed at p = 0.5, every partner drawn); rows whose prototype has no
    partner stay; the partners are the groups of other env tasks; SFT leaves no mixing on the saved policy; without
    prototypes the setting is refused in one line."""
    from rlvla.data.lerobot import LeRobotDataset
    from rlvla.policies import VLAPolicy
    from rlvla.runners.train import prototype_groups, prototype_partners, train

    ds = LeRobotDataset(dataset)
    groups = prototype_groups(ds, range(ds.num_episodes))
    partners = prototype_partners(groups, ds, range(ds.num_episodes))
    assert partners == [[1], [0]]  # push's group and reach's: each the other's partner
    out = train(_cfg(dataset, tmp_path / "mix", "policy.backbone.language.encoder=minilm", "algo.lang_mix=0.5",
                     "policy.backbone.language.prototype_temperature=0.05", "train.steps=2"), progress=False)  # fmt: skip
    policy = VLAPolicy.from_pretrained(out["policy"])
    assert policy.backbone.lang_mix is None
    lang = policy.backbone.language
    snapped = lang(["do reach-v3"] * 400, torch.device("cpu"))
    protos = lang._protos
    torch.manual_seed(0)
    mixed = lang.mix_partners(snapped, 0.5, partners)
    w = torch.linalg.lstsq(protos.T, mixed.T).solution.T  # each row's weights on the two prototypes
    w0 = torch.linalg.lstsq(protos.T, snapped[:1].T).solution.T[0]
    changed = (mixed - snapped).norm(dim=-1) > 1e-6
    assert 150 < int(changed.sum()) < 250
    own = lang.cfg.prototypes.index(next(g for g in lang.cfg.prototypes if "do reach-v3" in g))
    scale = w[changed, own] / w0[own]  # the own prototype's share kept: w
    assert float(scale.min()) >= 0.5 - 1e-4 and float(scale.max()) <= 1 + 1e-4 and float(scale.min()) < 0.55
    assert torch.allclose(w[changed].sum(-1), torch.ones(int(changed.sum())), atol=1e-4)
    assert torch.equal(lang.mix_partners(snapped, 1.0, [[], []]), snapped)  # no partner: unchanged
    with pytest.raises(ValueError, match="algo.lang_mix mixes instruction prototypes; set policy.backbone.language.prototype_temperature"):
        train(_cfg(dataset, tmp_path / "nomix", "policy.backbone.language.encoder=minilm", "algo.lang_mix=0.5"), progress=False)
    assert not (tmp_path / "nomix").exists()  # refused before the run dir is made
    # one env task: no partner anywhere, so the setting would silently do nothing; refused instead
    with pytest.raises(ValueError, match="has instructions of one env task only"):
        train(_cfg(_write_dataset(tmp_path / "one", ("reach-v3",)), tmp_path / "onetask", "algo.lang_mix=0.5",
                   "policy.backbone.language.encoder=minilm", "policy.backbone.language.prototype_temperature=0.05"),
              progress=False)  # fmt: skip
