"""Online RL: the rollout engine, advantages per algorithm, updates per head, robustness (worker death, NaN, signals).

A toy environment (a contextual bandit in the env's observation format) keeps the learning tests to seconds: the
goal's sign is in the proprio vector, and an episode succeeds when the chunk's mean first action coordinate points
the same way (> 0.5 in the goal's direction). One decision per episode, so the success rate moves quickly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlvla.algos.online import CONFIGS, PolicyGradient, compute_advantages
from rlvla.collectors import RolloutEngine
from rlvla.data.schema import Batch
from rlvla.errors import NonFiniteLossError
from rlvla.policies import PolicyConfig, make_policy
from rlvla.policies.config import BackboneConfig
from rlvla.policies.heads import head_config

K, A = 2, 2
THRESHOLD = 0.25


pytestmark = pytest.mark.usefixtures("one_thread")


class ToyEnv:
    def __init__(self, steps: int = 1) -> None:
        self.steps = steps

    def reset(self, seed=None, options=None):
        g = np.random.default_rng(seed)
        self.goal = 1.0 if g.random() < 0.5 else -1.0
        self.t = 0
        self.rng = np.random.default_rng(seed + 1 if seed is not None else None)
        return self._obs(), {}

    def _obs(self):
        img = self.rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
        return {"image": img, "proprio": np.array([self.goal, 0.0, 0.0, 0.0], np.float32), "instruction": "reach the goal"}

    def step(self, action):
        action = np.asarray(action)
        self.t += 1
        success = bool(action[:, 0].mean() * self.goal > THRESHOLD)
        r = float(success)
        info = {"success": success, "substeps": K, "progress": r}
        return self._obs(), r, success, self.t >= self.steps and not success, info


class ToyPool:
    workers = 0

    def __init__(self, specs, workers=None, steps: int = 1) -> None:
        self.specs = specs
        self.envs = [ToyEnv(steps) for _ in specs]
        self.resets = 0

    def reset(self, seeds, options=None):
        self.resets += len(seeds)
        return {i: self.envs[i].reset(seed=s) for i, s in seeds.items()}

    def step(self, actions):
        return {i: self.envs[i].step(a) for i, a in actions.items()}

    def restart_dead_workers(self, workers=None):
        return []

    def close(self):
        pass


HEADS = {
    "token": head_config("token", dim=32, layers=1, heads=2, bins=32),
    # the chain heads explore with more noise than their defaults here: with min_std 0.1 / noise 0.08-0.16, success
    # on this task hovered near 0.5 for 30 iterations (all groups of one goal failed alike and carried no signal)
    "diffusion": head_config("diffusion", hidden=64, layers=2, steps=4, train_steps=20, min_std=0.2),
    "flow-sde": head_config("flow", logprob="sde", hidden=64, layers=2, steps=4),
    "flow-noise": head_config("flow", logprob="noise", hidden=64, layers=2, steps=4, noise_min=0.1, noise_max=0.3),
    "flow-output": head_config("flow", hidden=64, layers=2, steps=4, stochastic="output", output_std=0.3),
    # std 0.5: at 0.3 PPO's first updates, before its critic tells the goals apart, can push both goals' actions
    # one way, after which the other goal's successes are out of reach (collapse at 0.5; seeds 0 and 1 did)
    "gaussian": head_config("gaussian", hidden=32, init_std=0.5),
}


def toy_policy(head: str, seed: int = 0):
    torch.manual_seed(seed)
    bb = BackboneConfig(dim=32, heads=4, layers=1, vision={"width": 4, "depth": 2, "random_shift": 0}, language={"encoder": "none"})
    return make_policy(PolicyConfig(head=HEADS[head], chunk=K, action_dim=A, image_size=16, backbone=bb, tasks=["toy"]))


def algo_cfg(name: str, **kw):
    base = dict(groups_per_task=8, envs_per_task=8, group_size=8, minibatch=16, epochs=4, lr=1e-3, max_steps=10)
    if name in ("ppo", "reinforce_pp"):
        # the toy's dense reward is its success; a failed decision is truncated by the 1-step limit, and with
        # gamma > 0 the bootstrap V(next) makes failing worth as much as succeeding: a bandit has no future
        base.update(group_size=1, groups_per_task=64, shaping=0.0, gamma=0.0)
    return CONFIGS[name](**{**base, **kw})


def toy_success(policy, n: int = 128, seed: int = 10**6) -> float:
    env = ToyEnv()
    obs = [env.reset(seed=seed + i)[0] for i in range(n)]
    goals = torch.tensor([o["proprio"][0] for o in obs])
    batch = {"image": np.stack([o["image"] for o in obs]), "proprio": np.stack([o["proprio"] for o in obs]),
             "instruction": [o["instruction"] for o in obs]}  # fmt: skip
    torch.manual_seed(seed)
    acts = policy.act(batch, deterministic=False, with_log_prob=False).actions
    return float(((acts[:, :, 0].mean(1) * goals) > THRESHOLD).float().mean())


# ---------------------------------------------------------------------------------------------- rollout engine
def test_rollout_batch_schema_groups_and_exact_rescoring():
    policy = toy_policy("flow-sde")
    cfg = algo_cfg("grpo", dynamic_sampling=False, level="action")
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(0)
    b = ro.batch
    b.validate(["observation.state", "observation.images.corner", "action", "next.reward", "next.done"])
    assert len(ro) == 8 * 8 and len(ro.episodes) == 64
    assert b["action"].shape == (64, K, A) and b["old_log_prob"].shape == (64, K)
    # a group is group_size episodes from one layout seed; the groups of an iteration have different seeds
    seeds = {}
    for e in ro.episodes:
        seeds.setdefault(e["group"], set()).add(e["seed"])
    assert all(len(s) == 1 for s in seeds.values()) and len({next(iter(s)) for s in seeds.values()}) == 8
    assert all(0 <= e["seed"] < 900_000 for e in ro.episodes)  # training seeds below the validation slice only
    # re-scoring the stored actions with the stored extras reproduces the rollout log-probs
    lp = policy.log_prob(b, b["action"], ro.extras(), level="action")
    assert torch.allclose(lp, b["old_log_prob"], atol=1e-4)
    # same iteration -> same seeds (a resumed run draws the same layouts); another iteration -> others
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        assert eng.group_seeds(0, 0, 8) == [e["seed"] for e in ro.episodes[::8]]
        assert eng.group_seeds(0, 0, 8) != eng.group_seeds(1, 0, 8)


def test_dynamic_sampling_drops_uniform_groups_and_is_bounded():
    policy = toy_policy("gaussian")
    with torch.no_grad():  # a policy that always fails (actions ~ 0): every group is all-failure
        for p in policy.head.parameters():
            p.zero_()
        policy.head.log_std.fill_(-6.0)
    cfg = algo_cfg("grpo", dynamic_sampling=True, max_refill_rounds=2)
    pools = []

    def make(specs, workers=None):
        pools.append(ToyPool(specs))
        return pools[-1]

    with RolloutEngine(policy, ["toy"], cfg, make_pool=make) as eng:
        ro = eng.collect(0)
    st = ro.stats
    assert st["rollout/success"] == 0.0
    assert st["rollout/refill_rounds"] == 2  # stopped at the bound, never loops forever
    assert st["rollout/groups_drawn"] == 8 * 3 and st["rollout/groups_dropped"] == 24 and st["rollout/groups_kept"] == 0
    assert len(ro) == 0 and pools[0].resets == 24 * 8
    # nothing to learn from: the update is a no-op, not an error
    assert PolicyGradient(policy, cfg).update(ro, 0) == {"train/updates": 0}


def test_layout_edge_reaches_every_rollout_env_and_is_checked():
    policy = toy_policy("gaussian")
    pools = []

    def make(specs, workers=None):
        pools.append(ToyPool(specs))
        return pools[-1]

    with RolloutEngine(policy, ["toy"], algo_cfg("grpo", layout_edge=0.5), make_pool=make):
        pass
    with RolloutEngine(policy, ["toy"], algo_cfg("grpo"), make_pool=make):
        pass
    assert [s.get("layout_edge") for s in pools[0].specs] == [0.5] * len(pools[0].specs)
    assert all("layout_edge" not in s for s in pools[1].specs)  # off: the env's own default, nothing passed
    with pytest.raises(ValueError, match=r"layout_edge is a probability in \[0, 1\], got 1.5"):
        algo_cfg("grpo", layout_edge=1.5)


def _zero_mean_gaussian(std: float):
    """The toy Gaussian policy with every head weight zeroed (mean action 0) and the given action std."""
    policy = toy_policy("gaussian")
    with torch.no_grad():
        for p in policy.head.parameters():
            p.zero_()
        policy.head.log_std.fill_(math.log(std))
    return policy


def _pool_of(env_cls):
    """A ToyPool whose envs are ``env_cls()``."""

    class Pool(ToyPool):
        def __init__(self, specs, workers=None):
            super().__init__(specs)
            self.envs = [env_cls() for _ in specs]

    return Pool


class _ProgressEnv(ToyEnv):
    """The toy task, but a failure's progress says how close it came: |mean action| (capped at 0.9)."""

    def step(self, action):
        ob, r, term, trunc, info = super().step(action)
        if not info["success"]:
            info["progress"] = min(0.9, abs(float(np.asarray(action)[:, 0].mean())))
        return ob, r, term, trunc, info


