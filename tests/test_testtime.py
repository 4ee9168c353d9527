"""Test-time methods: each selector's decision rule on known inputs, tree search on a toy simulator with
save/restore, progress-monitoring retries, the real-env branch primitive, and the comparison report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlvla.eval.testtime import MCTS, BestOfN, Retry, TestTimeConfig, VGPS, make_selector

IMG = 16


def _policy(critic: int = 0, value_target: str = ""):
    from rlvla.policies import make_policy
    from rlvla.policies.config import BackboneConfig, LanguageConfig, VisionConfig
    from rlvla.policies.heads import head_config

    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, layers=1, vision=VisionConfig(width=8, depth=2), language=LanguageConfig(encoder="none"))
    return make_policy(head=head_config("gaussian", init_std=0.5), backbone=bb, image_size=IMG, chunk=2, critic=critic,
                       value_target=value_target).eval()


def _obs(n: int, x=None) -> dict:
    x = np.zeros(n) if x is None else np.asarray(x, dtype=np.float32)
    prop = np.zeros((n, 4), np.float32)
    prop[:, 0] = x
    return {"image": np.zeros((n, IMG, IMG, 3), np.uint8), "proprio": prop, "instruction": ["go right"] * n}


def _peaked_q(target: float):
    """A stand-in Q ensemble: -(mean first action coordinate of the chunk - target)^2, same for each member."""

    def q_values(zv, actions):
        q = -((actions.reshape(len(actions), 2, 4)[:, :, 0].mean(1) - target) ** 2)
        return torch.stack([q, q])

    return q_values


def test_vgps_and_bestofn_pick_the_highest_q_candidate(tmp_path):
    base = _policy()
    base_err = abs(base.act(_obs(64), deterministic=False).actions[:, :, 0].mean(1) - 0.5).mean().item()
    crit = _policy(critic=2)
    crit.save_pretrained(tmp_path / "critic")
    vg = VGPS(base, TestTimeConfig(method="vgps", critic=str(tmp_path / "critic"), samples=16))
    vg.critic.q_values = _peaked_q(0.5)
    torch.manual_seed(1)
    a = vg.act(_obs(64), list(range(64)))
    err = np.abs(a[:, :, 0].mean(1) - 0.5).mean()
    assert err < 0.5 * base_err, (err, base_err)  # argmax over 16 samples lands near the critic's optimum
    # a high temperature approaches a uniform draw among the candidates: worse than argmax
    vg.cfg.temperature = 1e3
    soft = np.abs(vg.act(_obs(64), list(range(64)))[:, :, 0].mean(1) - 0.5).mean()
    assert soft > err
    # best-of-N scores with the checkpoint's own Q ensemble
    own = _policy(critic=2)
    own.q_values = _peaked_q(-0.5)
    bo = BestOfN(own, TestTimeConfig(method="bestofn", samples=16))
    b = bo.act(_obs(64), list(range(64)))
    assert np.abs(b[:, :, 0].mean(1) + 0.5).mean() < 0.5 * base_err
    assert bo.stats["decisions"] == 64
    with pytest.raises(ValueError, match="own Q ensemble"):
        BestOfN(base, TestTimeConfig(method="bestofn"))
    with pytest.raises(ValueError, match="vgps needs --critic"):
        TestTimeConfig(method="vgps")
    with pytest.raises(ValueError, match="no Q ensemble"):
        base.save_pretrained(tmp_path / "plain")
        VGPS(base, TestTimeConfig(method="vgps", critic=str(tmp_path / "plain")))


class LinePool:
    """A toy simulator for tree search: position x on a line; a chunk moves x by the sum of its first action
    coordinates; success when x >= goal. Implements EnvPool's ``call`` for save/restore/branch."""

    def __init__(self, n: int, goal: float = 0.9) -> None:
        self.x = {i: 0.0 for i in range(n)}
        self.goal = goal
        self.branches = 0

    def _obs(self, x):
        o = _obs(1, [x])
        return {"image": o["image"][0], "proprio": o["proprio"][0], "instruction": "go right"}

    def step_one(self, i, chunk):
        self.x[i] += float(np.asarray(chunk)[:, 0].sum())
        ok = self.x[i] >= self.goal
        return self._obs(self.x[i]), float(ok), ok, False, {"success": ok}

    def call(self, method, args):
        out = {}
        for i, a in args.items():
            if method == "get_sim_state":
                out[i] = {"x": self.x[i]}
            elif method == "set_sim_state":
                self.x[i] = a[0]["x"]
            elif method == "branch":
                self.branches += 1
                self.x[i] = a[0]["x"]
                r = self.step_one(i, a[1])
                out[i] = (*r, {"x": self.x[i]})
        return out


