"""The `rlvla` command: bad input gives one clear line; the quickstart and benchmark run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def rlvla(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "rlvla.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["collect", "--tasks", "reach,flyaway", "--episodes", "1", "--out", "X"], "unknown task 'flyaway'"),
        (["collect", "--tasks", "reach", "--cameras", "front", "--episodes", "1", "--out", "X"], "unknown camera 'front'"),
        (["collect", "--tasks", "reach", "--episodes", "0", "--out", "X"], "--episodes must be >= 1"),
        (["collect", "--tasks", "reach", "--episodes", "1", "--seed-offset", "1000000", "--out", "X"], "training seed range"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    args = [a if a != "X" else str(tmp_path / "d") for a in args]
    r = rlvla(*args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "d" / "meta").exists()


def test_tasks_lists_choices():
    r = rlvla("tasks", "--json")
    info = json.loads(r.stdout)
    assert len(info["tasks"]) == 50 and "mt10" in info["task_sets"] and "ood-camera" in info["splits"]
    assert info["suites"] == ["grounded", "metaworld", "wm"] and info["default_suite"] == "metaworld"
    assert info["suite_tasks"]["grounded"] == ["grounded/reach", "grounded/push", "grounded/pick-place",
                                               "grounded/button-press-topdown"]  # fmt: skip


def test_collect_then_read(tmp_path):
    from rlvla.data.lerobot import LeRobotDataset

    r = rlvla("collect", "--tasks", "drawer-close,reach", "--episodes", "2", "--out", str(tmp_path / "d"),
              "--workers", "2", "--noise", "0.05", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    ds = LeRobotDataset(tmp_path / "d")
    assert ds.num_episodes == 4
    b = next(ds.iter_batches(16))
    b.validate(["observation.images.corner", "observation.state", "action", "next.reward", "next.success"])
    assert b["observation.images.corner"].shape[1:] == (64, 64, 3)
    assert all(t in [s for e in ds.episodes for s in e["tasks"]] for t in b["task"])
    assert [e["env_task"] for e in ds.episodes] == ["drawer-close-v3", "reach-v3"] * 2


def test_bench_env_reports_every_ratio():
    from rlvla.bench.env import bench_env

    r = bench_env(task="reach-v3", steps=80)
    for k in ("raw_steps_per_s", "raw_full_meshes_steps_per_s", "wrapper_steps_per_s", "async2_steps_per_s", "chunk4_steps_per_s"):
        assert r[k] > 0
    assert set(r["ratios"]) >= {"chunk4_vs_chunk1", "simplified_vs_full_meshes"} and r["ratios"]["chunk4_vs_chunk1"] > 0
    # how much faster chunking is, is a benchmark figure (BENCHMARKS.md), not a unit-test threshold: the render count
    # behind it is checked exactly in test_envs.py (test_a_chunk_renders_once)


def test_quickstart_help_states_the_presets():
    """Each preset default that `rlvla quickstart --help` quotes is the preset's value (plain and grounded), so the help
    cannot drift from the presets when a budget changes."""
    from rlvla.cli import _parser
    from rlvla.runners.quickstart import PRESETS

    sub = next(a for a in _parser()._actions if isinstance(a.choices, dict) and "quickstart" in a.choices)
    helps = {a.dest: a.help for a in sub.choices["quickstart"]._actions}
    plain, grounded = PRESETS["quickstart"], PRESETS["grounded/quickstart"]
    for field in ("episodes", "steps", "budget", "rl_budget", "baseline_steps", "eval_max_steps"):
        a, b = (f"{getattr(p, field):g}" for p in (plain, grounded))
        assert f"preset: {a}, grounded {b}" in helps[field], (field, helps[field])