def test_progress_score_ranks_failures_and_keeps_all_failed_groups():
    """``progress_score``: a failure scores progress_score x its best dense progress, a success 1. A group where
    every episode failed then ranks its episodes (dynamic sampling keeps it) and GRPO's std floor stops tiny
    progress differences becoming unit advantages; at 0 the same groups are dropped as before."""
    from rlvla.algos import core
    from rlvla.collectors.rollout import Episode

    # known answers: the std floor, and the score
    a = core.group_advantages(torch.tensor([[0.01, 0.02], [0.0, 1.0]]), std_floor=0.1)
    assert torch.allclose(a[0], torch.tensor([-0.05, 0.05]), atol=1e-4)  # 0.005 / 0.1, not +-0.707
    assert torch.allclose(a[1], core.group_advantages(torch.tensor([[0.0, 1.0]]))[0])  # binary groups unaffected
    ep = Episode("t", 0, 0, progress=0.8)
    assert ep.score(0.0) == 0.0 and ep.score(0.5) == pytest.approx(0.4)
    ep.success = True
    assert ep.score(0.5) == 1.0

    policy = _zero_mean_gaussian(0.05)  # actions near 0 +- 0.05: below the success threshold, every episode fails
    Pool = _pool_of(_ProgressEnv)

    kept = {}
    for ps in (0.0, 0.5):
        cfg = algo_cfg("grpo", dynamic_sampling=True, max_refill_rounds=0, groups_per_task=4, progress_score=ps)
        with RolloutEngine(policy, ["toy"], cfg, make_pool=Pool) as eng:
            ro = eng.collect(0)
        assert ro.stats["rollout/success"] == 0.0
        kept[ps] = ro.stats["rollout/groups_kept"]
        if ps > 0:
            score = ro.batch["score"]
            prog = torch.tensor([e["progress"] for e in ro.episodes for _ in range(e["decisions"])])
            assert torch.allclose(score, 0.5 * prog) and float(score.std()) > 0
            adv, _ = compute_advantages(ro.batch, cfg)
            first = torch.ones(len(ro), dtype=torch.bool)
            first[1:] = ro.batch["episode_index"][1:] != ro.batch["episode_index"][:-1]
            assert float(torch.corrcoef(torch.stack([adv[first], score[first]]))[0, 1]) > 0.5  # more progress, higher advantage
    assert kept == {0.0: 0, 0.5: 4}
    with pytest.raises(ValueError, match="every success outranks every failure"):
        algo_cfg("grpo", progress_score=1.0)


class _AlwaysSucceedsEnv(ToyEnv):
    """The toy task over 4 decisions, where an episode that has not succeeded earlier succeeds at the last one:
    every episode succeeds, after 1-4 decisions."""

    def __init__(self, steps: int = 4) -> None:
        super().__init__(steps)

    def step(self, action):
        ob, r, term, trunc, info = super().step(action)
        if trunc:
            info["success"], term, trunc = True, True, False
        return ob, float(info["success"]), term, trunc, info


def test_speed_score_ranks_successes_and_keeps_all_succeeded_groups():
    """``speed_score``: a success scores 1 + speed_score x the unused fraction of the time limit, so a group where
    every episode succeeded ranks its episodes, faster first, and dynamic sampling keeps it; at 0 it is dropped."""
    from rlvla.collectors.rollout import Episode

    ep = Episode("t", 0, 0, progress=0.8, length=50)
    assert ep.score(0.5, 0.4, 200) == pytest.approx(0.4)  # a failure: progress only
    ep.success = True
    assert ep.score(0.5) == 1.0 and ep.score(0.5, 0.4, 200) == pytest.approx(1.0 + 0.4 * 0.75)
    ep.length = 300
    assert ep.score(0.0, 0.4, 200) == 1.0  # past the limit (a chunk's last steps): never below 1
    with pytest.raises(ValueError, match="needs the episode's time limit"):
        ep.score(0.0, 0.4)

    policy = _zero_mean_gaussian(0.5)  # each decision succeeds with probability ~0.24
    Pool = _pool_of(_AlwaysSucceedsEnv)

    kept = {}
    for sp in (0.0, 0.5):
        cfg = algo_cfg("grpo", dynamic_sampling=True, max_refill_rounds=0, groups_per_task=4, speed_score=sp, max_steps=4 * K)
        torch.manual_seed(0)
        with RolloutEngine(policy, ["toy"], cfg, make_pool=Pool) as eng:
            ro = eng.collect(0)
        assert ro.stats["rollout/success"] == 1.0
        kept[sp] = ro.stats["rollout/groups_kept"]
        if sp > 0:
            length = torch.tensor([float(e["length"]) for e in ro.episodes for _ in range(e["decisions"])])
            assert torch.allclose(ro.batch["score"], 1.0 + 0.5 * (1.0 - length / (4 * K)))
            adv, _ = compute_advantages(ro.batch, cfg)
            assert float(torch.corrcoef(torch.stack([adv, -length]))[0, 1]) > 0.5  # faster, higher advantage
    assert kept == {0.0: 0, 0.5: 4}
    with pytest.raises(ValueError, match="speed_score must be in"):
        algo_cfg("grpo", speed_score=1.5)


