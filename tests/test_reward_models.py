"""Learned reward models: labels from data (known answers), the metrics they are judged by (against scipy and
brute force), tiny-learning (a classifier separating two synthetic image classes; a progress regressor ordering
frames; a preference model ranking trajectories), save/load and refusals.

The synthetic dataset: every episode of task ``reach-v3`` shows a square that moves from the left edge to the
right; an episode succeeds when it reaches the right third (from then on its frames are success frames), a
failed one stops in the middle. Images are otherwise noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvla.data.lerobot import DatasetError, LeRobotDataset, LeRobotWriter
from rlvla.runners.collect import features

IMG = 16
T = 12


def _frame(rng, x: int) -> np.ndarray:
    im = rng.integers(0, 60, (IMG, IMG, 3), dtype=np.uint8)
    im[6:10, x : x + 4] = (250, 250, 250)
    return im


def _write(root, episodes: int = 16, seed: int = 0, seeds: str = "train"):
    w = LeRobotWriter(root, features(("corner",), IMG), episode_meta={"env_task": "string", "seeds": "string"})
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        ok = e % 2 == 0
        xs = np.linspace(0, IMG - 4, T).astype(int) if ok else np.linspace(0, 6, T).astype(int)
        nxt = np.zeros(T, bool)
        if ok:
            nxt[np.flatnonzero(np.r_[xs[1:], xs[-1]] >= 10)] = True  # the state after step t is in the right third
        frames = {
            "observation.images.corner": np.stack([_frame(rng, x) for x in xs]),
            "observation.state": np.zeros((T, 4), np.float32), "action": np.zeros((T, 4), np.float32),
            "next.reward": nxt.astype(np.float32) + xs / 20, "next.done": np.r_[np.zeros(T - 1, bool), True],
            "next.terminated": np.zeros(T, bool), "next.truncated": np.r_[np.zeros(T - 1, bool), True],
            "next.success": nxt, "next.return": np.zeros(T, np.float32),
        }  # fmt: skip
        w.add_episode(frames, "move the square to the right", meta={"env_task": "reach-v3", "seeds": seeds})
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("rm") / "train")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("rm") / "heldout", episodes=8, seed=1, seeds="eval")


def test_labels_known_answer(data):
    from rlvla.data.frames import LabelledFrames

    f = LabelledFrames(LeRobotDataset(data), ["corner"], IMG)
    s, e = f.starts[0], f.ends[0]  # a successful episode
    nxt = np.asarray(LeRobotDataset(data).episode(0)["next.success"]).reshape(-1)
    assert f.success[s:e].tolist() == [False] + nxt[:-1].tolist()  # frame t shows the state after step t - 1
    t_s = int(np.flatnonzero(f.success[s:e])[0])
    assert np.allclose(f.progress[s:e], np.minimum(1, np.arange(T) / t_s))
    assert np.isnan(f.progress[f.starts[1] : f.ends[1]]).all()  # a failure has no time-index progress
    assert not f.success[f.starts[1] : f.ends[1]].any()
    b = f.balanced_indices(3, 10, 0)
    assert f.success[b].sum() == 5 and np.array_equal(b, f.balanced_indices(3, 10, 0))  # balanced, a function of (seed, step)
    win, lose = f.preference_pairs(0, 4, 3, 0)
    assert f.episode_success[win[:, 0]].all() and not f.episode_success[lose[:, 0]].any()


def test_roc_auc_and_spearman_known_answers():
    from scipy.stats import spearmanr

    from rlvla.eval.metrics import roc_auc, spearman

    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    y = rng.random(60) < 0.4
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert roc_auc(s, y) == pytest.approx(brute, abs=1e-12)
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0 and roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert np.isnan(roc_auc([1, 2], [True, True]))
    x, z = rng.integers(0, 6, 40), rng.normal(size=40)
    assert spearman(x, z) == pytest.approx(spearmanr(x, z).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)


def _train(data, run_dir, kind, steps=120, *extra):
    from rlvla.configs import compose
    from rlvla.runners.train import train

    cfg = compose(["algo=reward_model", f"algo.kind={kind}", "algo.width=8", "algo.depth=2", "algo.hidden=32",
                   "algo.language=none", "algo.random_shift=0", f"data.path={data}", f"run_dir={run_dir}", f"train.steps={steps}",
                   "train.batch_size=32", "train.lr=3e-3", "train.warmup_steps=5", "train.ckpt_every=50", *extra])  # fmt: skip
    return train(cfg, progress=False)


def test_success_classifier_separates_two_image_classes(data, heldout, tmp_path, one_thread):
    """Tiny learning: held-out (evaluation-seed) frames are ranked by the classifier far above chance."""
    from rlvla.data.frames import LabelledFrames
    from rlvla.rewards.models import RewardModel
    from rlvla.runners.reward import evaluate_reward_model

    s = _train(data, tmp_path / "succ", "success")
    m = RewardModel.from_pretrained(tmp_path / "succ")  # the run dir resolves to its final model
    res = evaluate_reward_model(m, LabelledFrames(LeRobotDataset(heldout), ["corner"], IMG, trainable=False))
    assert s["status"] == "done" and res["frame_auc"] > 0.95 and res["episode_auc"] > 0.95, res
    assert res["false_success_rate"] == 0.0
    untrained = RewardModel(m.cfg)
    before = evaluate_reward_model(untrained, LabelledFrames(LeRobotDataset(heldout), ["corner"], IMG, trainable=False))
    assert before["frame_auc"] < res["frame_auc"] - 0.1  # the learning did it, not the architecture


def test_progress_regressor_orders_frames_and_preference_model_ranks_episodes(data, heldout, tmp_path, one_thread):
    from rlvla.data.frames import LabelledFrames
    from rlvla.rewards.models import RewardModel
    from rlvla.runners.reward import evaluate_reward_model

    frames = LabelledFrames(LeRobotDataset(heldout), ["corner"], IMG, trainable=False)
    _train(data, tmp_path / "prog", "progress", 200)
    res = evaluate_reward_model(RewardModel.from_pretrained(tmp_path / "prog"), frames)
    assert res["spearman_mean"] > 0.8, res
    _train(data, tmp_path / "pref", "preference", 100, "algo.pair_frames=4")
    res = evaluate_reward_model(RewardModel.from_pretrained(tmp_path / "pref"), frames)
    assert res["pair_accuracy"] > 0.9 and res["episode_auc"] > 0.9, res


def test_reward_model_round_trip_refusals_and_resume(data, tmp_path, one_thread):
    from rlvla.errors import CheckpointError
    from rlvla.rewards.models import RewardModel

    _train(data, tmp_path / "a", "success", 20)
    m = RewardModel.from_pretrained(tmp_path / "a")
    im = {"corner": torch.randint(0, 255, (3, IMG, IMG, 3), dtype=torch.uint8)}
    again = RewardModel.from_pretrained(tmp_path / "a" / "policy")
    assert torch.equal(m.score(im, ["x"] * 3), again.score(im, ["x"] * 3))
    with pytest.raises(ValueError, match="trained on .*reach-v3.*not on .*push-v3"):
        m.check_compatible(["push-v3"], ["corner"], IMG)
    with pytest.raises(ValueError, match="reads camera.*corner"):
        m.check_compatible(["reach-v3"], ["top"], IMG)
    with pytest.raises(ValueError, match=f"trained on {IMG}x{IMG} images; this run renders 64x64"):
        m.check_compatible(["reach-v3"], ["corner"], 64)
    with pytest.raises(ValueError, match="expects 16x16x3 images"):
        m.score({"corner": torch.zeros(1, 32, 32, 3, dtype=torch.uint8)}, ["x"])
    (tmp_path / "a" / "policy" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        RewardModel.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "policy" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        RewardModel.from_pretrained(tmp_path / "a")
    # a policy is not a reward model
    from rlvla.policies import PolicyConfig, VLAPolicy

    VLAPolicy(PolicyConfig()).save_pretrained(tmp_path / "pol")
    with pytest.raises(CheckpointError, match="not a reward model"):
        RewardModel.from_pretrained(tmp_path / "pol")
    # an interrupted run resumes from its last checkpoint to the same weights as an uninterrupted one
    full = _train(data, tmp_path / "full", "success", 30)
    _train(data, tmp_path / "part", "success", 30, "train.time_limit_s=0.001")
    part = _train(data, tmp_path / "part", "success", 30)
    assert full["status"] == part["status"] == "done"
    a, b = RewardModel.from_pretrained(tmp_path / "full"), RewardModel.from_pretrained(tmp_path / "part")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_held_out_data_is_never_trained_on(heldout, tmp_path):
    from rlvla.data.frames import LabelledFrames

    with pytest.raises(DatasetError, match="evaluation seeds.*held-out test set"):
        LabelledFrames(LeRobotDataset(heldout), ["corner"], IMG)
    with pytest.raises(DatasetError, match="evaluation seeds"):
        _train(heldout, tmp_path / "x", "success", 5)
    from rlvla.data.chunks import ChunkDataset

    with pytest.raises(DatasetError, match="evaluation seeds"):
        ChunkDataset(LeRobotDataset(heldout), 2, ["corner"])


def test_reward_model_config_errors(data, tmp_path):
    from rlvla.configs import compose
    from rlvla.runners.train import train

    with pytest.raises(ValueError, match="unknown reward model kind 'succes'"):
        _train(data, tmp_path / "k", "succes", 1)
    with pytest.raises(ValueError, match="policy.chunk=2 would be ignored"):
        train(compose(["algo=reward_model", f"data.path={data}", f"run_dir={tmp_path / 'p'}", "policy.chunk=2"]), progress=False)
    with pytest.raises(ValueError, match="no images from camera 'top'"):
        _train(data, tmp_path / "c", "success", 1, "algo.cameras=[top]")
