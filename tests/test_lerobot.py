"""LeRobot v3.0 datasets: layout, exact round trip, crash safety, resume, corrupt files, batch schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rlvla.data import lerobot as L
from rlvla.data.lerobot import DatasetError, LeRobotDataset, LeRobotWriter
from rlvla.data.schema import Batch, BatchError

FEATURES = {
    "observation.images.corner": {"dtype": "image", "shape": [16, 16, 3], "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": [4], "names": None},
    "action": {"dtype": "float32", "shape": [4], "names": None},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
    "next.success": {"dtype": "bool", "shape": [1], "names": None},
}


def random_episode(rng, n):
    done = np.zeros(n, bool)
    done[-1] = True
    return {
        "observation.images.corner": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=(n, 4)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 4)).astype(np.float32),
        "next.reward": rng.normal(size=n).astype(np.float32),
        "next.done": done,
        "next.success": rng.random(n) < 0.5,
    }


def write(root, episodes, **kw):
    w = LeRobotWriter(root, features=FEATURES, fps=10, **kw)
    for i, ep in enumerate(episodes):
        w.add_episode(ep, task=f"instruction {i % 2}", meta={"env_task": "t", "layout_seed": i})
    return w


def test_layout_and_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    eps = [random_episode(rng, n) for n in (5, 9, 3)]
    write(tmp_path, eps)
    for rel in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet"):  # fmt: skip
        assert (tmp_path / rel).is_file(), rel
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 17
    assert info["features"]["observation.images.corner"]["dtype"] == "image"
    # images are PNG in struct<bytes, path>, as LeRobot stores image features
    table = pq.read_table(tmp_path / "data/chunk-000/file-000.parquet")
    first = table.column("observation.images.corner")[0].as_py()
    assert first["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    assert "huggingface" in {k.decode() for k in table.schema.metadata}
    ds = LeRobotDataset(tmp_path)
    assert ds.num_episodes == 3 and len(ds) == 17 and ds.tasks == ["instruction 0", "instruction 1"]
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        for k, v in ep.items():
            np.testing.assert_array_equal(got[k].reshape(v.shape), v, err_msg=k)
        assert list(got["frame_index"]) == list(range(len(ep["action"])))
        assert set(got["task"]) == {f"instruction {i % 2}"}
    # stats agree with the data
    st = ds.stats
    allstate = np.concatenate([e["observation.state"] for e in eps])
    np.testing.assert_allclose(st["observation.state"]["mean"], allstate.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st["observation.state"]["std"], allstate.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st["observation.state"]["min"], allstate.min(0), rtol=1e-6)
    assert np.asarray(st["observation.images.corner"]["mean"]).shape == (3, 1, 1)
    assert st["action"]["count"][0] == 17


def test_files_roll_over_and_batches_cover_every_frame_once(tmp_path):
    rng = np.random.default_rng(1)
    eps = [random_episode(rng, 20) for _ in range(6)]
    write(tmp_path, eps, data_files_size_in_mb=0.01)  # tiny files: several data files
    ds = LeRobotDataset(tmp_path)
    assert len(ds.data_files()) > 1
    seen = []
    for batch in ds.iter_batches(batch_size=7, shuffle=True, seed=3):
        assert isinstance(batch, Batch)
        batch.validate(["observation.images.corner", "observation.state", "action", "next.reward"])
        assert batch["observation.images.corner"].dtype == torch.uint8
        seen.extend(batch["index"].tolist())
    assert sorted(seen) == list(range(120))
    unshuffled = [b["index"] for b in ds.iter_batches(batch_size=50, shuffle=False)]
    assert torch.cat(unshuffled).tolist() == list(range(120))
    # round trip holds across files
    np.testing.assert_array_equal(ds.episode(5)["action"], eps[5]["action"])


def test_crash_mid_episode_leaves_every_completed_episode(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    eps = [random_episode(rng, 6) for _ in range(4)]
    w = write(tmp_path, eps[:3])
    real = L.atomic_write_json

    def crash(path, obj):
        if Path(path).name == "info.json":
            raise KeyboardInterrupt("simulated crash before the commit point")
        real(path, obj)

    monkeypatch.setattr(L, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        w.add_episode(eps[3], task="late")
    monkeypatch.setattr(L, "atomic_write_json", real)
    ds = LeRobotDataset(tmp_path)
    assert ds.num_episodes == 3 and len(ds) == 18
    np.testing.assert_array_equal(ds.episode(2)["action"], eps[2]["action"])
    assert sum(b["action"].shape[0] for b in ds.iter_batches(4)) == 18
    # and writing continues from the committed state
    w2 = LeRobotWriter(tmp_path)
    w2.add_episode(eps[3], task="late")
    ds = LeRobotDataset(tmp_path)
    assert ds.num_episodes == 4
    np.testing.assert_array_equal(ds.episode(3)["observation.images.corner"], eps[3]["observation.images.corner"])


def test_killed_collection_reads_back_and_resumes(tmp_path):
    """A real `rlvla collect` killed mid-run leaves a readable dataset; rerunning completes it."""
    out = tmp_path / "demos"
    cmd = [sys.executable, "-m", "rlvla.cli", "collect", "--tasks", "reach,button-press-topdown",
           "--episodes", "4", "--out", str(out), "--workers", "1", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    info = out / "meta" / "info.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if info.exists() and json.loads(info.read_text())["total_episodes"] >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"collect ended early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ds = LeRobotDataset(out)
    n = ds.num_episodes
    assert 2 <= n < 8
    for i in range(n):
        ep = ds.episode(i)
        assert ep["next.done"][-1] and not ep["next.done"][:-1].any()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 8
    tasks = [e["env_task"] for e in ds.episodes]
    assert tasks.count("reach-v3") == 4 and tasks.count("button-press-topdown-v3") == 4
    seeds = [(e["env_task"], e["layout_seed"]) for e in ds.episodes]
    assert len(set(seeds)) == 8, "a resumed run must not repeat layouts"
    assert all(e["success"] for e in ds.episodes)


def test_missing_and_corrupt_files_are_named(tmp_path):
    rng = np.random.default_rng(3)
    write(tmp_path, [random_episode(rng, 4) for _ in range(2)])
    data = tmp_path / "data/chunk-000/file-000.parquet"
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    ds = LeRobotDataset(tmp_path)
    with pytest.raises(DatasetError, match=r"file-000\.parquet: corrupt parquet"):
        ds.episode(0)
    data.unlink()
    with pytest.raises(DatasetError, match=r"file-000\.parquet: file is missing"):
        list(ds.iter_batches(2))
    (tmp_path / "meta/info.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"info\.json: corrupt JSON"):
        LeRobotDataset(tmp_path)
    (tmp_path / "meta/info.json").unlink()
    with pytest.raises(DatasetError, match=r"info\.json: file is missing"):
        LeRobotDataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        LeRobotDataset(tmp_path / "nowhere")


def test_writer_refuses_nan_and_mismatched_frames(tmp_path):
    rng = np.random.default_rng(4)
    w = LeRobotWriter(tmp_path, features=FEATURES)
    ep = random_episode(rng, 3)
    ep["next.reward"][1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        w.add_episode(ep, "x")
    ep = random_episode(rng, 3)
    ep["action"] = ep["action"][:2]
    with pytest.raises(ValueError, match="same, non-zero number of frames"):
        w.add_episode(ep, "x")
    del ep["action"]
    with pytest.raises(ValueError, match=r"missing \['action'\]"):
        w.add_episode(ep, "x")


def test_batch_schema_errors_at_the_boundary():
    ok = Batch({"observation.state": torch.zeros(5, 4), "action": torch.zeros(5, 3, 4), "next.reward": torch.zeros(5),
                "task": ["a"] * 5})  # fmt: skip
    ok.validate(["observation.state", "action"])
    with pytest.raises(BatchError, match="missing 'next.done'"):
        ok.validate(["next.done"])
    with pytest.raises(BatchError, match="dtype"):
        Batch({"next.reward": torch.zeros(5, dtype=torch.float64)}).validate()
    with pytest.raises(BatchError, match="leading shape"):
        Batch({"next.reward": torch.zeros(5), "next.done": torch.zeros(4, dtype=torch.bool)}).validate()
    with pytest.raises(BatchError, match="action"):
        Batch({"next.reward": torch.zeros(5), "action": torch.zeros(4, 4)}).validate()
    with pytest.raises(BatchError, match="task"):
        Batch({"next.reward": torch.zeros(5), "task": ["a"]}).validate()
    with pytest.raises(BatchError, match=r"\(\*B, H, W, 3\)"):
        Batch({"observation.images.corner": torch.zeros(5, 8, 8, dtype=torch.uint8)}).validate()
