"""EnvPool: chosen seeds per episode, same results in-process and in workers, errors surface with their cause."""

from __future__ import annotations

import numpy as np
import pytest

from rlvla.envs import eval_seeds
from rlvla.envs.pool import EnvPool, EnvWorkerError

SPEC = dict(name="reach-v3", split="id", image_size=32, chunk=2, max_steps=10)


def _run(workers):
    seeds = eval_seeds(3)
    with EnvPool([SPEC, dict(SPEC, name="push-v3"), SPEC], workers=workers) as pool:
        first = pool.reset({i: s for i, s in enumerate(seeds)})
        act = np.full((2, 4), 0.3, dtype=np.float32)
        stepped = pool.step({0: act, 2: act})  # env 1 sits this decision out
        again = pool.reset({1: seeds[0]})
    return first, stepped, again


def test_pool_workers_match_in_process_and_seeds_choose_layouts():
    local, remote = _run(0), _run(2)
    for (fl, sl, al), (fr, sr, ar) in [(local, remote)]:
        for i in range(3):
            assert np.array_equal(fl[i][0]["image"], fr[i][0]["image"])
            assert fl[i][1]["layout_seed"] == eval_seeds(3)[i]
        assert sorted(sl) == [0, 2] and sorted(sr) == [0, 2]
        for i in (0, 2):
            assert np.array_equal(sl[i][0]["image"], sr[i][0]["image"]) and sl[i][4]["substeps"] == 2
        assert al[1][1]["layout_seed"] == eval_seeds(3)[0] and al[1][1]["task"] == "push-v3"
    # env 0 and env 2 run the same task with different seeds: different layouts
    assert not np.array_equal(local[0][0][1]["obj_pos"], local[0][2][1]["obj_pos"])


def test_respec_swaps_the_envs_in_the_same_processes():
    """respec: another split and task list (a different number of envs) in the worker processes already running;
    each env then behaves as a freshly made one, in workers as in-process; a bad spec fails with its cause."""
    from rlvla.envs import make_env

    seeds = eval_seeds(3)
    new = [dict(SPEC, name="push-v3", split="ood-visual"), dict(SPEC, split="ood-position"), dict(SPEC, name="push-v3")]
    for workers in (0, 2):
        with EnvPool([SPEC, SPEC], workers=workers) as pool:
            pids = [p.pid for p in pool._procs]
            pool.reset({0: seeds[0], 1: seeds[1]})
            pool.respec(new)
            assert len(pool) == 3 and [p.pid for p in pool._procs] == pids and all(p.is_alive() for p in pool._procs)
            got = pool.reset({i: s for i, s in enumerate(seeds)})
            stepped = pool.step({i: np.full((2, 4), 0.3, np.float32) for i in range(3)})
            for i, spec in enumerate(new):
                env = make_env(**spec)
                obs, info = env.reset(seed=seeds[i])
                assert np.array_equal(got[i][0]["image"], obs["image"]) and got[i][1]["task"] == spec["name"]
                assert np.array_equal(stepped[i][0]["image"], env.step(np.full((2, 4), 0.3, np.float32))[0]["image"])
                env.close()
            with pytest.raises((EnvWorkerError, ValueError), match="nope"):
                pool.respec([dict(SPEC, name="nope-v3")])


def test_worker_error_names_the_cause():
    with EnvPool([SPEC, SPEC], workers=2) as pool:
        pool.reset({0: eval_seeds(1)[0], 1: eval_seeds(2)[1]})
        with pytest.raises(EnvWorkerError, match="action shape"):
            pool.step({0: np.zeros(4, np.float32)})  # chunk 2 needs (2, 4)


def test_killed_worker_is_restarted_and_the_rest_continue():
    import os
    import signal

    seeds = eval_seeds(4)
    act = np.zeros((2, 4), np.float32)
    with EnvPool([SPEC] * 4, workers=2) as pool:
        pool.reset({i: s for i, s in enumerate(seeds)})
        victim = 1
        os.kill(pool._procs[victim].pid, signal.SIGKILL)
        pool._procs[victim].join(timeout=10)
        with pytest.raises(EnvWorkerError, match="env worker 1 died") as err:
            pool.step({i: act for i in range(4)})
        lost = [i for i in range(4) if pool.owner[i] == victim]
        assert sorted(err.value.lost) == lost and sorted(err.value.partial) == [i for i in range(4) if i not in lost]
        assert pool.restart_dead_workers([0]) == [] and not pool._procs[victim].is_alive()  # only the named ones
        assert pool.restart_dead_workers([victim]) == lost
        again = pool.reset({i: seeds[i] for i in lost})
        assert all(again[i][1]["layout_seed"] == seeds[i] for i in lost)
        out = pool.step({i: act for i in range(4)})  # the whole pool steps again
        assert sorted(out) == [0, 1, 2, 3]
        token = pool.step_async({0: act, 1: act})  # and steps asynchronously: same results as step
        assert sorted(pool.step_wait(token)) == [0, 1]