def test_mcts_finds_the_branch_that_reaches_the_goal_and_restores_the_root():
    policy = _policy()
    pool = LinePool(8)
    sel = MCTS(policy, TestTimeConfig(method="mcts", samples=6, simulations=12, depth=2))
    torch.manual_seed(0)
    obs = _obs(8)
    chosen = sel.act(obs, list(range(8)), pool)
    assert all(x == 0.0 for x in pool.x.values())  # every env is back at its root state
    assert pool.branches == sel.stats["simulated_chunks"] > 0
    # the executed chunk is the one whose subtree reached x >= 0.9 when any did: compare with the base choice
    base = policy.act(obs, deterministic=True).actions.numpy()
    moved = chosen[:, :, 0].sum(1)
    assert np.mean(moved) > np.mean(base[:, :, 0].sum(1)) + 0.1, (moved, base[:, :, 0].sum(1))
    with pytest.raises(ValueError, match="needs the simulator"):
        sel.act(obs, list(range(8)), None)


def test_retry_resamples_only_after_a_stall():
    policy = _policy(value_target="mc")  # its (trained) value head is the progress estimate
    sel = Retry(policy, TestTimeConfig(method="retry", stall_window=3, retry_decisions=2, samples=4))
    values = iter([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # rising: never a stall
    policy.value = lambda batch: torch.tensor([next(values)])
    sel.begin(0)
    for _ in range(6):
        sel.act(_obs(1), [0])
    assert sel.stats["retries"] == 0
    policy.value = lambda batch: torch.tensor([0.3])  # flat: a stall after 3 + 1 decisions
    sel.begin(0)
    det = policy.act(_obs(1), deterministic=True).actions.numpy()
    outs = [sel.act(_obs(1), [0]) for _ in range(6)]
    assert sel.stats["retries"] == 1 and sel.stats["resampled"] == 2
    same = [np.allclose(o, det) for o in outs]
    assert same[:3] == [True, True, True] and same[3:5] == [False, False] and same[5]
    with pytest.raises(ValueError, match="progress estimate"):
        Retry(_policy(), TestTimeConfig(method="retry"))


def test_branch_replays_a_chunk_exactly_in_the_real_simulator():
    from rlvla.envs import make_env

    env = make_env("reach-v3", seed=3, chunk=2, image_size=32)
    env.reset(seed=5)
    env.step(np.full((2, 4), 0.3, np.float32))
    root = env.get_sim_state()
    a = np.random.default_rng(0).uniform(-1, 1, (2, 4)).astype(np.float32)
    ob1, r1, *_, st = env.branch(root, a)
    env.branch(root, -a)  # another branch from the same root in between
    env.set_sim_state(st)
    after = env.get_sim_state()
    env.set_sim_state(root)
    ob2, r2, *_ = env.step(a)
    assert r1 == pytest.approx(r2, abs=1e-9)
    np.testing.assert_array_equal(ob1["image"], ob2["image"])
    np.testing.assert_allclose(after["qpos"], env.get_sim_state()["qpos"], atol=1e-12)
    env.close()


def test_unknown_method_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown test-time method 'beam'"):
        make_selector(_policy(), TestTimeConfig(method="beam"))


# ------------------------------------------------------------------ rlvla report
def _eval(ckpt, rates: dict[str, list[bool]], method="none", ms=2.0):
    from rlvla.eval.metrics import wilson_interval

    splits = {}
    for s, outcomes in rates.items():
        k = sum(outcomes)
        splits[s] = {"success_rate": k / len(outcomes), "ci95": list(wilson_interval(k, len(outcomes))), "episodes": len(outcomes),
                     "latency_ms": {"p50": ms, "p95": ms, "mean_per_env": ms},
                     "per_episode": [["reach-v3", 1_000_000 + i, ok] for i, ok in enumerate(outcomes)]}  # fmt: skip
    return {"checkpoint": str(ckpt), "splits": splits, "test_time": {"method": method, "samples": 8}}


def test_report_table_deltas_paired_tests_and_overhead(tmp_path):
    from rlvla.eval.compare import write_comparison

    run = tmp_path / "sft"
    (run / "policy").mkdir(parents=True)
    (run / "train_summary.json").write_text(json.dumps({"algo": "sft"}))
    base = [True] * 5 + [False] * 5
    better = [True] * 8 + [False] * 2  # solves 3 more episodes, loses none
    files = {}
    for name, d in {"sft": _eval(run / "policy", {"id": base, "ood-position": base}),
                    "vg": _eval(run / "policy", {"id": better}, method="vgps", ms=5.5)}.items():  # fmt: skip
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(d))
    res = write_comparison(tmp_path / "rep", [f"SFT={files['sft']}", str(files["vg"])])
    rows = {r["label"]: r for r in res["rows"]}
    assert set(rows) == {"SFT", "sft+vgps"} and res["baseline"] == "SFT"
    v = rows["sft+vgps"]
    assert v["algo"] == "sft" and v["test_time"] == "vgps"
    assert v["splits"]["id"]["delta_points"] == pytest.approx(30.0)
    assert (v["splits"]["id"]["only_this"], v["splits"]["id"]["only_baseline"]) == (3, 0)
    assert v["splits"]["id"]["p_value"] == pytest.approx(0.25)  # exact McNemar: 2 * 0.5^3
    assert v["overhead_ms"] == pytest.approx(3.5)
    assert v["splits"]["id"]["vs_own_base"]["delta_points"] == pytest.approx(30.0)  # its own base is the SFT row here
    assert "ood-position" not in v["splits"] and rows["SFT"]["overhead_ms"] is None
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "sft+vgps" in html and "+30" in html
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["rows"][1]["label"] == "sft+vgps"
    with pytest.raises(ValueError, match="duplicate row labels"):
        write_comparison(tmp_path / "rep2", [f"a={files['sft']}", f"a={files['vg']}"])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not an evaluation result"):
        write_comparison(tmp_path / "rep3", [str(bad)])
    with pytest.raises(FileNotFoundError, match="no such evaluation file"):
        write_comparison(tmp_path / "rep4", [str(tmp_path / "missing.json")])
    # an RL run's learning curves (held-out points with intervals, diagnostics) below the table
    metrics = [{"step": 0, "env_steps": 0, "heldout/success": 0.5, "heldout/ci_low": 0.4, "heldout/ci_high": 0.6}]
    metrics += [{"step": i, "env_steps": 1000 * i, "rollout/success": 0.5 + 0.05 * i, "rollout/explore_std": 0.13,
                 "train/approx_kl": 0.01, "train/clip_fraction": 0.1} for i in range(1, 5)]  # fmt: skip
    write_comparison(tmp_path / "rep5", [f"SFT={files['sft']}"], curves=("runs/rl", metrics))
    html = (tmp_path / "rep5" / "report.html").read_text()
    assert "Learning curves of runs/rl" in html and "report_files/learning_curves.png" in html
    assert (tmp_path / "rep5" / "report_files" / "rl_diagnostics.png").stat().st_size > 1000
    # a simulator run and a run in a world model on one plot: held-out success against the real env steps each used
    from rlvla.eval.report import real_steps

    imagined = [{"step": 0, "env_steps": 0, "heldout/success": 0.5, "heldout/ci_low": 0.4, "heldout/ci_high": 0.6},
                {"step": 1, "env_steps": 9000, "rollout/real_env_steps": 8, "rollout/real_env_steps_total": 5008,
                 "heldout/success": 0.7, "heldout/ci_low": 0.6, "heldout/ci_high": 0.8}]  # fmt: skip
    assert real_steps(imagined) == [5000, 5008] and real_steps(metrics) == [0, 1000, 2000, 3000, 4000]
    write_comparison(tmp_path / "rep6", [f"SFT={files['sft']}"], curves=[("sim", metrics), ("imagined", imagined)])
    html = (tmp_path / "rep6" / "report.html").read_text()
    assert "Learning curves of sim" in html and "Learning curves of imagined" in html and "report_files/run1_learning_curves.png" in html
    assert (tmp_path / "rep6" / "report_files" / "heldout_vs_real_steps.png").stat().st_size > 5000
