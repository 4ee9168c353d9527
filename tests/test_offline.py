"""Offline RL end to end on a synthetic mixed-quality dataset: streaming, each algorithm's defining behaviour,
conditioning, resume and bad input.

The data is a one-step decision problem in the dataset format: every episode of task ``reach-v3`` repeats one
action whose first coordinate is +0.6 in successful episodes and -0.6 in failed ones (half each); images and
state are noise. Behaviour cloning on all of it imitates both; an offline-RL method should prefer the successful
action, and a conditioned policy should follow its conditioning input.
"""

from __future__ import annotations

import math
import numpy as np
import pytest
import torch

from rlvla.data.lerobot import LeRobotDataset, LeRobotWriter
from rlvla.runners.collect import features

IMG = 16
TINY = [
    "policy.backbone.dim=32", "policy.backbone.layers=1", "policy.backbone.vision.width=8",
    "policy.backbone.vision.depth=2", "policy.backbone.language.encoder=none", f"policy.image_size={IMG}",
    "policy.chunk=2", "train.batch_size=32", "train.log_every=1", "train.warmup_steps=5", "train.lr=3e-3",
    "train.ckpt_every=1000",
]  # fmt: skip
GAUSS = ["head=gaussian", "policy.head.hidden=64"]


def _write(root, episodes: int = 24, length: int = 6, file_mb: float = 32.0, seed: int = 0):
    w = LeRobotWriter(root, features(("corner",), IMG), data_files_size_in_mb=file_mb, episode_meta={"env_task": "string"})
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        ok = e % 2 == 0
        a = np.zeros((length, 4), np.float32)
        a[:, 0] = 0.6 if ok else -0.6
        a[:, 1:] = rng.normal(0, 0.05, (length, 3))
        success = np.zeros(length, bool)
        if ok:
            success[-1] = True
        reward = success.astype(np.float32) * 10
        frames = {
            "observation.images.corner": rng.integers(0, 255, (length, IMG, IMG, 3), dtype=np.uint8),
            "observation.state": rng.normal(size=(length, 4)).astype(np.float32),
            "action": a, "next.reward": reward,
            "next.done": np.r_[np.zeros(length - 1, bool), True], "next.terminated": success.copy(),
            "next.truncated": np.r_[np.zeros(length - 1, bool), not ok], "next.success": success,
            "next.return": np.zeros(length, np.float32),
        }  # fmt: skip
        w.add_episode(frames, "reach the goal", meta={"env_task": "reach-v3"})
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("offline") / "mixed")


def _cfg(data, run_dir, *extra):
    from rlvla.configs import compose

    return compose([*TINY, f"data.path={data}", f"run_dir={run_dir}", *extra])


def _train(data, run_dir, *extra):
    from rlvla.runners.train import train

    return train(_cfg(data, run_dir, *extra), progress=False)


def _positive_fraction(policy_dir, condition=None, n=256) -> float:
    """Fraction of sampled chunks whose first action coordinate is positive (the successful behaviour)."""
    from rlvla.policies import VLAPolicy

    p = VLAPolicy.from_pretrained(policy_dir).eval()
    rng = np.random.default_rng(1)
    obs = {"image": rng.integers(0, 255, (n, IMG, IMG, 3), dtype=np.uint8),
           "proprio": rng.normal(size=(n, 4)).astype(np.float32), "instruction": ["reach the goal"] * n}  # fmt: skip
    if condition is not None:
        obs["condition"] = np.full(n, condition, np.float32)
    torch.manual_seed(0)
    a = p.act(obs, deterministic=False, with_log_prob=False).actions
    return float((a[:, 0, 0] > 0).float().mean())


# ------------------------------------------------------------------ data
def test_chunk_rewards_and_returns_known_answers():
    from rlvla.rewards import chunk_rewards, episode_returns

    r = np.array([0.0, 1.0, 0.0, 2.0])
    assert episode_returns(r, 0.5).tolist() == [0.75, 1.5, 1.0, 2.0]
    # K = 2: r[i] + 0.5 r[i+1], cut at the episode's end
    assert chunk_rewards(r, 2, 0.5).tolist() == [0.5, 1.0, 1.0, 2.0]