def test_layout_replay_redraws_mixed_layouts_only_and_resumes():
    """``replay``: that fraction of a round's groups replays layouts whose latest group had mixed outcomes (newest
    first); uniform layouts never enter the list, a replayed layout leaves it, and the list survives a resume."""
    policy = toy_policy("gaussian")
    with torch.no_grad():
        policy.head.log_std.fill_(math.log(2.0))  # wide: most groups mix successes and failures
    cfg = algo_cfg("grpo", dynamic_sampling=False, groups_per_task=4, envs_per_task=4, group_size=6, replay=0.5)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro0 = eng.collect(0)
        mixed0 = [g for g in range(4) if len({e["success"] for e in ro0.episodes if e["group"] == g}) > 1]
        seeds0 = [ro0.episodes[6 * g]["seed"] for g in range(4)]
        assert ro0.stats["rollout/groups_replayed"] == 0 and len(mixed0) >= 2
        assert eng.replay["toy"] == [seeds0[g] for g in mixed0]
        saved = eng.state()
        ro1 = eng.collect(1)
    seeds1 = [ro1.episodes[6 * g]["seed"] for g in range(4)]
    fresh1 = RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool).group_seeds(1, 0, 4)
    assert ro1.stats["rollout/groups_replayed"] == 2
    assert seeds1[:2] == [seeds0[mixed0[-1]], seeds0[mixed0[-2]]] and seeds1[2:] == fresh1[2:]  # newest first, then fresh
    # a resumed engine replays the same layouts
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng2:
        eng2.load_state(saved)
        assert [e["seed"] for e in eng2.collect(1).episodes[::6]] == seeds1
    # uniform groups (a policy that always fails) never enter the list; the setting is checked
    with torch.no_grad():
        for p in policy.head.parameters():
            p.zero_()
        policy.head.log_std.fill_(-6.0)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng3:
        eng3.collect(0)
        assert eng3.replay["toy"] == []
    # half of one wanted group rounds up: it is replayed (Python's round(0.5) would give none)
    one = algo_cfg("grpo", dynamic_sampling=False, groups_per_task=1, envs_per_task=4, group_size=6, replay=0.5)
    with RolloutEngine(toy_policy("gaussian"), ["toy"], one, make_pool=ToyPool) as eng4:
        eng4.load_state({"replay": {"toy": [12345]}})
        ro4 = eng4.collect(0)
        assert ro4.stats["rollout/groups_replayed"] == 1 and ro4.episodes[0]["seed"] == 12345
    with pytest.raises(ValueError, match="replay is a fraction"):
        algo_cfg("grpo", replay=1.5)


@pytest.mark.parametrize("head", ["flow-sde", "diffusion"])
def test_output_exploration_is_a_gaussian_around_the_deterministic_chain(head):
    """``explore_steps=output``: the action is the deterministic sampler's result from the stored starting noise
    plus N(0, output_std^2); its log-prob recomputes the chain with the current weights (exact for any change of
    the network: every denoising step's weights get gradient) and equals the sampling log-prob."""
    from rlvla.algos.online.explore import with_exploration
    from rlvla.policies.heads.base import gaussian_log_prob

    base = toy_policy(head)
    assert with_exploration(base) is base  # nothing to change: the same policy, not a copy
    policy = with_exploration(base, 0.2, "output")
    assert policy is not base and policy.cfg.head.stochastic == "output" and policy.cfg.head.output_std == 0.2
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), base.state_dict().values()))
    obs = _toy_obs(512)
    torch.manual_seed(0)
    act = policy.act(obs, deterministic=False, level="chunk")
    lp = policy.log_prob(obs, act.actions, act.extras, level="chunk")
    assert torch.allclose(lp, act.log_prob, atol=1e-4)
    z = policy.encode(obs)[0]
    mean = policy.head._deterministic_path(z, act.extras["x0"])
    assert torch.allclose(mean.clamp(-1, 1), policy.deterministic_like(obs, act.actions, act.extras), atol=1e-5)
    resid = act.extras["sample"] - mean
    assert resid.std().item() == pytest.approx(0.2, rel=0.05) and abs(resid.mean().item()) < 0.01
    expected = gaussian_log_prob(act.extras["sample"], mean, torch.full_like(mean, 0.2)).sum((-1, -2))
    assert torch.allclose(lp, expected, atol=1e-4)
    policy.zero_grad()
    lp.sum().backward()
    assert policy.head.net.blocks[0][1].weight.grad.abs().sum() > 0  # the chain's network learns through every step


# ---------------------------------------------------------------------------------------------- advantages
def _batch(rewards, episode, group, score, task=None, terminated=None, done=None, values=None, next_values=None):
    n = len(rewards)
    done_t = torch.tensor(done if done is not None else [True] * n)
    return Batch({
        "next.reward": torch.tensor(rewards, dtype=torch.float32),
        "episode_index": torch.tensor(episode), "group_index": torch.tensor(group),
        "score": torch.tensor(score, dtype=torch.float32),
        "task_id": torch.tensor(task if task is not None else [0] * n),
        "next.terminated": torch.tensor(terminated if terminated is not None else done_t.tolist()), "next.done": done_t,
        "value": torch.tensor(values if values is not None else [0.0] * n),
        "next_value": torch.tensor(next_values if next_values is not None else [0.0] * n),
    })  # fmt: skip


def test_group_advantages_broadcast_to_every_decision_of_an_episode():
    # 2 groups of 2 episodes; episodes have 2, 1, 1, 3 decisions
    ep = [0, 0, 1, 2, 3, 3, 3]
    grp = [5, 5, 5, 9, 9, 9, 9]
    score = [1, 1, 0, 0, 1, 1, 1]
    b = _batch([0.0] * 7, ep, grp, score)
    adv, ret = compute_advantages(b, CONFIGS["grpo"](normalize_std=False))
    assert ret is None
    assert torch.allclose(adv, torch.tensor([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, 0.5]))
    adv, _ = compute_advantages(b, CONFIGS["grpo"]())  # std of (1, 0) is 0.7071
    assert torch.allclose(adv, torch.tensor([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, 0.5]) / 0.70710678, atol=1e-5)
    adv, _ = compute_advantages(b, CONFIGS["rloo"]())  # r_i - r_other
    assert torch.allclose(adv, torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0]))


def test_reinforce_pp_returns_to_go_and_ppo_per_task_normalisation():
    # one episode of 3 decisions (reward at the end) + one of 1; gamma 0.5
    b = _batch([0.0, 0.0, 1.0, 2.0], [0, 0, 0, 1], [0, 0, 0, 1], [1, 1, 1, 1], done=[False, False, True, True])
    adv, _ = compute_advantages(b, CONFIGS["reinforce_pp"](gamma=0.5))
    ret = torch.tensor([0.25, 0.5, 1.0, 2.0])
    assert torch.allclose(adv, (ret - ret.mean()) / ret.std(), atol=1e-5)
    # PPO: two tasks on very different reward scales end up with the same spread
    b = _batch([1.0, 3.0, 100.0, 300.0], [0, 1, 2, 3], [0, 1, 2, 3], [0] * 4, task=[0, 0, 1, 1])
    adv, ret = compute_advantages(b, CONFIGS["ppo"]())
    assert torch.allclose(ret, b["next.reward"])  # terminated: no bootstrap, V = 0
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-5)


