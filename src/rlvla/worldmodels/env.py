"""Imagined environments: a world model behind the simulators' face.

:class:`ImaginedPool` has :class:`rlvla.envs.pool.EnvPool`'s ``reset`` / ``step`` / ``close``, so the rollout
engine runs policies in it unchanged; all envs of a ``step`` advance in one batched forward pass. Every episode
starts from a real observation: a real env of the task is reset on the episode's layout seed (one rendered frame;
a seeded reset is deterministic, so the envs of a GRPO group, which share a layout, share one reset and its
encoding), the frame is encoded, and from there on each decision is imagined: the dynamics step the latent with the action
chunk and the decoder renders the next image. ``info`` holds what the simulator's does: ``success`` (the model's
success probability > 0.5), ``progress`` (its dense progress in [0, 1]), ``substeps`` (the chunk) and
``imagined=True``; the reward is progress x the suite's scale per low-level step, summed over the chunk.

``make_env("wm/<task>", world_model=DIR)`` is one such env with the Gymnasium API.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from rlvla.envs import make_env
from rlvla.envs.metaworld.tasks import TASKS
from rlvla.envs.suites import INFO_KEYS, Suite, register_suite
from rlvla.worldmodels.model import WorldModel, subpixel_decoder


def load_world_model(world_model) -> WorldModel:
    return world_model if isinstance(world_model, WorldModel) else WorldModel.from_pretrained(world_model)


class ImaginedPool:
    workers = 0
    MAX_STARTS = 1024

    def __init__(self, specs: list[dict], workers=None, world_model=None) -> None:
        if world_model is None:
            raise ValueError("an imagined env needs world_model=<a world model dir> (rlvla train algo=world_model)")
        self.model = load_world_model(world_model)
        self.decoder = subpixel_decoder(self.model)  # the model is frozen here: its faster exact form
        self.specs = [dict(s) for s in specs]
        c = self.model.cfg
        for s in self.specs:
            s.pop("world_model", None)
            self.model.check_compatible([s["name"]], s.get("cameras", ("corner",)), s.get("image_size", 64), s.get("chunk", 1))
            if list(s.get("cameras", ("corner",))) != [c.camera]:
                raise ValueError(f"world model predicts only camera {c.camera!r}; the policy reads {list(s['cameras'])}")
        self.real: dict[str, object] = {}
        self.state: dict[int, dict] = {}
        self.real_steps = 0  # rendered real frames (one per distinct episode start)
        self.starts: OrderedDict = OrderedDict()  # (task, split, seed) -> encoded start; a seeded reset is deterministic

    def __len__(self) -> int:
        return len(self.specs)

    def _real_env(self, i: int):
        s = self.specs[i]
        key = (s["name"], s.get("split", "id"))
        if key not in self.real:
            real = {k: v for k, v in s.items() if k not in ("chunk", "max_steps")}
            self.real[key] = make_env(**real, chunk=1, max_steps=1)
        return self.real[key]

    @torch.no_grad()
    def reset(self, seeds: dict, options=None) -> dict:
        """Real resets, one per distinct ``(task, split, seed)``: envs that share a start (a GRPO group) share its
        rendered frame and its encoding (the last ``MAX_STARTS`` seeded starts are kept; unseeded ones never are)."""
        keys = {i: (self.specs[i]["name"], self.specs[i].get("split", "id"), seed if seed is not None else ("unseeded", i))
                for i, seed in seeds.items()}  # fmt: skip
        fresh = {}
        for i, seed in seeds.items():
            if keys[i] not in self.starts and keys[i] not in fresh:
                fresh[keys[i]] = self._real_env(i).reset(seed=seed)
                self.real_steps += 1
        if fresh:
            z = self.model.encode(np.stack([obs["image"] for obs, _ in fresh.values()]))
            lang = self.model.embed([str(obs["instruction"]) for obs, _ in fresh.values()])
            fresh = {key: (obs, info, z[k], lang[k]) for k, (key, (obs, info)) in enumerate(fresh.items())}
        out = {}
        for i, key in keys.items():
            obs, info, z, lang = fresh[key] if key in fresh else self.starts[key]
            self.state[i] = {"image": obs["image"], "proprio": np.asarray(obs["proprio"], np.float32),
                             "instruction": str(obs["instruction"]), "t": 0, "z": z, "lang": lang}  # fmt: skip
            out[i] = ({**obs, "proprio": np.array(obs["proprio"], copy=True)}, {**info, "imagined": True})
        for key in {k for k in keys.values() if not isinstance(k[2], tuple)}:  # seeded starts: kept, most recent last
            self.starts[key] = fresh[key] if key in fresh else self.starts[key]
            self.starts.move_to_end(key)
        while len(self.starts) > self.MAX_STARTS:
            self.starts.popitem(last=False)
        return out

    @torch.no_grad()
    def step(self, actions: dict) -> dict:
        if not actions:
            return {}
        ids = list(actions)
        m, c = self.model, self.model.cfg
        missing = [i for i in ids if i not in self.state]
        if missing:
            raise RuntimeError(f"imagined envs {missing} were stepped before a reset")
        z = torch.stack([self.state[i]["z"] for i in ids])
        p = torch.from_numpy(np.stack([self.state[i]["proprio"] for i in ids])).to(m.device)
        lang = torch.stack([self.state[i]["lang"] for i in ids])
        act = torch.as_tensor(np.stack([np.asarray(actions[i], np.float32).reshape(c.chunk, c.action_dim) for i in ids])).to(m.device)
        z2, p2, succ, prog = m.step(z, p, act, lang)
        images = m.decode(z2, self.decoder).numpy()
        succ_p, progress = torch.sigmoid(succ).cpu().numpy(), torch.sigmoid(prog).cpu().numpy()
        if not (np.isfinite(progress).all() and np.isfinite(succ_p).all() and torch.isfinite(z2).all()):
            raise FloatingPointError("the world model predicted a non-finite state, reward or success")
        out = {}
        for k, i in enumerate(ids):
            st, spec = self.state[i], self.specs[i]
            st.update(z=z2[k], proprio=p2[k].cpu().numpy().astype(np.float32), t=st["t"] + c.chunk)
            success = bool(succ_p[k] > 0.5)
            term = success and spec.get("terminate_on_success", True)
            trunc = st["t"] >= spec.get("max_steps", 200) and not term
            obs = {"image": images[k], "proprio": st["proprio"], "instruction": st["instruction"]}
            info = {"success": success, "progress": float(progress[k]), "substeps": c.chunk, "imagined": True,
                    "success_prob": float(succ_p[k])}  # fmt: skip
            out[i] = (obs, float(progress[k]) * c.reward_scale * c.chunk, term, trunc, info)
        return out

    def restart_dead_workers(self, workers=None) -> list:
        return []

    def close(self) -> None:
        for env in self.real.values():
            env.close()
        self.real.clear()


class WorldModelEnv:
    """One imagined env with the Gymnasium API (``reset`` / ``step`` / ``close``)."""

    def __init__(self, task: str, world_model, split: str = "id", seed=None, image_size: int = 64, cameras=("corner",),
                 chunk: int = 1, max_steps: int = 200, terminate_on_success: bool = True, **kwargs) -> None:  # fmt: skip
        spec = dict(name=task, split=split, image_size=image_size, cameras=tuple(cameras), chunk=chunk, max_steps=max_steps,
                    terminate_on_success=terminate_on_success, **kwargs)  # fmt: skip
        self.pool = ImaginedPool([spec], world_model=world_model)
        self.next_seed = seed

    def reset(self, seed=None, options=None):
        seed = self.next_seed if seed is None else seed
        self.next_seed = None if seed is None else seed + 1
        return self.pool.reset({0: seed})[0]

    def step(self, action):
        return self.pool.step({0: action})[0]

    def close(self) -> None:
        self.pool.close()


def _make(task, split="id", seed=None, image_size=64, cameras=("corner",), chunk=1, max_steps=200, world_model=None, **kw):
    if world_model is None:
        raise ValueError(f"wm/{task} needs world_model=<a world model dir> (rlvla train algo=world_model)")
    return WorldModelEnv(task, world_model, split=split, seed=seed, image_size=image_size, cameras=cameras, chunk=chunk,
                         max_steps=max_steps, **kw)  # fmt: skip


SUITE = register_suite(Suite(name="wm", tasks=tuple(TASKS), make=_make, reward_scale=10.0, info_keys=INFO_KEYS,
                             module=__name__))  # fmt: skip