def test_offline_chunks_transitions(mixed):
    from rlvla.data.offline import OfflineChunks

    d = OfflineChunks(LeRobotDataset(mixed), chunk=2, cameras=["corner"], gamma=0.5, reward="sparse")
    assert d.summary()["episodes"] == 24 and d.summary()["success_rate"] == 0.5
    # episode 0 succeeds on its last (6th) frame, episode 1 fails: sparse reward 1 on the success step only
    assert d.mc_return[:6].tolist() == [0.5**5, 0.5**4, 0.5**3, 0.5**2, 0.5, 1.0]
    assert d.chunk_reward[:6].tolist() == [0, 0, 0, 0, 0.5, 1.0]
    assert d.chunk_done[:6].tolist() == [False, False, False, False, True, True]
    assert d.next_index[:6].tolist() == [2, 3, 4, 5, 5, 5]
    assert np.all(d.mc_return[6:12] == 0)
    idx = d.indices(0, 48, seed=0)
    b = d.batch(idx)
    assert torch.all(b["discount"] == 0.25)
    assert b["next.observation.images.corner"].shape == (48, IMG, IMG, 3)
    assert torch.equal(b["next.observation.state"], d.state[torch.from_numpy(d.next_index[idx])])
    assert np.all(d.episode[d.next_index[idx]] == d.episode[idx])  # never crosses into another episode
    assert torch.equal(b["episode_success"], torch.from_numpy(d.ep_success[idx]))


def test_streaming_holds_a_bounded_group_and_visits_every_frame(tmp_path):
    from rlvla.data.offline import OfflineChunks

    root = _write(tmp_path / "many", episodes=40, file_mb=0.02)
    ds = LeRobotDataset(root)
    assert len(ds.data_files()) >= 4
    d = OfflineChunks(ds, chunk=2, cameras=["corner"], files_in_memory=1)
    biggest = max(hi - lo for lo, hi in d.file_rows)
    seen = set()
    spg = d.steps_per_group(8)
    for step in range(spg * len(d.files) * 3):
        idx = d.indices(step, 8, seed=3)
        d.batch(idx)
        assert len(d._rows) <= biggest  # one file's frames in memory at a time
        seen.update(idx.tolist())
    assert len(seen) > 0.9 * len(d)
    # a pure function of (seed, step): a fresh reader gives the same batch
    d2 = OfflineChunks(LeRobotDataset(root), chunk=2, cameras=["corner"], files_in_memory=1)
    assert np.array_equal(d2.indices(17, 8, seed=3), d.indices(17, 8, seed=3))


# ------------------------------------------------------------------ algorithms
def test_sft_imitates_both_outcomes_but_awr_and_iql_prefer_success(mixed, tmp_path):
    steps = "train.steps=150"
    _train(mixed, tmp_path / "sft", *GAUSS, steps, "algo=sft")
    _train(mixed, tmp_path / "awr", *GAUSS, steps, "algo=awr", "algo.beta=0.1")
    _train(mixed, tmp_path / "iql", *GAUSS, steps, "algo=iql", "algo.beta=0.1", "algo.target_ema=0.05")
    sft = _positive_fraction(tmp_path / "sft" / "policy")
    awr = _positive_fraction(tmp_path / "awr" / "policy")
    iql = _positive_fraction(tmp_path / "iql" / "policy")
    assert 0.2 < sft < 0.8, sft
    assert awr > 0.9 and iql > 0.9, (awr, iql)


def test_arfm_prefers_success_on_a_flow_head(mixed, tmp_path):
    _train(mixed, tmp_path / "arfm", "head=flow", "policy.head.hidden=64", "train.steps=150", "algo=arfm", "algo.ess=0.3")
    assert _positive_fraction(tmp_path / "arfm" / "policy") > 0.8


def test_recap_and_return_conditioning_change_behaviour(mixed, tmp_path):
    _train(mixed, tmp_path / "recap", *GAUSS, "train.steps=150", "algo=recap")
    _train(mixed, tmp_path / "rc", *GAUSS, "train.steps=150", "algo=rc")
    good, bad = _positive_fraction(tmp_path / "recap" / "policy", 1.0), _positive_fraction(tmp_path / "recap" / "policy", 0.0)
    assert good > 0.9 and bad < 0.1, (good, bad)
    good, bad = _positive_fraction(tmp_path / "rc" / "policy", 1.0), _positive_fraction(tmp_path / "rc" / "policy", 0.0)
    assert good > 0.9 and bad < 0.1, (good, bad)
    # deployment defaults: RECAP's "better" indicator; rc's 90th percentile of initial returns (successes here)
    from rlvla.policies import VLAPolicy

    assert VLAPolicy.read_config(tmp_path / "recap" / "policy").condition.value == 1.0
    assert VLAPolicy.read_config(tmp_path / "rc" / "policy").condition.value == 1.0
    assert _positive_fraction(tmp_path / "rc" / "policy") > 0.9  # no input: the configured target