def test_nan_advantages_stop_the_update_with_a_message():
    policy = toy_policy("gaussian")
    cfg = algo_cfg("ppo")
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(0, need_values=True)
    ro.batch["value"][3] = float("nan")  # e.g. a diverged value head
    with pytest.raises(NonFiniteLossError, match=r"^advantages has 64 NaN/inf value\(s\) at iteration 7$"):
        PolicyGradient(policy, cfg).update(ro, 7)
    ro.batch["next.reward"][3] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"^rewards has 1 NaN/inf value\(s\) at iteration 7$"):
        PolicyGradient(policy, cfg).update(ro, 7)


def core_kl(lp, ref_lp):
    from rlvla.algos import core

    return core.kl_k3(lp, ref_lp).mean()


def test_frozen_backbone_trains_only_the_heads_and_kl_stops_early():
    policy = toy_policy("flow-sde")
    cfg = algo_cfg("grpo", freeze_backbone=True, dynamic_sampling=False)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(0)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    import copy

    ref = copy.deepcopy(policy).eval()
    m = PolicyGradient(policy, cfg, ref_policy=ref).update(ro, 0)
    assert m["train/ratio_error0"] < 1e-4 and m["train/updates"] == 4 * 4
    assert m["train/kl_ref"] > 0  # the drift from the start, from the reference head on the cached readouts
    # ... the same number as the reference policy's full pass
    b = ro.batch
    lp = policy.log_prob(b, b["action"], ro.extras(), level="chunk")
    with torch.no_grad():
        full = core_kl(lp, ref.log_prob(b, b["action"], ro.extras(), level="chunk"))
        fast = core_kl(lp, ref.head.log_prob(policy.encode(b)[0], b["action"], ro.extras()).sum((-1, -2)))
    assert torch.allclose(full, fast, atol=1e-5)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("head.") for n in changed), sorted(changed)[:5]
    # with a tiny KL target the iteration stops as soon as a minibatch has moved the policy (the first one sees
    # ratio 1, KL 0; the second sees the first's step)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(1)  # a fresh rollout of the updated policy: its first minibatch sees ratio 1
    m = PolicyGradient(policy, algo_cfg("grpo", target_kl=1e-9, dynamic_sampling=False)).update(ro, 1)
    # SB3's rule: the KL is checked before the optimiser step, so the step that would overshoot is never taken
    assert m["train/updates"] == 1 and m["train/early_stop"] == 1.0
    assert m["train/stop_kl"] > 1.5e-9  # the KL that stopped it is logged (the mean is over the steps taken)


def _toy_obs(n: int = 256, seed: int = 3) -> dict:
    obs = ToyEnv().reset(seed=seed)[0]
    return {k: (np.stack([v] * n) if k != "instruction" else [v] * n) for k, v in obs.items()}


def _explore_std(policy, obs) -> float:
    torch.manual_seed(0)
    act = policy.act(obs, deterministic=False)
    det = policy.deterministic_like(obs, act.actions, act.extras)
    return float(((act.actions - det) ** 2).mean().sqrt())


@pytest.mark.parametrize("head", list(HEADS))
def test_explore_noise_sets_the_action_space_spread_and_is_recorded(head, tmp_path):
    from rlvla.algos.online.explore import with_exploration
    from rlvla.policies import VLAPolicy

    base = toy_policy(head)
    if head == "token":  # a peaked (trained-like) token distribution: at random init every bin is as likely
        with torch.no_grad():
            base.head.logits.weight.mul_(30.0)
    obs = _toy_obs()
    stds = []
    for noise in (0.05, 0.6):
        policy = with_exploration(base, noise)  # as an RL run starts: config and weight-level parts
        if head == "gaussian":
            assert torch.allclose(policy.head.log_std, torch.full_like(policy.head.log_std, math.log(noise)))
        stds.append(_explore_std(policy, obs))
        assert VLAPolicy.read_config(policy.save_pretrained(tmp_path / f"{head}{noise}")).head == policy.cfg.head
    assert stds[1] > 1.5 * stds[0], stds  # the knob moves the spread of the sampled actions


def test_token_output_mode_samples_locally_around_the_greedy_decode_and_rescores_exactly():
    """Token head, ``explore_steps=output``: the greedy decode is the centre, each token is drawn given the greedy
    prefix with a Gaussian kernel around the greedy bin; re-scoring reproduces the sampling log-prob, the spread
    follows the kernel (pure kernel at a high temperature), and the network's logits get gradient."""
    from rlvla.algos.online.explore import exploration_config, with_exploration

    base = toy_policy("token")
    with torch.no_grad():
        base.head.logits.weight.mul_(30.0)  # peaked, trained-like: plain sampling flips far bins and cascades
    obs = _toy_obs(256)
    stds = {}
    for sigma, temp in ((0.05, 1000.0), (0.3, 1000.0), (0.1, 3.0)):
        policy = with_exploration(base, sigma, "output", temperature=temp)
        assert policy.cfg.head.kernel == sigma and policy.cfg.head.temperature == temp
        torch.manual_seed(0)
        act = policy.act(obs, deterministic=False, level="token")
        greedy = policy.deterministic_like(obs, act.actions, act.extras)
        assert torch.equal(policy.head.undiscretise(act.extras["center"]), greedy)  # the centre is the greedy decode
        lp = policy.log_prob(obs, act.actions, act.extras, level="token")
        assert torch.allclose(lp, act.log_prob, atol=1e-4)
        d = act.actions - greedy
        stds[(sigma, temp)] = float(d.pow(2).mean().sqrt())
        assert d.abs().max() < 6 * sigma + 0.1  # local: no far bin
    # at a high temperature the network's logits are flat: the spread is the kernel's (bins of width 1/16 here)
    assert stds[(0.3, 1000.0)] == pytest.approx(0.3, rel=0.15) and stds[(0.05, 1000.0)] < 0.08
    policy.zero_grad()
    lp.sum().backward()
    assert policy.head.logits.weight.grad.abs().sum() > 0
    # a temperature alone keeps plain autoregressive sampling (no centre stored)
    plain = with_exploration(base, temperature=0.3)
    assert plain.cfg.head.kernel == 0 and "center" not in plain.act(obs, deterministic=False, level="token").extras
    # invalid combinations are one-line errors
    for kwargs, needle in (({"noise": 0.1, "steps_mode": "one"}, "token head takes output"),
                           ({"steps_mode": "output"}, "needs explore_noise > 0")):  # fmt: skip
        with pytest.raises(ValueError, match=needle):
            exploration_config(base.cfg, **kwargs)
    with pytest.raises(ValueError, match="applies to the token head"):
        exploration_config(toy_policy("flow-sde").cfg, temperature=2.0)


