"""The grounded suite: candidates the image shows and the instruction picks, decoys only in pixels, exchangeable
candidates (a blind or instruction-blind choice is right 1/N of the time), language with held-out paraphrases."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rlvla.envs import make_env, resolve_tasks, train_seeds
from rlvla.envs.splits import validation_seeds
from rlvla.envs.metaworld.grounded import COLOURS, GROUNDED, N_CANDIDATES, instructions, paraphrases
from rlvla.envs.metaworld.visibility import expert_episodes, expert_success

TASKS = tuple(GROUNDED)


def _force_target(env, k: int) -> None:
    """Make the next reset's layout exactly the seed's, but with candidate ``k`` the real one."""
    draw = type(env)._draw_layout

    def forced():
        vec = draw(env)
        env.target_index = k
        target = env.candidates[k]
        return np.concatenate([vec[:3], target]) if env.spec.kind == "goal" else target

    env._draw_layout = forced


def test_the_suite_is_a_task_set_everywhere():
    assert resolve_tasks("grounded") == tuple(f"grounded/{t}" for t in TASKS)
    assert resolve_tasks("grounded/push,reach-v3") == ("grounded/push", "reach-v3")
    assert resolve_tasks("grounded/quickstart") == ("grounded/reach", "grounded/button-press-topdown")
    with pytest.raises(ValueError, match="unknown task 'grounded/pushh'.*did you mean push"):
        resolve_tasks("grounded/pushh")
    kinds = {GROUNDED[t].kind for t in TASKS}
    assert {"reach", "push", "pick-place"} <= set(TASKS) and kinds == {"goal", "object"}  # one articulated task


@pytest.mark.parametrize("task", TASKS)
def test_decoys_look_exactly_like_the_target(task, one_thread):
    """Swapping which candidate is real leaves the first image unchanged (to 3 pixels): nothing but the
    instruction says which one counts. Hiding the decoys changes it: they are drawn."""
    env = make_env(f"grounded/{task}", image_size=64)
    images = []
    for k in range(N_CANDIDATES):
        _force_target(env, k)
        obs, info = env.reset(seed=3)
        assert info["target_index"] == k and np.allclose(info["goal_pos"][:2], info["candidates"][k][:2], atol=0.12)
        images.append(obs["image"].astype(int))
    for k in (1, 2):
        assert (np.abs(images[0] - images[k]).sum(-1) > 30).sum() <= 3
    env._renderer.set_decoys([])
    bare = env._renderer.render(env._mw.data)[env.cameras[0]].astype(int)
    assert (np.abs(bare - images[-1]).sum(-1) > 30).sum() >= 8
    env.close()


@pytest.mark.parametrize("task,camera", [("reach", "topview"), ("button-press-topdown", "topview"), ("reach", "corner")])
def test_candidate_pixels_are_where_each_colour_is_drawn(task, camera, one_thread):
    """Known answer: the camera model's projection of each candidate's coloured part lands on the centroid of the
    pixels that change when that candidate is painted black (median under 0.75 px, each under 2 px: a marker partly
    hidden by the table or the arm shifts its visible centroid; a flipped corner camera too), on training and
    ood-position layouts. A wrong row flip or focal length misses by several pixels."""
    errors = []
    for split, seeds in (("id", range(3, 6)), ("ood-position", validation_seeds(3))):
        env = make_env(f"grounded/{task}", split=split, image_size=64, cameras=(camera,))
        for seed in seeds:
            env.reset(seed=seed)
            px = env.candidate_pixels()
            shown = env._renderer.render(env._mw.data)[camera].astype(int)
            for i in range(N_CANDIDATES):
                env._show_candidates({i: (0.0, 0.0, 0.0, 1.0)})
                rows, cols = np.nonzero(np.abs(shown - env._renderer.render(env._mw.data)[camera].astype(int)).sum(-1) > 30)
                assert len(rows) >= 4, (split, seed, i)
                errors.append(np.hypot(cols.mean() - px[i, 0], rows.mean() - px[i, 1]))
            env._show_candidates()
        env.close()
    assert np.median(errors) < 0.75 and max(errors) < 2.0, np.round(errors, 2)


def test_decoys_never_enter_the_observation():
    env = make_env("grounded/push", image_size=32)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"image", "proprio", "instruction"} and obs["proprio"].shape == (4,)
    assert info["candidates"].shape == (N_CANDIDATES, 3) and info["target_colour"] in obs["instruction"]
    assert info["colours"][info["target_index"]] == info["target_colour"] and sorted(info["colours"]) == sorted(COLOURS)
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_candidates_are_exchangeable(task):
    """Over 300 layouts the real goal is the candidate nearest the centre, nearest the object, or the left-most
    one about 1/N of the time: no position rule beats chance, so the image alone cannot tell (and the instruction
    alone cannot place it)."""
    env = make_env(f"grounded/{task}", cameras=())
    n = 300
    hits = np.zeros(3)
    for s in train_seeds(n):
        _, info = env.reset(seed=s)
        c, k = info["candidates"], info["target_index"]
        centre = (np.asarray(env.spec.low) + np.asarray(env.spec.high)) / 2
        # (for buttons the object is the real button: nearest-object is then the truth itself, not a rule)
        near_obj = np.argmin(np.linalg.norm(c[:, :2] - info["obj_pos"][:2], axis=1)) if env.spec.kind == "goal" else k + 1
        hits += [np.argmin(np.linalg.norm(c[:, :2] - centre[:2], axis=1)) == k, near_obj == k, np.argmin(c[:, 0]) == k]
        gaps = np.linalg.norm(c[:, None, :2] - c[None, :, :2], axis=-1)[np.triu_indices(N_CANDIDATES, 1)]
        assert gaps.min() >= env.spec.min_sep - 1e-6
    env.close()
    rate = hits / n
    if env.spec.kind == "object":
        rate[1] = 1 / N_CANDIDATES
    assert np.all(np.abs(rate - 1 / N_CANDIDATES) < 0.09), rate  # ~3.3 standard errors


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", ["id", "ood-position"])
def test_the_expert_reads_the_real_goal(task, split):
    """The expert succeeds, within the suite's episode limit of 150 steps (shorter than MetaWorld's 200)."""
    assert expert_success(f"grounded/{task}", split, 3) == 1.0
    run = expert_episodes(f"grounded/{task}", split, 3)
    assert run["limit"] == 150 and run["success_rate"] == 1.0 and 0 < run["steps_max"] < 150


def test_language_has_ten_phrasings_and_heldout_paraphrases():
    for task in TASKS:
        spec = GROUNDED[task]
        assert len(spec.train) >= 10 and len(spec.heldout) >= 3
        words = {t: set(re.findall(r"[a-z]+", t)) - {"c"} for t in spec.train + spec.heldout}
        for h in spec.heldout:
            # differs in wording, not only in word order: each held-out phrasing has words no training phrasing has
            assert all(words[h] != words[t] for t in spec.train)
            assert words[h] - set().union(*(words[t] for t in spec.train)), h
            assert "{c}" in h  # the colour is named, with the same words as in training
        inst = instructions(task)
        assert len(inst["train"]) == len(spec.train) * len(COLOURS) and not set(inst["train"]) & set(inst["heldout"])
        assert all(re.fullmatch(r"[a-z0-9 ,.'-]{1,80}", s) for s in inst["train"] + inst["heldout"])


def test_paraphrases_keep_the_colour():
    same = paraphrases("grounded/push", "push the puck to the blue target")
    assert len(same) == len(GROUNDED["push"].train) and all("blue" in s for s in same)
    assert "slide the puck onto the blue marker" in same
    assert paraphrases("grounded/push", "the blue dot is where the puck has to end up")  # a held-out one maps too
    assert paraphrases("grounded/push", "push the puck to the purple target") == []


def test_instruction_prototypes_read_the_colour_of_heldout_phrasings():
    """Language through prototypes (``policy.backbone.language.prototype_temperature``), on the grounded
    quickstart's tasks: the prototypes are the training phrasings' groups (task x colour, as SFT builds them);
    every training phrasing lands on its own group's prototype (weight > 0.98), and every held-out phrasing puts
    most of its weight on prototypes of its own colour (each > 0.85, 0.95 on average; measured minimum 0.90): a
    new wording of a known colour reads as that colour."""
    import torch

    from rlvla.policies.config import LanguageConfig
    from rlvla.policies.encoders import LanguageEncoder, embed_instructions, prototypes

    groups, colour_of = [], []
    for task in ("reach", "button-press-topdown"):
        for c in COLOURS:
            groups.append(sorted(t.format(c=c) for t in GROUNDED[task].train))
            colour_of.append(c)
    enc = LanguageEncoder(LanguageConfig(prototype_temperature=0.02, prototypes=groups))
    protos = prototypes(groups)
    for k, group in enumerate(groups):
        w = _prototype_weights(enc, protos, group)
        assert float(w[:, k].min()) > 0.98
    own_colour = []
    for task in ("reach", "button-press-topdown"):
        for c in COLOURS:
            w = _prototype_weights(enc, protos, [t.format(c=c) for t in GROUNDED[task].heldout])
            own_colour.append(w[:, torch.tensor([colour_of[k] == c for k in range(len(groups))])].sum(1))
    own_colour = torch.cat(own_colour)
    assert float(own_colour.min()) > 0.85 and float(own_colour.mean()) > 0.95
    snapped = enc(["press the red button"], torch.device("cpu"))
    assert not torch.allclose(snapped, embed_instructions(["press the red button"]), atol=1e-3)


def _prototype_weights(enc, protos, texts):
    """Each text's mixing weights over the prototypes, recovered by least squares from the snapped embedding."""
    import torch

    snapped = enc(texts, torch.device("cpu"))
    return torch.linalg.lstsq(protos.T, snapped.T).solution.T


def test_the_layout_check_is_the_array_definition_bit_for_bit():
    """``layout_valid`` (scalar, for speed: a button layout takes ~130 rejection draws) accepts exactly the layouts
    that the array definition does, including those within a rounding error of the separation or clearance."""
    from rlvla.envs.metaworld.grounded import OBJECT_CLEARANCE, layout_valid

    rng = np.random.default_rng(0)
    for i in range(20_000):
        cands = rng.uniform(-0.3, 0.3, size=(N_CANDIDATES, 3))
        obj = rng.uniform(-0.3, 0.3, size=3) if i % 2 else None
        sep = 0.2
        if i % 5 == 0:  # on the boundary: candidate 1 exactly min_sep from candidate 0 (up to rounding)
            d = rng.normal(size=2)
            cands[1, :2] = cands[0, :2] + sep * d / np.linalg.norm(d)
        xy = cands[:, :2]
        gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)[np.triu_indices(N_CANDIDATES, 1)]
        want = not np.any(gaps < sep) and (obj is None or bool(np.all(np.linalg.norm(xy - obj[:2], axis=-1) >= OBJECT_CLEARANCE)))
        assert layout_valid(obj, cands, sep) == want, (cands, obj)
