"""World models: tiny learning (fitting a known linear system; PPO in an imagined toy improving the toy's real
success), the imagined env behind the simulators' face, evaluation over horizons, and refusals.

The toy (suite ``wmtoy``, registered here): a point on a line starts at x = 0; the goal is +-0.5 (its sign in
the proprio vector); a decision moves x by 0.25 x the chunk's mean first action coordinate (a linear system);
success is |x - goal| < 0.15. The image draws x as a bright column.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvla.data.lerobot import LeRobotDataset, LeRobotWriter
from rlvla.envs import Suite, register_suite

pytestmark = pytest.mark.usefixtures("one_thread")

S, K, A = 16, 2, 2
STEP, TOL, LIMIT = 0.25, 0.15, 12  # LIMIT: low-level steps per episode (6 decisions)


class LineEnv:
    def __init__(self, task, split="id", seed=None, image_size=S, cameras=("corner",), chunk=K, max_steps=LIMIT,
                 terminate_on_success=True, **kw):  # fmt: skip
        self.chunk, self.max_steps, self.terminate = chunk, max_steps, terminate_on_success
        self.next_seed = seed

    def reset(self, seed=None, options=None):
        seed = self.next_seed if seed is None else seed
        self.next_seed = None if seed is None else seed + 1
        self.goal = 0.5 if np.random.default_rng(seed).random() < 0.5 else -0.5
        self.x, self.t = 0.0, 0
        return self._obs(), {"success": False, "progress": self._progress()}

    def _progress(self) -> float:
        return float(1 - abs(self.x - self.goal))

    def _obs(self):
        img = np.zeros((S, S, 3), np.uint8)
        col = int(np.clip((self.x + 1) / 2 * (S - 1), 0, S - 1))
        img[:, col] = 255
        return {"image": img, "proprio": np.array([self.x, self.goal, 0, 0], np.float32), "instruction": "move to the goal"}

    def step(self, action):
        a = np.asarray(action, np.float32).reshape(-1, A)
        self.x = float(np.clip(self.x + STEP * a[:, 0].mean(), -1, 1))
        self.t += len(a)
        success = abs(self.x - self.goal) < TOL
        term = success and self.terminate
        info = {"success": success, "substeps": len(a), "progress": self._progress()}
        return self._obs(), self._progress() * len(a), term, self.t >= self.max_steps and not term, info

    def close(self):
        pass


if "wmtoy" not in __import__("rlvla.envs.suites", fromlist=["available_suites"]).available_suites():
    register_suite(Suite(name="wmtoy", tasks=("line",), make=LineEnv, reward_scale=1.0, default_max_steps=LIMIT, module=__name__))


def _features():
    f = {"observation.images.corner": {"dtype": "image", "shape": [S, S, 3], "names": ["height", "width", "channels"]},
         "observation.state": {"dtype": "float32", "shape": [4], "names": None},
         "action": {"dtype": "float32", "shape": [A], "names": None}}  # fmt: skip
    for k in ("next.reward", "next.return"):
        f[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("next.done", "next.terminated", "next.truncated", "next.success"):
        f[k] = {"dtype": "bool", "shape": [1], "names": None}
    return f


def _collect(root, episodes=160, seed=0):
    """Half random actions, half a noisy policy towards the goal; every low-level step is a frame."""
    w = LeRobotWriter(root, _features(), episode_meta={"env_task": "string"})
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        env = LineEnv("line", terminate_on_success=False)
        obs, _ = env.reset(seed=seed * 10_000 + e)
        buf = {k: [] for k in _features()}
        steer = e % 2 == 0
        for _ in range(LIMIT // K):
            if steer:
                a0 = np.clip(np.sign(env.goal - env.x) + rng.normal(0, 0.7, K), -1, 1)
            else:
                a0 = rng.uniform(-1, 1, K)
            chunk = np.stack([a0, rng.uniform(-1, 1, K)], -1).astype(np.float32)
            for a in chunk:  # one low-level step at a time, as rlvla collect records
                buf["observation.images.corner"].append(obs["image"])
                buf["observation.state"].append(obs["proprio"])
                buf["action"].append(a)
                obs, r, term, trunc, info = env.step(a[None])
                buf["next.reward"].append(r)
                buf["next.success"].append(info["success"])
                buf["next.terminated"].append(term)
                buf["next.truncated"].append(trunc)
                buf["next.done"].append(term or trunc)
                buf["next.return"].append(0.0)
        w.add_episode({k: np.asarray(v) for k, v in buf.items()}, "move to the goal", meta={"env_task": "wmtoy/line"})
    return root


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return _collect(tmp_path_factory.mktemp("wm") / "data")


def _train_wm(data, run_dir, steps=400, *extra):
    from rlvla.configs import compose
    from rlvla.runners.train import train

    cfg = compose(["algo=world_model", f"algo.chunk={K}", "algo.horizon=3", "algo.latent=32", "algo.width=8", "algo.hidden=128",
                   "algo.language=none", f"data.path={data}", f"run_dir={run_dir}", f"train.steps={steps}", "train.batch_size=32",
                   "train.lr=2e-3", "train.warmup_steps=10", "train.ckpt_every=200", *extra])  # fmt: skip
    return train(cfg, progress=False)


@pytest.fixture(scope="module")
def toy_wm(toy_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("wm") / "run"
    s = _train_wm(toy_data, run)
    assert s["status"] == "done"
    return run


def test_world_model_fits_a_known_linear_system(toy_data, toy_wm):
    """Open loop from real observations: the proprio (x moves linearly with the actions) is predicted far better
    than 'nothing moves', at 1 and 5 decisions, and the decoded image beats the copy of the first frame."""
    from rlvla.data.sequences import DecisionSequences
    from rlvla.runners.world_model import evaluate_world_model
    from rlvla.worldmodels import WorldModel

    wm = WorldModel.from_pretrained(toy_wm)
    data = DecisionSequences(LeRobotDataset(toy_data), "corner", K, 5, 1.0)
    res = evaluate_world_model(wm, data, horizons=(1, 5), sequences=128)
    b = data.batch(np.arange(len(data)), 5)
    still = {h: float(((b["proprio"][:, h] - b["proprio"][:, 0]) ** 2).mean()) for h in (1, 5)}
    for h in (1, 5):
        r = res["horizons"][str(h)]
        assert r["proprio_mse"] < 0.2 * still[h], (h, r, still)
    assert res["success_auc"] > 0.9, res
    # the decoded image shows the point where it moved: its brightest column, against "nothing moves"
    with torch.no_grad():
        z, p = wm.encode(b["image"][:, 0]), b["proprio"][:, 0]
        lang = wm.embed(b["instruction"])
        for h in range(1, 6):
            z, p, _, _ = wm.step(z, p, b["action"][:, h - 1], lang)
            if h in (1, 5):
                col = lambda im: im.float().mean((1, 3)).argmax(-1)  # noqa: E731
                real = col(b["image"][:, h])
                moved = real != col(b["image"][:, 0])
                hit = (col(wm.decode(z)) - real).abs() <= 1
                assert hit[moved].float().mean() > 0.8, (h, hit[moved].float().mean())


def _real_success(policy, n=64):
    env = LineEnv("line")
    wins = 0
    for i in range(n):
        obs, _ = env.reset(seed=10**6 + i)
        for _ in range(LIMIT // K):
            batch = {k: (np.asarray(v)[None] if k != "instruction" else [v]) for k, v in obs.items()}
            a = policy.act(batch, deterministic=True, with_log_prob=False).actions[0].numpy()
            obs, _, term, trunc, info = env.step(a)
            if term or trunc:
                break
        wins += bool(info["success"])
    return wins / n


def test_ppo_in_the_imagined_toy_raises_real_success(toy_wm):
    from functools import partial

    from test_online import toy_policy

    from rlvla.algos.online import CONFIGS, PolicyGradient
    from rlvla.collectors import RolloutEngine
    from rlvla.worldmodels import WorldModel
    from rlvla.worldmodels.env import ImaginedPool

    wm = WorldModel.from_pretrained(toy_wm)
    policy = toy_policy("gaussian", seed=1)
    policy.cfg.tasks = ["wmtoy/line"]
    before = _real_success(policy)
    cfg = CONFIGS["ppo"](group_size=1, groups_per_task=48, envs_per_task=48, minibatch=64, epochs=4, lr=1e-3, max_steps=LIMIT,
                         shaping=0.0, gamma=0.9, success_bonus=1.0)  # fmt: skip
    algo = PolicyGradient(policy, cfg)
    with RolloutEngine(policy, ["wmtoy/line"], cfg, make_pool=partial(ImaginedPool, world_model=wm)) as eng:
        for it in range(12):
            ro = eng.collect(it, need_values=True)
            algo.update(ro, it)
        real_frames = eng.pool.real_steps
    after = _real_success(policy)
    assert after >= before + 0.3 and after >= 0.6, (before, after)
    assert real_frames == 12 * 48  # one real frame per imagined episode: its start


def test_imagined_env_has_the_simulators_face_and_refuses_mismatches(toy_wm, tmp_path):
    from rlvla.envs import make_env
    from rlvla.errors import CheckpointError
    from rlvla.worldmodels import WorldModel
    from rlvla.worldmodels.env import ImaginedPool, WorldModelEnv

    env = WorldModelEnv("wmtoy/line", toy_wm, image_size=S, chunk=K, max_steps=LIMIT)
    obs, info = env.reset(seed=3)
    assert obs["image"].shape == (S, S, 3) and obs["proprio"].shape == (4,) and info["imagined"]
    obs, r, term, trunc, info = env.step(np.ones((K, A), np.float32))
    assert obs["image"].dtype == np.uint8 and {"success", "substeps", "progress"} <= set(info) and info["substeps"] == K
    assert np.isfinite(r) and isinstance(term, bool) and isinstance(trunc, bool)
    spec = dict(name="wmtoy/line", image_size=S, cameras=("corner",), chunk=K, max_steps=LIMIT)
    with pytest.raises(ValueError, match="trained on \\['wmtoy/line'\\], not on \\['reach-v3'\\]"):
        ImaginedPool([{**spec, "name": "reach-v3"}], world_model=toy_wm)
    with pytest.raises(ValueError, match="predicts 16x16 images; this policy reads 64x64"):
        ImaginedPool([{**spec, "image_size": 64}], world_model=toy_wm)
    with pytest.raises(ValueError, match="steps in chunks of 2 x 2 actions; this policy acts in 4"):
        ImaginedPool([{**spec, "chunk": 4}], world_model=toy_wm)
    with pytest.raises(ValueError, match="predicts camera 'corner', which this policy does not read"):
        ImaginedPool([{**spec, "cameras": ("top",)}], world_model=toy_wm)
    with pytest.raises(ValueError, match="needs world_model="):
        make_env("wm/reach-v3")
    # a NaN in the model stops with a message instead of feeding the policy
    wm = WorldModel.from_pretrained(toy_wm)
    with torch.no_grad():
        wm.dyn[-1].bias.fill_(float("nan"))
    pool = ImaginedPool([spec], world_model=wm)
    pool.reset({0: 1})
    with pytest.raises(FloatingPointError, match="non-finite"):
        pool.step({0: np.zeros((K, A), np.float32)})
    with pytest.raises(CheckpointError, match="not a world model"):
        WorldModel.from_pretrained(_policy_dir(tmp_path))


def test_imagined_envs_that_share_a_start_share_one_real_reset(toy_wm):
    from rlvla.worldmodels.env import ImaginedPool

    spec = dict(name="wmtoy/line", image_size=S, cameras=("corner",), chunk=K, max_steps=LIMIT)
    pool = ImaginedPool([spec] * 4, world_model=toy_wm)
    out = pool.reset({0: 5, 1: 5, 2: 8, 3: None})  # seed 5: goal -0.5, seed 8: goal +0.5 (in proprio)
    assert pool.real_steps == 3  # seed 5 once (a GRPO group), seed 8, and the unseeded reset
    assert np.array_equal(out[0][0]["proprio"], out[1][0]["proprio"]) and out[0][0]["proprio"][1] == -out[2][0]["proprio"][1]
    out[0][0]["proprio"][:] = 99.0  # each env gets its own copy of what a caller may change
    assert not np.allclose(out[1][0]["proprio"], 99.0)
    act = np.full((K, A), 0.5, np.float32)
    stepped = pool.step({0: act, 1: act})
    assert np.array_equal(stepped[0][0]["image"], stepped[1][0]["image"])  # the same start and action: the same step
    assert np.array_equal(pool.reset({0: 5, 3: None})[0][0]["proprio"], out[1][0]["proprio"])
    assert pool.real_steps == 4  # seed 5 is remembered; an unseeded reset is never reused
    pool.close()


def test_bench_imagined_reports_both_sides_for_the_same_policy(toy_wm, tmp_path):
    from test_online import toy_policy

    from rlvla.bench.rl import bench_imagined

    policy = toy_policy("gaussian", seed=1)
    policy.cfg.tasks = ["wmtoy/line"]
    policy.save_pretrained(tmp_path / "pol")
    res = bench_imagined(str(tmp_path / "pol"), str(toy_wm), envs_real=(2, 4), envs_imagined=8, workers=0, measured=1)
    assert [r["envs"] for r in res["real_runs"]] == [2, 4] and res["imagined"]["envs"] == 8
    assert res["real"]["steps_per_s"] == max(r["steps_per_s"] for r in res["real_runs"])
    assert res["ratio"] == pytest.approx(res["imagined"]["steps_per_s"] / res["real"]["steps_per_s"])
    assert res["imagined"]["real_resets"] == 2  # one group (one layout) in the warm-up and the measured iteration: one reset each
    assert res["imagined"]["env_steps"] > 0 and res["exploration"] == {}  # a gaussian policy samples as it is


def _policy_dir(tmp_path):
    from rlvla.policies import PolicyConfig, VLAPolicy

    VLAPolicy(PolicyConfig()).save_pretrained(tmp_path / "pol")
    return tmp_path / "pol"


def test_world_model_training_resumes_exactly_and_refuses_held_out_data(toy_data, tmp_path):
    from rlvla.data.lerobot import DatasetError
    from rlvla.worldmodels import WorldModel

    full = _train_wm(toy_data, tmp_path / "full", 30)
    cut = _train_wm(toy_data, tmp_path / "part", 30, "train.time_limit_s=0.001")
    part = _train_wm(toy_data, tmp_path / "part", 30)
    assert cut["status"] == "time_limit" and full["status"] == part["status"] == "done"
    a, b = WorldModel.from_pretrained(tmp_path / "full"), WorldModel.from_pretrained(tmp_path / "part")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    held = tmp_path / "held"
    w = LeRobotWriter(held, _features(), episode_meta={"env_task": "string", "seeds": "string"})
    ep = LeRobotDataset(toy_data).episode(0)
    w.add_episode({k: ep[k] for k in _features()}, "move to the goal", meta={"env_task": "wmtoy/line", "seeds": "eval"})
    with pytest.raises(DatasetError, match="evaluation seeds"):
        _train_wm(held, tmp_path / "h", 5)
    assert WorldModel.read_config(tmp_path / "full").tasks == ["wmtoy/line"]
    assert WorldModel.read_config(tmp_path / "full").data_frames == len(LeRobotDataset(toy_data)) > 0  # its real cost


def test_rlvla_train_in_imagination_counts_real_frames_and_stops_on_nan(toy_data, toy_wm, tmp_path):
    """`rlvla train algo=ppo algo.world_model=DIR` end to end: the run counts the real frames its imagined episodes
    started from; a world model that predicts NaN stops it with the iteration named and the last checkpoint kept."""
    from test_online import toy_policy

    from rlvla.configs import compose
    from rlvla.errors import TrainingError
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train
    from rlvla.worldmodels import WorldModel

    policy = toy_policy("gaussian")
    policy.cfg.tasks = ["wmtoy/line"]
    policy.save_pretrained(tmp_path / "pol")
    args = [f"init={tmp_path / 'pol'}", "algo.groups_per_task=4", "algo.envs_per_task=4", f"algo.max_steps={LIMIT}", "algo.minibatch=16"]
    s = train(compose(["algo=ppo", f"run_dir={tmp_path / 'rl'}", f"algo.world_model={toy_wm}", "algo.iterations=2", *args]), progress=False)
    assert s["status"] == "done" and s["imagined"] and s["real_env_steps"] == 2 * 4  # one real frame per episode
    assert s["env_steps"] > 4 * s["real_env_steps"]
    frames = len(LeRobotDataset(toy_data))  # the model's training data is part of imagination's real cost
    last = read_metrics(tmp_path / "rl")[-1]
    assert s["world_model_data_frames"] == frames and last["rollout/real_env_steps_total"] == 8 + frames
    wm = WorldModel.from_pretrained(toy_wm)
    with torch.no_grad():
        wm.dyn[-1].bias.fill_(float("nan"))
    wm.save_pretrained(tmp_path / "nan_wm")
    with pytest.raises(TrainingError, match="non-finite state, reward or success during the rollout of iteration 0"):
        train(compose(["algo=ppo", f"run_dir={tmp_path / 'rl2'}", f"algo.world_model={tmp_path / 'nan_wm'}", "algo.iterations=2", *args]),
              progress=False)  # fmt: skip


def test_wm_eval_command_writes_the_report_with_side_by_side_gifs(toy_data, toy_wm, tmp_path):
    import json

    from rlvla.cli import main

    rc = main(["wm-eval", str(toy_wm), str(toy_data), "--horizons", "1,3", "--sequences", "64", "--out", str(tmp_path / "r.json"),
               "--report", str(tmp_path / "rep"), "--videos", "2"])  # fmt: skip
    res = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0 and set(res["horizons"]) == {"1", "3"} and res["horizons"]["3"]["proprio_mse"] >= 0
    gifs = sorted((tmp_path / "rep").glob("*_real_vs_imagined.gif"))
    page = (tmp_path / "rep" / "report.html").read_text()
    assert len(gifs) == 2 and all(g.name in page for g in gifs) and "PSNR" in page
    from PIL import Image

    im = Image.open(gifs[0])
    assert im.size == (2 * (2 * S + 2), 2 * S) and im.n_frames == (LIMIT - 1) // K + 1  # real | imagined, a frame per stored decision


def test_subpixel_form_of_the_decoder_is_the_same_map(toy_wm):
    """A kernel-4, stride-2, padding-1 transposed convolution equals its 3x3-convolution + pixel-shuffle form (what
    imagined rollouts decode with); other shapes are refused."""
    from rlvla.worldmodels import WorldModel
    from rlvla.worldmodels.model import subpixel_conv, subpixel_decoder

    torch.manual_seed(0)
    m = torch.nn.ConvTranspose2d(5, 3, 4, stride=2, padding=1)
    x = torch.randn(7, 5, 6, 9)
    assert torch.allclose(subpixel_conv(m)(x), m(x), atol=1e-5) and subpixel_conv(m)(x).shape == (7, 3, 12, 18)
    with pytest.raises(ValueError, match="kernel 4, stride 2, padding 1"):
        subpixel_conv(torch.nn.ConvTranspose2d(5, 3, 3, stride=2, padding=1))
    wm = WorldModel.from_pretrained(toy_wm)
    z = torch.randn(6, wm.cfg.latent)
    h = wm.from_latent(z).view(6, -1, wm.side, wm.side)
    with torch.no_grad():
        assert torch.allclose(subpixel_decoder(wm)(h), wm.dec(h), atol=1e-4)
        a, b = wm.decode(z), wm.decode(z, subpixel_decoder(wm))
    assert a.dtype == b.dtype == torch.uint8 and (a.int() - b.int()).abs().max() <= 1  # rounding at most one level