def test_exact_token_kl_sees_a_far_bin_that_sampled_kl_cannot():
    """Local token exploration samples only near the greedy bin, so a KL estimated on its samples cannot see a far
    bin's logit rising until it becomes the greedy decode (measured: GRPO with local exploration flipped the greedy
    decode of 94% of chunks, the first flip a median 95 bins away). ``kl_estimator=exact`` takes the KL over every
    bin: known answer against a direct sum, and it is large exactly where the sampled k3 is ~0."""
    import copy

    from rlvla.algos import core
    from rlvla.algos.online.explore import with_exploration

    logits = torch.tensor([[2.0, 0.0, -1.0]])
    ref = torch.tensor([[0.0, 1.0, 0.0]])
    p, q = logits.softmax(-1), ref.softmax(-1)
    assert float(core.kl_exact(logits, ref)) == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-6)
    assert float(core.kl_exact(ref, ref)) == pytest.approx(0.0, abs=1e-7)

    base = toy_policy("token")
    with torch.no_grad():
        base.head.logits.weight.mul_(30.0)
    policy = with_exploration(base, 0.05, "output", temperature=1.0)
    ref_policy = copy.deepcopy(policy).eval()
    obs = _toy_obs(64)
    torch.manual_seed(0)
    act = policy.act(obs, deterministic=False, level="token")
    with torch.no_grad():
        z = policy.encode(obs)[0]
    lp_ref = ref_policy.head.log_prob(z, act.actions, act.extras)
    with torch.no_grad():  # raise a bin far (> 0.5) from every greedy token until it is every token's argmax
        greedy_values = policy.head.undiscretise(act.extras["center"]).reshape(1, -1)
        far = int((policy.head.centers[0][:, None] - greedy_values).abs().min(1).values.argmax())  # same bins per dim here
        lg = policy.head.dist_logits(z, act.extras)
        policy.head.logits.bias[far] += float((lg.max(-1).values - lg[..., far]).max()) + 2.0
    lp_new = policy.head.log_prob(z, act.actions, act.extras)
    k3 = float(core.kl_k3(lp_new, lp_ref).mean())
    exact = float(core.kl_exact(policy.head.dist_logits(z, act.extras), ref_policy.head.dist_logits(z, act.extras)).mean())
    greedy_before = ref_policy.head.sample(z, deterministic=True, with_log_prob=False)[0]
    greedy_after = policy.head.sample(z, deterministic=True, with_log_prob=False)[0]
    assert float((greedy_after - greedy_before).abs().max()) > 0.5  # the greedy decode jumped far
    assert k3 < 1e-3 < 1.0 < exact, (k3, exact)
    # the setting's limits are one-line errors
    with pytest.raises(ValueError, match="needs a discrete"):
        PolicyGradient(toy_policy("flow-sde"), CONFIGS["grpo"](kl_estimator="exact", freeze_backbone=True), ref_policy=toy_policy("flow-sde"))
    with pytest.raises(ValueError, match="needs algo.freeze_backbone=true"):
        PolicyGradient(policy, CONFIGS["grpo"](kl_estimator="exact"), ref_policy=ref_policy)


def test_flow_one_step_sde_samples_at_one_step_and_rescores_exactly():
    from rlvla.algos.online.explore import exploration_config
    from rlvla.policies import VLAPolicy

    base = toy_policy("flow-sde")
    policy = VLAPolicy(exploration_config(base.cfg, 0.5, "one"))
    policy.load_state_dict(base.state_dict())
    obs = _toy_obs(64)
    torch.manual_seed(1)
    act = policy.act(obs, deterministic=False, level="token")
    picks, chain = act.extras["sde_step"], act.extras["chain"]
    assert picks.shape == (64,) and picks.min() >= 0 and picks.max() < policy.cfg.head.steps
    assert len(set(picks.tolist())) > 1  # drawn per decision
    # before the picked step the chain follows the ODE: the deterministic run from the same noise agrees there
    z = policy.encode(obs)[0]
    ode = policy.head.sample(z, deterministic=True, with_log_prob=False, x0=chain[:, 0])[2]["chain"]
    for b in range(64):
        i = int(picks[b])
        assert torch.allclose(chain[b, : i + 1], ode[b, : i + 1], atol=1e-5)
        assert not torch.allclose(chain[b, i + 1], ode[b, i + 1], atol=1e-3)
    lp = policy.log_prob(obs, act.actions, act.extras, level="token")
    assert torch.allclose(lp, act.log_prob, atol=1e-4)
    assert policy.entropy(obs, act.extras, level="chunk").shape == (64,)


class StepEnv(ToyEnv):
    """Never succeeds; ``steps`` decisions then a time-limit truncation. Env reward 1 per decision; the dense
    reward (shaping potential x 10) of the state after decision t is ``10 * (t + 1) / steps``."""

    def step(self, action):
        self.t += 1
        info = {"success": False, "substeps": K, "progress": self.t / self.steps}
        return self._obs(), 1.0, False, self.t >= self.steps, info


def _constant_value_policy(c: float):
    policy = toy_policy("gaussian")
    with torch.no_grad():
        policy.value_head[-1].weight.zero_()
        policy.value_head[-1].bias.fill_(c)
    return policy


def test_time_limit_bootstrap_through_a_whole_rollout_with_a_constant_value():
    """SB3's test_gae pattern through the engine: reward 1 per decision, V = c everywhere, episodes cut by the
    time limit after T decisions. With lambda = 1 the value target at decision t is the discounted sum of the
    remaining rewards plus the bootstrapped V(final obs) = c: (1 - g^(T-t)) / (1 - g) + g^(T-t) c."""
    T, g, c = 6, 0.9, 2.0
    cfg = algo_cfg("ppo", groups_per_task=3, envs_per_task=3, success_bonus=0.0, env_reward=1.0, gamma=g, lam=1.0,
                   advantage_norm="none", max_steps=100)  # fmt: skip
    with RolloutEngine(_constant_value_policy(c), ["toy"], cfg, make_pool=lambda s, workers=None: ToyPool(s, steps=T)) as eng:
        eng.pool.envs = [StepEnv(T) for _ in eng.pool.envs]
        ro = eng.collect(0, need_values=True)
    b = ro.batch
    assert len(ro) == 3 * T and b["next.truncated"].sum() == 3 and not b["next.terminated"].any()
    assert torch.allclose(b["value"], torch.full((3 * T,), c)) and torch.allclose(b["next_value"], torch.full((3 * T,), c))
    adv, ret = compute_advantages(b, cfg)
    t = b["frame_index"].double()
    expected = (1 - g ** (T - t)) / (1 - g) + g ** (T - t) * c
    assert torch.allclose(ret.double(), expected, atol=1e-5)
    assert torch.allclose(adv.double(), expected - c, atol=1e-5)


def test_potential_based_shaping_telescopes_over_an_episode():
    """Shaping rewards gamma * phi(s') - phi(s) sum (discounted) to gamma^T phi(s_T) - phi(s_0) whatever the path:
    here phi(s_0) = 0 and phi(s_T) = 1, so the discounted shaped return of every episode is gamma^T."""
    T, g = 5, 0.9
    cfg = algo_cfg("ppo", groups_per_task=2, envs_per_task=2, success_bonus=0.0, env_reward=0.0, shaping=1.0, gamma=g, max_steps=100)
    with RolloutEngine(toy_policy("gaussian"), ["toy"], cfg, make_pool=lambda s, workers=None: ToyPool(s, steps=T)) as eng:
        eng.pool.envs = [StepEnv(T) for _ in eng.pool.envs]
        ro = eng.collect(0)
    r, ep, t = ro.batch["next.reward"].double(), ro.batch["episode_index"], ro.batch["frame_index"].double()
    for e in ep.unique():
        m = ep == e
        assert (r[m] * g ** t[m]).sum().item() == pytest.approx(g**T, abs=1e-6)
        assert r[m][0].item() == pytest.approx(g * 1 / T, abs=1e-6)  # the first step: g * phi(s_1) - 0