def _fit_critic(kind: str, alpha: float, steps: int = 400, uniform: bool = True):
    """A toy critic trained with the library's losses: Q(s, a) on two states (one-hot) and 1-d actions. State 0's
    data action +0.6 earned a Monte-Carlo return of 1, state 1's -0.6 earned 0; the "policy" proposes actions
    near the data's (+-0.3 noise), the CQL term also uniform actions. -> (Q function, data actions, returns)."""
    from rlvla.algos.offline.core import calql_lower_bound, cql_penalty

    torch.manual_seed(0)
    q = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(q.parameters(), lr=3e-3)
    s = torch.eye(2).repeat(32, 1)
    a = torch.tensor([[0.6], [-0.6]]).repeat(32, 1)
    mc = torch.tensor([1.0, 0.0]).repeat(32)

    def Q(states, acts):
        return q(torch.cat([states, acts], -1))[..., 0]

    for _ in range(steps):
        q_data = Q(s, a)
        a_pi = (a[:, None] + 0.3 * torch.randn(len(a), 4, 1)).clamp(-1, 1)
        a_unif = torch.rand(len(a), 4, 1) * 2 - 1
        q_pi = Q(s[:, None].expand(-1, 4, -1), a_pi)
        q_unif = Q(s[:, None].expand(-1, 4, -1), a_unif)
        if kind == "calql":
            q_pi = calql_lower_bound(q_pi, mc)
        sampled = torch.cat([q_pi, q_unif], 1) if uniform else q_pi
        loss = ((q_data - mc) ** 2).mean() + alpha * cql_penalty(q_data, sampled)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Q, s, a, mc


def test_cql_penalty_rises_with_the_value_of_out_of_data_actions():
    from rlvla.algos.offline.core import cql_penalty

    q_data = torch.tensor([1.0, 1.0])
    pens = [cql_penalty(q_data, torch.full((2, 3), v)).item() for v in (-1.0, 0.0, 1.0, 2.0)]
    assert pens == sorted(pens) and pens[-1] > pens[0] + 2.9  # logsumexp of 3 equal values = v + log 3
    assert pens[2] == pytest.approx(math.log(3))