def test_evaluation_with_overlapped_worker_lanes_matches_in_process():
    """Evaluation steps one worker's envs while it computes the other worker's actions; with a deterministic policy
    (a Gaussian head's mean needs no random draws) every episode's outcome, return and length are the same as
    stepping all envs in-process, decision by decision."""
    import torch

    from rlvla.collectors import evaluate
    from rlvla.policies import make_policy
    from rlvla.policies.config import BackboneConfig, LanguageConfig, VisionConfig
    from rlvla.policies.heads import head_config

    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, layers=1, vision=VisionConfig(width=8, depth=2), language=LanguageConfig(encoder="none"))
    policy = make_policy(head=head_config("gaussian"), backbone=bb, image_size=32, chunk=2, tasks=["reach-v3", "push-v3"]).eval()
    runs = [evaluate(policy, ["reach-v3", "push-v3"], ["id"], episodes=6, num_envs=4, workers=w, max_steps=12)["splits"]["id"]
            for w in (0, 2)]  # fmt: skip
    assert runs[0]["episodes"] == runs[1]["episodes"] == 6
    assert runs[0]["per_episode"] == runs[1]["per_episode"]
    assert runs[0]["mean_return"] == pytest.approx(runs[1]["mean_return"], rel=1e-6)
    assert runs[0]["mean_length"] == runs[1]["mean_length"]


def test_a_blind_policys_evaluation_renders_only_reset_frames_and_acts_the_same(monkeypatch):
    """A policy whose image is blanked (the blind baseline) gets the reset frame only: the same outcomes, returns and
    lengths as with every frame rendered, from a fraction of the renders."""
    import torch

    import importlib

    from rlvla.collectors import evaluate
    from rlvla.envs.render import FastRenderer
    from rlvla.policies import make_policy
    from rlvla.policies.config import BackboneConfig, LanguageConfig, VisionConfig
    from rlvla.policies.heads import head_config

    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, layers=1, vision=VisionConfig(width=8, depth=2), language=LanguageConfig(encoder="none"),
                        ablate=["image"])  # fmt: skip
    policy = make_policy(head=head_config("gaussian"), backbone=bb, image_size=32, chunk=1, tasks=["reach-v3"]).eval()
    renders = []
    render = FastRenderer.render
    monkeypatch.setattr(FastRenderer, "render", lambda self, data: renders.append(1) or render(self, data))

    def run():
        renders.clear()
        res = evaluate(policy, ["reach-v3"], ["id"], episodes=3, num_envs=3, workers=0, max_steps=10)["splits"]["id"]
        return res, len(renders)

    blind, n_blind = run()
    monkeypatch.setattr(importlib.import_module("rlvla.collectors.evaluate"), "reads_no_image", lambda cfg: False)
    full, n_full = run()
    assert blind["per_episode"] == full["per_episode"] and blind["mean_length"] == full["mean_length"] == 10
    assert blind["mean_return"] == pytest.approx(full["mean_return"], rel=1e-9)
    assert n_blind == 3 and n_full == 3 * 11  # a frame at each reset, then one per step


def test_evaluating_several_splits_keeps_the_envs_and_scores_each_as_alone(monkeypatch):
    """An evaluation switches its envs from split to split instead of building new ones (``set_split``: a new env
    costs ~0.9 s); every split scores exactly as evaluated alone, in fresh envs (outcomes, returns, lengths), looks
    and cameras included, in-process and in worker processes. In-process, the envs are built once for all five."""
    import torch

    import rlvla.envs as envs_mod
    from rlvla.collectors import evaluate
    from rlvla.policies import make_policy
    from rlvla.policies.config import BackboneConfig, LanguageConfig, VisionConfig
    from rlvla.policies.heads import head_config

    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, layers=1, vision=VisionConfig(width=8, depth=2), language=LanguageConfig(encoder="none"))
    policy = make_policy(head=head_config("gaussian"), backbone=bb, image_size=32, chunk=2, tasks=["grounded/reach"]).eval()
    splits = ["id", "ood-camera", "ood-visual", "ood-language", "ood-position"]
    kw = dict(episodes=3, num_envs=2, max_steps=10)
    alone = {s: evaluate(policy, ["grounded/reach"], [s], workers=0, **kw)["splits"][s] for s in splits}
    built = []
    make_env = envs_mod.make_env
    monkeypatch.setattr(envs_mod, "make_env", lambda **k: built.append(k["split"]) or make_env(**k))
    for workers in (0, 2):
        together = evaluate(policy, ["grounded/reach"], splits, workers=workers, **kw)["splits"]
        if workers == 0:
            assert built == ["id", "id"]  # two envs, built once, switched four times
        for split in splits:
            assert together[split]["per_episode"] == alone[split]["per_episode"], (workers, split)
            # rel 1e-6: in-process inference runs on more threads than beside workers (float sums in another order)
            assert together[split]["mean_return"] == pytest.approx(alone[split]["mean_return"], rel=1e-6), (workers, split)
            assert together[split]["mean_length"] == alone[split]["mean_length"], (workers, split)


def test_a_splits_evaluation_does_not_depend_on_the_splits_evaluated_with_it():
    """A flow policy's deterministic action starts from random noise, seeded per split: ``ood-camera`` scores the
    same alone as after ``id`` (it was seeded by its position in the list, so its episodes changed with the list)."""
    import torch

    from rlvla.collectors import evaluate
    from rlvla.policies import make_policy
    from rlvla.policies.config import BackboneConfig, LanguageConfig, VisionConfig
    from rlvla.policies.heads import head_config

    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, layers=1, vision=VisionConfig(width=8, depth=2), language=LanguageConfig(encoder="none"))
    policy = make_policy(head=head_config("flow", hidden=32, layers=1, steps=2), backbone=bb, image_size=32, chunk=2,
                         tasks=["reach-v3"]).eval()  # fmt: skip

    def camera(splits):
        res = evaluate(policy, ["reach-v3"], splits, episodes=2, num_envs=2, workers=0, max_steps=8)
        return res["splits"]["ood-camera"]["mean_return"]

    alone = camera(["ood-camera"])
    assert camera(["id", "ood-camera"]) == pytest.approx(alone, rel=1e-9)  # failed before the fix: the noise matters