def test_group_loss_weights_decisions_not_episodes():
    """GRPO's surrogate is a mean over decisions (a constant normaliser, as Dr. GRPO recommends), not a mean per
    episode: at ratio 1 its gradient is -(1/N) sum_i A_i sum_t grad log pi(a_t | s_t), the policy gradient of each
    episode's outcome. Dividing each episode by its own length (GRPO's original 1/|o_i|) would weight the decisions
    of short (here: successful) episodes more; this pins that it does not happen."""
    policy = toy_policy("gaussian")
    cfg = algo_cfg("grpo", dynamic_sampling=False, epochs=1, minibatch=10_000, group_size=2, groups_per_task=2, envs_per_task=2)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=lambda s, workers=None: ToyPool(s, steps=3)) as eng:
        ro = eng.collect(0)
    b, n = ro.batch, len(ro)
    adv, _ = compute_advantages(b, cfg)
    lp = policy.log_prob(b, b["action"], ro.extras(), level="chunk")
    (expected,) = torch.autograd.grad(-(adv * lp).sum() / n, policy.head.log_std)
    pg = PolicyGradient(policy, cfg, grad_clip=0.0)  # no clipping: the raw gradient
    pg.opt.step = lambda *a, **k: None  # keep the gradient, skip the step
    pg.update(ro, 0)
    assert torch.allclose(policy.head.log_std.grad, expected, atol=1e-6)
    assert len(set(e["decisions"] for e in ro.episodes)) > 1  # episodes of different lengths took part


# ---------------------------------------------------------------------------------------------- learning
def _learn(head: str, algo: str, iterations: int, **kw) -> tuple[float, float, list]:
    policy = toy_policy(head)
    cfg = algo_cfg(algo, **kw)
    pg = PolicyGradient(policy, cfg, seed=0)
    before = toy_success(policy)
    hist = []
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        for it in range(iterations):
            ro = eng.collect(it, need_values=pg.uses_value)
            m = pg.update(ro, it)
            hist.append((ro.stats["rollout/success"], m.get("train/ratio_error0")))
    return before, toy_success(policy), hist


@pytest.mark.parametrize("head", list(HEADS))
def test_grpo_raises_success_on_a_toy_task_for_every_head(head):
    before, after, hist = _learn(head, "grpo", 25)
    assert all(r is None or r < 1e-3 for _, r in hist)  # the first minibatch's ratio is 1 (same kernels, eval mode)
    assert after >= before + 0.3 and after >= 0.7, (before, after, hist)


@pytest.mark.parametrize("algo", ["ppo", "rloo", "reinforce_pp"])
def test_other_algorithms_raise_success_on_the_toy_task(algo):
    before, after, hist = _learn("gaussian", algo, 25)
    assert after >= before + 0.3 and after >= 0.7, (before, after, hist)


# ---------------------------------------------------------------------------------------------- robustness, real envs
def _mw_policy(tmp_path=None):
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, heads=4, layers=1, vision={"width": 4, "depth": 2, "random_shift": 0}, language={"encoder": "none"})
    return make_policy(PolicyConfig(head=HEADS["gaussian"], chunk=4, action_dim=4, image_size=32, backbone=bb, tasks=["reach-v3"]))


def test_a_worker_killed_mid_rollout_is_restarted_and_the_iteration_completes():
    import os
    import signal

    from rlvla.envs.pool import EnvPool

    policy = _mw_policy()
    cfg = CONFIGS["grpo"](group_size=2, groups_per_task=2, envs_per_task=2, max_steps=24, dynamic_sampling=False)
    calls = {"n": 0}

    class KillingPool(EnvPool):
        def step_async(self, actions):
            calls["n"] += 1
            if calls["n"] == 5:  # mid-episode: SIGKILL the worker that holds env 0
                p = self._procs[self.owner[0]]
                os.kill(p.pid, signal.SIGKILL)
                p.join(timeout=10)
            return super().step_async(actions)

    with RolloutEngine(policy, ["reach-v3"], cfg, workers=2, make_pool=KillingPool) as eng:
        ro = eng.collect(0)
        assert all(p.is_alive() for p in eng.pool._procs)
    assert ro.stats["rollout/worker_restarts"] == 1
    # every group is whole: the lost episodes ran again from their seeds
    groups = {}
    for e in ro.episodes:
        groups.setdefault(e["group"], []).append(e)
    assert len(groups) == 2 and all(len(g) == 2 and len({e["seed"] for e in g}) == 1 for g in groups.values())
    assert all(e["decisions"] == 6 or e["success"] for e in ro.episodes)  # 24 steps / chunk 4, unless solved early
    ro.batch.validate(["observation.images.corner", "action"])


def _rl_cmd(init, run_dir, *extra):
    import sys

    return [sys.executable, "-m", "rlvla.cli", "train", "algo=grpo", f"init={init}", f"run_dir={run_dir}", "algo.iterations=50",
            "algo.group_size=2", "algo.groups_per_task=1", "algo.envs_per_task=2", "algo.max_steps=24", "algo.workers=0",
            "algo.dynamic_sampling=false", *extra, "--quiet"]  # fmt: skip