def test_cql_pushes_down_out_of_data_actions_and_calql_respects_the_mc_bound():
    Q0, s, a, mc = _fit_critic("cql", alpha=0.0)
    Qc, *_ = _fit_critic("cql", alpha=1.0)
    far = -a  # the opposite action: never in the data
    with torch.no_grad():
        gap0 = (Q0(s, a) - Q0(s, far)).mean().item()
        gapc = (Qc(s, a) - Qc(s, far)).mean().item()
    assert gapc > gap0 + 0.5, (gapc, gap0)  # CQL lowers Q away from the data's actions
    # Cal-QL: the push-down on the policy's actions stops at the Monte-Carlo return (penalty on policy samples):
    # E_{a ~ pi} Q(s, a) stays at V_mc(s) where CQL's sinks far below it
    pi = (a[:, None] + 0.3 * torch.randn(len(a), 64, 1, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    sp = s[:, None].expand(-1, 64, -1)
    gaps = {}
    for kind in ("cql", "calql"):
        Qk, *_ = _fit_critic(kind, alpha=0.3, uniform=False)
        with torch.no_grad():
            gaps[kind] = (Qk(sp, pi).mean(1) - mc)[:2]
    assert torch.all(gaps["cql"] < -1.0), gaps
    assert torch.all(gaps["calql"] > -0.15), gaps


@pytest.mark.parametrize("algo", ["cql", "calql"])
def test_cql_and_calql_runs_log_their_terms(mixed, tmp_path, algo):
    from rlvla.runners.runlog import read_metrics

    _train(mixed, tmp_path / algo, *GAUSS, "train.steps=3", f"algo={algo}")
    m = read_metrics(tmp_path / algo)[-1]
    assert math.isfinite(m["cql_penalty"]) and math.isfinite(m["td_loss"])
    assert ("calql_bound_frac" in m) == (algo == "calql")


def test_dpo_raises_the_chosen_trajectories_likelihood(mixed, tmp_path):
    _train(mixed, tmp_path / "sft", *GAUSS, "train.steps=60", "algo=sft")
    before = _positive_fraction(tmp_path / "sft" / "policy")
    _train(mixed, tmp_path / "dpo", "train.steps=30", "algo.dpo_frames=4", "algo=dpo", f"init={tmp_path / 'sft' / 'policy'}", "train.lr=1e-3",
           "algo.dpo_beta=0.5")  # fmt: skip
    from rlvla.runners.runlog import read_metrics

    m = read_metrics(tmp_path / "dpo")
    assert np.mean([r["accuracy"] for r in m[-10:]]) > 0.8
    assert _positive_fraction(tmp_path / "dpo" / "policy") > before + 0.2


def test_likelihood_is_exact_for_token_and_gaussian_heads():
    from rlvla.policies import make_policy
    from rlvla.policies.config import BackboneConfig, LanguageConfig, VisionConfig
    from rlvla.policies.heads import head_config

    for name in ("token", "gaussian"):
        torch.manual_seed(0)
        bb = BackboneConfig(dim=32, layers=1, vision=VisionConfig(width=8, depth=2), language=LanguageConfig(encoder="none"))
        p = make_policy(head=head_config(name), backbone=bb, image_size=IMG).eval()
        n = 5
        obs = {"image": np.zeros((n, IMG, IMG, 3), np.uint8), "proprio": np.zeros((n, 4), np.float32), "instruction": ["x"] * n}
        out = p.act(obs, deterministic=False)
        from rlvla.data.schema import Batch

        b = Batch({"observation.images.corner": torch.zeros(n, IMG, IMG, 3, dtype=torch.uint8),
                   "observation.state": torch.zeros(n, 4), "action": out.actions, "task": ["x"] * n})  # fmt: skip
        with torch.no_grad():
            ll = p.likelihood(b)
        ref = out.log_prob if name == "token" else p.log_prob(obs, out.actions, {}, level="chunk")
        assert torch.allclose(ll, ref, atol=1e-3 if name == "token" else 1e-4), (name, ll, ref)


def test_arfm_weights_hit_the_target_effective_sample_size():
    from rlvla.algos.offline.base import arfm_weights

    adv = torch.linspace(-1, 1, 64)
    w, alpha = arfm_weights(adv, 0.5)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert (w.sum() ** 2 / (w**2).sum() / 64).item() == pytest.approx(0.5, abs=0.01)
    assert torch.all(w[1:] >= w[:-1])  # monotone in the advantage
    w1, a1 = arfm_weights(adv, 1.0)  # no reweighting wanted: plain flow matching
    assert a1 == 0.0 and torch.allclose(w1, torch.ones(64))


def test_weighted_masked_mean_known_answer():
    from rlvla.policies.heads.base import masked_mean

    x = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])  # (B=2, K=2, 1)
    mask = torch.tensor([[True, False], [True, True]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 3 + 4) / 3)
    assert masked_mean(x, mask, torch.tensor([2.0, 0.5])).item() == pytest.approx((2 * 1 + 0.5 * (3 + 4)) / 3)


# ------------------------------------------------------------------ runs: resume and bad input
def test_offline_run_resumes_exactly(mixed, tmp_path):
    from rlvla.runners.runlog import read_metrics
    from rlvla.runners.train import train

    extra = [*GAUSS, "algo=iql", "train.steps=8", "train.ckpt_every=3"]
    train(_cfg(mixed, tmp_path / "a", *extra), progress=False)

    def stop_at_5(step, metrics):
        if step == 5:
            raise KeyboardInterrupt

    part = train(_cfg(mixed, tmp_path / "b", *extra), progress=False, on_step=stop_at_5)
    assert part["status"] == "interrupted" and part["step"] == 5
    done = train(_cfg(mixed, tmp_path / "b", *extra), progress=False)
    assert done["status"] == "done" and done["step"] == 8
    la = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "a")]
    lb = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "b")]
    assert la == lb  # the target network and the streamed batches resume too


def test_offline_bad_input_gives_one_line_errors(mixed, tmp_path):
    with pytest.raises(ValueError, match="dpo needs a reference policy"):
        _train(mixed, tmp_path / "d", *GAUSS, "algo=dpo", "train.steps=2")
    with pytest.raises(ValueError, match="needs a flow or diffusion head"):
        _train(mixed, tmp_path / "a", *GAUSS, "algo=arfm", "train.steps=2")
    with pytest.raises(ValueError, match="algo.expectile"):
        _train(mixed, tmp_path / "e", *GAUSS, "algo=iql", "algo.expectile=1.5", "train.steps=2")
    bad = _write(tmp_path / "nan", episodes=6)  # then corrupt one reward on disk (the writer refuses NaN)
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = next(bad.glob("data/*/*.parquet"))
    t = pq.read_table(f)
    r = t.column("next.reward").to_pylist()
    r[3] = [float("nan")] if isinstance(r[3], list) else float("nan")
    t = t.set_column(t.column_names.index("next.reward"), "next.reward", pa.array(r, t.schema.field("next.reward").type))
    pq.write_table(t, f)
    with pytest.raises(ValueError, match="next.reward has 1 frame"):
        _train(bad, tmp_path / "n", *GAUSS, "algo=awr", "train.steps=2")