def test_sigint_during_rl_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import time

    init = _mw_policy().save_pretrained(tmp_path / "init")
    run = tmp_path / "rl"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.Popen(_rl_cmd(init, run, "algo.replay=1.0"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads((run / "train_summary.json").read_text())
    done = summary["step"]
    assert summary["status"] == "interrupted" and done >= 2
    assert (run / "checkpoints" / f"step_{done:08d}" / "policy" / "model.safetensors").exists()
    meta = json.loads((run / "checkpoints" / f"step_{done:08d}" / "trainer.json").read_text())
    assert set(meta["engine"]["replay"]) == set(summary["tasks"])  # the layout-replay list travels with the checkpoint
    # the same command resumes from that checkpoint (here with fewer iterations, so it finishes quickly)
    res = subprocess.run(_rl_cmd(init, run, "algo.replay=1.0", f"algo.iterations={done + 1}"), env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert f"resuming {run} from iteration {done}" in res.stderr, res.stderr[-2000:]


def test_rl_config_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "rlvla.cli", "train", *args, "--quiet"], capture_output=True, text=True, timeout=120)

    r = run("algo=grpo", f"run_dir={tmp_path / 'a'}")
    assert r.returncode == 2 and "needs init=" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run("algo=grpo", "algo.level=word", f"init={tmp_path}", f"run_dir={tmp_path / 'b'}")
    assert r.returncode == 2 and "unknown log-prob level 'word'" in r.stderr, r.stderr
    r = run("algo=grpo", "algo.group_size=1", f"init={tmp_path}", f"run_dir={tmp_path / 'c'}")
    assert r.returncode == 2 and "grpo needs group_size >= 2" in r.stderr, r.stderr
    r = run("algo=a2c")
    assert r.returncode == 2 and "a2c" in r.stderr, r.stderr
    r = run("algo=grpo", f"init={tmp_path / 'nothing'}", f"run_dir={tmp_path / 'd'}")
    assert r.returncode == 2 and "does not exist" in r.stderr, r.stderr


def test_quickstart_pipeline_end_to_end_in_miniature(tmp_path):
    """demos -> SFT -> eval -> baselines -> GRPO -> eval -> report.html + summary.json, then a rerun reuses every
    stage."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "rlvla.cli", "quickstart", f"--out={out}", "--tasks=grounded/reach,grounded/push",
           "--episodes=1", "--steps=4", "--budget=30", "--baseline-steps=2", "--baseline-splits=id,ood-position",
           "--eval-episodes=5", "--ood-episodes=3", "--sample-episodes=4", "--eval-max-steps=24", "--rl-iterations=1", "--sft", "algo.aux_layouts=3", "algo.aux_warmup=2", "policy.backbone.dropout=0.05",
           "--rl", "algo.group_size=2",
           "algo.groups_per_task=1", "algo.envs_per_task=1", "algo.max_steps=16"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"sft", "rl", "baselines", "sft_sample", "rl_sample", "headline", "wall_s", "peak_rss_mb", "config"}
    # the baselines: the same demos, the image or the instruction blanked, evaluated on the VLA's episodes
    assert sorted(summary["baselines"]) == ["blind", "language_blind"]
    for name, ablate in (("blind", "image"), ("language_blind", "language")):
        res = summary["baselines"][name]
        assert sorted(res["splits"]) == ["id", "ood-position"] and res["max_steps"] == 24  # cut where the VLA's were
        assert [tuple(e[:2]) for e in res["splits"]["id"]["per_episode"]] == [tuple(e[:2]) for e in summary["sft"]["splits"]["id"]["per_episode"]]
        # each stage's weights are where its summary says (a run cut by its time budget saves under its checkpoint)
        assert res["checkpoint"].startswith(str(out / f"sft_flow_{name}"))
        cfg = json.loads((Path(res["checkpoint"]) / "config.json").read_text())
        assert cfg["policy"]["backbone"]["ablate"] == [ablate]
        assert cfg["policy"]["backbone"]["dropout"] == 0.05  # --sft reaches the baselines too
        # a shorter baseline keeps the recipe's proportions: 2 warm-up steps of 4 -> 1 of 2
        recipe = json.loads((out / f"sft_flow_{name}" / "quickstart_recipe.json").read_text())["overrides"]
        assert "train.steps=2" in recipe and "algo.aux_warmup=1" in recipe
    # the SFT recipe: its defaults, then --sft (later wins)
    from rlvla.runners.quickstart import SFT_DEFAULTS

    sft_over = summary["config"]["sft_overrides"]
    assert all(o in sft_over for o in SFT_DEFAULTS) and sft_over[-1] == "policy.backbone.dropout=0.05"
    assert summary["sft"]["checkpoint"].startswith(str(out / "sft_flow" / ""))
    sft_cfg = json.loads((Path(summary["sft"]["checkpoint"]) / "config.json").read_text())
    assert sft_cfg["policy"]["backbone"]["dropout"] == 0.05
    assert {e[0] for e in summary["sft"]["splits"]["id"]["per_episode"]} == {"grounded/reach", "grounded/push"}
    splits = ["id", "ood-position", "ood-visual", "ood-camera", "ood-language"]
    for key in ("sft", "rl"):
        assert sorted(summary[key]["splits"]) == sorted(splits)
        assert [summary[key]["splits"][s]["episodes"] for s in splits] == [5, 3, 3, 3, 3]
        assert summary[key]["deterministic"] and not summary[f"{key}_sample"]["deterministic"]
        assert list(summary[f"{key}_sample"]["splits"]) == ["id"] and summary[f"{key}_sample"]["splits"]["id"]["episodes"] == 4
    assert summary["headline"]["evaluation"] == "deterministic"
    # --eval-max-steps cuts every evaluation episode (the smoke run's budget), and is recorded
    assert summary["config"]["eval_max_steps"] == 24 and summary["sft"]["max_steps"] == 24
    assert all(summary[k]["splits"][s]["mean_length"] <= 24 for k in ("sft", "rl") for s in splits)
    # the sampled SFT policy samples as the RL run starts to: the RL run's exploration settings, recorded
    assert summary["sft_sample"]["explore"] == {"noise": 0.15, "steps_mode": "output", "denoise_steps": 5, "temperature": 0.0}
    # the same evaluation episodes before and after RL (paired)
    pairs = lambda k: [tuple(e[:2]) for e in summary[k]["splits"]["id"]["per_episode"]]  # noqa: E731
    assert pairs("sft") == pairs("rl")
    assert summary["rl"]["checkpoint"] != summary["sft"]["checkpoint"]
    html = (out / "report.html").read_text()
    assert html.count('class="split-row"') == 5 and html.count('class="sample-row"') == 1 and "learning_curves.png" in html
    assert html.count('class="baseline-row"') == 2 and "language_blind" in html
    assert "rl_diagnostics.png" in html
    assert (out / "report_files" / "learning_curves.png").exists() and list((out / "videos" / "rl").glob("id_*.gif"))
    assert "change" in r.stdout and "wrote" in r.stdout
    # a rerun reuses every finished stage
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count("already finished") == 4 and r2.stdout.count("reusing") == 6, r2.stdout


def _one_step_moves(**overrides) -> dict[str, float]:
    """Each parameter's largest change after one full-batch Adam step of GRPO on a toy flow policy."""
    policy = toy_policy("flow-sde")
    cfg = algo_cfg("grpo", dynamic_sampling=False, epochs=1, minibatch=10**6, target_kl=0.0, **overrides)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(0)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    assert PolicyGradient(policy, cfg).update(ro, 0)["train/updates"] == 1
    return {n: float((p.detach() - before[n]).abs().max()) for n, p in policy.named_parameters()}


def _largest(moved: dict[str, float], part) -> float:
    return max(v for n, v in moved.items() if part(n))


def test_trunk_lr_scale_slows_only_the_trunk():
    """An unfrozen trunk at trunk_lr_scale=0.1 moves a tenth as far per Adam step as at 1.0; the head moves alike."""
    moves = {scale: _one_step_moves(trunk_lr_scale=scale) for scale in (1.0, 0.1)}
    trunk, head = (lambda n: n.startswith("backbone.")), (lambda n: n.startswith("head."))
    assert _largest(moves[0.1], trunk) == pytest.approx(0.1 * _largest(moves[1.0], trunk), rel=0.05)
    assert _largest(moves[0.1], head) == pytest.approx(_largest(moves[1.0], head), rel=0.05)
    with pytest.raises(ValueError, match="trunk_lr_scale must be > 0"):
        algo_cfg("grpo", trunk_lr_scale=0.0)
    with pytest.raises(ValueError, match="applies to a trainable trunk"):  # a frozen trunk would ignore it silently
        algo_cfg("grpo", trunk_lr_scale=0.1, freeze_backbone=True)


def test_cond_lr_scale_speeds_only_the_heads_conditioning_layer():
    """cond_lr_scale=10: the head's map from z moves ten times as far per Adam step; the rest of the head and the
    trunk move as at 1.0. Every head names that layer, and it reads the trunk's readout."""
    moves = {scale: _one_step_moves(cond_lr_scale=scale) for scale in (1.0, 10.0)}
    cond = lambda n: n.startswith("head.net.z_proj.")  # noqa: E731
    rest = lambda n: not cond(n)  # noqa: E731
    assert _largest(moves[1.0], cond) > 0
    assert _largest(moves[10.0], cond) == pytest.approx(10 * _largest(moves[1.0], cond), rel=0.05)
    assert _largest(moves[10.0], rest) == pytest.approx(_largest(moves[1.0], rest), rel=0.05)
    for name in ("token", "diffusion", "flow-sde", "gaussian"):
        layer = toy_policy(name).head.condition_layer()
        assert isinstance(layer, torch.nn.Linear) and layer.in_features == 32, name  # the toy trunk's dim
    with pytest.raises(ValueError, match="cond_lr_scale must be > 0"):
        algo_cfg("grpo", cond_lr_scale=0.0)
    from rlvla.policies.state import StatePolicy, StatePolicyConfig

    for bad in ({"cond_lr_scale": 2.0}, {"cond_standardize": "std"}):
        with pytest.raises(ValueError, match="apply to a VLA policy's action head"):
            PolicyGradient(StatePolicy(StatePolicyConfig(state_dim=4)), algo_cfg("ppo", **bad))


@pytest.mark.parametrize("mode", ["std", "whiten"])
def test_cond_standardize_reparametrises_the_conditioning_layer_once_without_changing_the_policy(mode):
    """At the first update the head's conditioning layer is standardised on that rollout's readouts: the log-probs
    of the rollout's actions are unchanged at that moment (the first minibatch's ratio error stays ~0), the
    statistics are those of the readouts, and a second update (or a resumed run) does not standardise again."""
    policy = toy_policy("flow-sde")
    cfg = algo_cfg("grpo", dynamic_sampling=False, cond_standardize=mode)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(0)
        algo = PolicyGradient(policy, cfg)
        layer = policy.head.condition_layer()
        with torch.no_grad():
            z = algo._features(ro)["z"]
        assert not layer.is_standardized()
        m = algo.update(ro, 0)
        assert layer.is_standardized() and m["train/updates"] >= 1
        assert m["train/ratio_error0"] < 1e-4
        assert m["train/cond_in_gain"] > 1  # the toy trunk's readouts vary by less than 1
        assert torch.allclose(layer.in_mean, z.mean(0), atol=1e-5)
        zn = (z - layer.in_mean) @ layer.in_proj.T
        if mode == "whiten":  # unit variance along every direction above the eigenvalue floor, less below it
            ev, evn = torch.linalg.eigvalsh(torch.cov(z.T)), torch.linalg.eigvalsh(torch.cov(zn.T))
            kept = int((ev > 0.01 * ev.max()).sum())
            assert kept >= 2 and torch.allclose(evn[-kept:], torch.ones(kept), atol=0.02)
            assert float(evn.max()) < 1.02
        else:
            assert torch.allclose(zn.std(0), torch.ones(z.shape[1]), atol=0.05)
        stats = (layer.in_mean.clone(), layer.in_proj.clone())
        m2 = algo.update(eng.collect(1), 1)
    assert "train/cond_in_gain" not in m2
    assert torch.equal(layer.in_mean, stats[0]) and torch.equal(layer.in_proj, stats[1])
    with pytest.raises(ValueError, match="cond_standardize must be none, std or whiten"):
        algo_cfg("grpo", cond_standardize="yes")


def test_cond_floor_bounds_how_far_whitening_amplifies_a_direction():
    """A higher floor amplifies the readout's rarely-varying directions less: with ``cond_floor=f`` no direction
    is scaled by more than 1 / (f * the largest std), and the directions above the floor still get unit variance."""
    policy = toy_policy("flow-sde")
    cfg = algo_cfg("grpo", dynamic_sampling=False, cond_standardize="whiten", cond_floor=0.3)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(0)
        algo = PolicyGradient(policy, cfg)
        with torch.no_grad():
            z = algo._features(ro)["z"].double()
        algo.update(ro, 0)
    layer = policy.head.condition_layer()
    ev = torch.linalg.eigvalsh(torch.cov(z.T))
    gains = torch.linalg.svdvals(layer.in_proj.double())
    assert float(gains.max()) == pytest.approx(1 / (0.3 * float(ev.max().sqrt())), rel=1e-3)
    assert int((ev < 0.3**2 * ev.max()).sum()) >= 1  # the floor binds on the toy readouts (it is tested, not idle)
    zn = (z - layer.in_mean.double()) @ layer.in_proj.double().T
    kept = int((ev > 0.4**2 * ev.max()).sum())  # clear of the floor: whitened to unit variance
    assert kept >= 1 and torch.allclose(torch.linalg.eigvalsh(torch.cov(zn.T))[-kept:], torch.ones(kept, dtype=torch.float64), atol=0.02)
    with pytest.raises(ValueError, match=r"cond_floor must be in \[0, 1\)"):
        algo_cfg("grpo", cond_floor=1.0)


class _EndlessEnv(ToyEnv):
    """Never succeeds: every episode runs to its time limit (long episodes for the noise's statistics)."""

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.steps, {"success": False, "substeps": K, "progress": 0.0}


def test_correlated_exploration_is_an_ar1_process_with_an_exact_likelihood():
    policy = toy_policy("flow-output")  # output_std 0.3

    def pool(specs, workers=None):
        p = ToyPool(specs)
        p.envs = [_EndlessEnv(40) for _ in specs]
        return p

    rho = 0.8
    cfg = algo_cfg("grpo", dynamic_sampling=False, explore_correlation=rho, groups_per_task=2, envs_per_task=2)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=pool) as eng:
        ro = eng.collect(0)
    b = ro.batch
    noise, same = b["extras.noise"], b["episode_index"][1:] == b["episode_index"][:-1]
    assert len(noise) == 16 * 40
    lag1 = np.corrcoef(noise[:-1][same].flatten().numpy(), noise[1:][same].flatten().numpy())[0, 1]
    assert lag1 == pytest.approx(rho, abs=0.04)
    assert float(noise.std()) == pytest.approx(0.3, rel=0.06)  # stationary: the first decision draws the full std
    first = b["frame_index"] == 0
    assert (b["extras.drift"][first] == 0).all() and (b["extras.scale"][first] == 1).all()
    assert torch.allclose(b["extras.scale"][~first], torch.tensor(math.sqrt(1 - rho * rho)))
    # the carried noise is an input of the policy: re-scoring gives the rollout's log-prob (ratio 1) ...
    lp = policy.log_prob(b, b["action"], ro.extras(), level="chunk")
    assert torch.allclose(lp, b["old_log_prob"], atol=1e-4)
    # ... and it is the AR(1) conditional N(det + rho noise_prev, std sqrt(1 - rho^2)), not the stationary N(det, std)
    det = b["extras.sample"] - noise
    sd = 0.3 * b["extras.scale"].view(-1, 1, 1)
    want = torch.distributions.Normal(det + b["extras.drift"], sd).log_prob(b["extras.sample"]).sum((-1, -2))
    assert torch.allclose(lp, want, atol=1e-4)
    with pytest.raises(ValueError, match="explore_correlation must be in"):
        algo_cfg("grpo", explore_correlation=1.0)
    with pytest.raises(ValueError, match="needs a flow or diffusion head exploring with explore_steps=output"):
        RolloutEngine(toy_policy("flow-sde"), ["toy"], cfg, make_pool=pool)