def test_cli_train_offline_and_eval_with_test_time_errors(mixed, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "rlvla", "train", "algo=nosuch", f"data.path={mixed}"], capture_output=True, text=True)
    assert r.returncode == 2 and "nosuch" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    _train(mixed, tmp_path / "sft", *GAUSS, "train.steps=2", "algo=sft")
    r = subprocess.run([sys.executable, "-m", "rlvla", "eval", str(tmp_path / "sft"), "--test-time", "vgps"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "vgps needs --critic" in r.stderr
    r = subprocess.run([sys.executable, "-m", "rlvla", "eval", str(tmp_path / "sft"), "--test-time", "bestofn"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "own Q ensemble" in r.stderr


# ------------------------------------------------------------------ mixed-quality collection, offline-to-online
def test_collect_mixes_expert_failures_and_policy_rollouts(tmp_path):
    from rlvla.policies import make_policy
    from rlvla.policies.config import BackboneConfig, LanguageConfig, VisionConfig
    from rlvla.runners.collect import RETURN_GAMMA, CollectConfig, collect

    bb = BackboneConfig(dim=32, layers=1, vision=VisionConfig(width=8, depth=2), language=LanguageConfig(encoder="none"))
    from rlvla.policies.heads import head_config

    make_policy(head=head_config("gaussian"), backbone=bb, image_size=32).save_pretrained(tmp_path / "pol")
    out = str(tmp_path / "mixed")
    common = dict(tasks=("reach-v3",), episodes=1, out=out, image_size=32, max_steps=12, workers=1)
    collect(CollectConfig(**common), progress=False)
    collect(CollectConfig(**common, failure_prob=1.0), progress=False)
    collect(CollectConfig(**common, policy=str(tmp_path / "pol")), progress=False)
    again = collect(CollectConfig(**common, policy=str(tmp_path / "pol")), progress=False)  # already there: nothing new
    assert again["episodes"] == 0
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 3
    sources = [e["source"] for e in ds.episodes]
    assert sources[0] == "expert:noise=0:failure=0" and sources[1] == "expert:noise=0:failure=1"
    assert sources[2].startswith("policy:") and len({e["layout_seed"] for e in ds.episodes}) == 3
    assert ds.episodes[1]["failure_injected"] and not ds.episodes[1]["success"]
    for i in range(3):
        e = ds.episode(i)
        r = e["next.reward"].astype(np.float64)
        ret = [sum(RETURN_GAMMA**j * x for j, x in enumerate(r[t:])) for t in range(len(r))]
        np.testing.assert_allclose(e["next.return"], ret, rtol=1e-5)
    with pytest.raises(ValueError, match="collect with --image-size 32"):
        CollectConfig(**{**common, "image_size": 64}, policy=str(tmp_path / "pol"))


def test_offline_to_online_continues_with_mixed_batches_and_resumes(mixed, tmp_path):
    from rlvla.runners.runlog import read_metrics

    _train(mixed, tmp_path / "iql", *GAUSS, "algo=iql", "train.steps=3")
    o2o = [*GAUSS, "algo=iql", "train.batch_size=8", f"init={tmp_path / 'iql'}", "algo.online_episodes_per_task=1",
           "algo.online_updates=2", "algo.online_max_steps=8"]  # fmt: skip
    first = _train(mixed, tmp_path / "o2o", *o2o, "algo.online_iterations=1")
    assert first["status"] == "done" and first["buffer"] == 4  # one 8-step episode, chunks of 2
    second = _train(mixed, tmp_path / "o2o", *o2o, "algo.online_iterations=2")
    assert second["status"] == "done" and second["step"] == 2 and second["buffer"] == 8
    m = read_metrics(tmp_path / "o2o")
    assert [r["step"] for r in m] == [1, 2] and m[-1]["buffer/episodes"] == 2
    assert math.isfinite(m[-1]["train/td_loss"])
    with pytest.raises(ValueError, match="pass init="):
        _train(mixed, tmp_path / "x", *GAUSS, "algo=iql", "algo.online_iterations=1")


def test_guided_sampling_of_a_conditioned_flow_policy(mixed, tmp_path):
    from rlvla.policies import VLAPolicy

    _train(mixed, tmp_path / "recap", "head=flow", "policy.head.hidden=64", "train.steps=100", "algo=recap")
    p = VLAPolicy.from_pretrained(tmp_path / "recap" / "policy").eval()
    n = 128
    obs = {"image": np.zeros((n, IMG, IMG, 3), np.uint8), "proprio": np.zeros((n, 4), np.float32),
           "instruction": ["reach the goal"] * n, "condition": np.ones(n, np.float32)}  # fmt: skip
    torch.manual_seed(0)
    plain = p.act(obs, deterministic=True, with_log_prob=False).actions[:, 0, 0]
    p.cfg.condition.guidance = 1.0
    torch.manual_seed(0)
    again = p.act(obs, deterministic=True, with_log_prob=False).actions[:, 0, 0]
    assert torch.equal(plain, again)
    p.cfg.condition.guidance = 3.0  # pushes further toward the "better" behaviour (+0.6)
    torch.manual_seed(0)
    guided = p.act(obs, deterministic=True, with_log_prob=False).actions[:, 0, 0]
    assert guided.mean() > plain.mean() and not torch.equal(guided, plain)
    with pytest.raises(ValueError, match="no log-prob"):
        p.act(obs, deterministic=True)


@pytest.mark.parametrize("head", ["token", "flow"])
def test_dpo_runs_on_token_and_flow_heads(mixed, tmp_path, head):
    from rlvla.runners.runlog import read_metrics

    hd = ["policy.head.dim=32", "policy.head.layers=1", "policy.head.bins=32"] if head == "token" else ["policy.head.hidden=64"]
    _train(mixed, tmp_path / "sft", f"head={head}", *hd, "train.steps=2", "algo=sft")
    _train(mixed, tmp_path / "dpo", "train.steps=2", "algo=dpo", f"init={tmp_path / 'sft' / 'policy'}", "algo.dpo_frames=2")
    m = read_metrics(tmp_path / "dpo")
    # at step 1 the policy is its reference: margin 0, loss log 2
    assert m[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4) and m[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert all(math.isfinite(r["loss"]) for r in m)


def test_offline_data_without_env_tasks_is_a_clear_error(tmp_path):
    """The reward scale comes from the suite of the dataset's tasks: a dataset that records none is refused with a
    one-line message (not trained with a guessed scale)."""
    from rlvla.data.lerobot import LeRobotWriter
    from rlvla.runners.collect import features

    w = LeRobotWriter(tmp_path / "ds", features(("corner",), IMG))
    n = 4
    w.add_episode({"observation.images.corner": np.zeros((n, IMG, IMG, 3), np.uint8),
                   "observation.state": np.zeros((n, 4), np.float32), "action": np.zeros((n, 4), np.float32),
                   "next.reward": np.zeros(n, np.float32), "next.done": np.r_[np.zeros(n - 1, bool), True],
                   "next.terminated": np.zeros(n, bool), "next.truncated": np.r_[np.zeros(n - 1, bool), True],
                   "next.success": np.zeros(n, bool), "next.return": np.zeros(n, np.float32)}, "reach the goal")  # fmt: skip
    with pytest.raises(ValueError, match="records no env_task per episode"):
        _train(tmp_path / "ds", tmp_path / "run", *GAUSS, "algo=iql", "algo.reward=dense", "train.steps=1")
