"""`rlvla bench rollout` and `rlvla bench sb3`: online-RL performance, measured in one run so ratios are meaningful.

rollout  Env steps/s of the rollout engine (batched policy inference, log-probs, rendering, trajectory storage)
         against env-only stepping (random chunks) with the same pool: same tasks, envs, workers, image size,
         chunk and time limit. Target: ratio >= 0.7.
sb3      rlvla's PPO against stable-baselines3's PPO (a benchmark-only dependency) on a state-observation
         MetaWorld task (full 39-d state, no rendering), same network (separate 64-64 tanh MLPs), same
         hyperparameters, same env-step budget, both in-process with the same number of envs. Reports env
         steps/s over the whole run (rollouts + updates) and success on evaluation seeds with Wilson intervals.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------- rollout vs env-only
def _env_only(pool, n_envs: int, chunk: int, decisions: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    pool.reset({i: 100 + i for i in range(n_envs)})
    steps, nxt = 0, 100 + n_envs
    t0 = time.perf_counter()
    for _ in range(decisions):
        acts = {i: rng.uniform(-1, 1, size=(chunk, 4)).astype(np.float32) for i in range(n_envs)}
        out = pool.step(acts)
        done = []
        for i, (_, _, term, trunc, info) in out.items():
            steps += int(info["substeps"])
            if term or trunc:
                done.append(i)
        if done:
            pool.reset({i: nxt + k for k, i in enumerate(done)})
            nxt += len(done)
    return steps / (time.perf_counter() - t0)


def bench_rollout(tasks=None, envs_per_task: int = 2, workers: int | None = None, head: str = "flow", decisions: int = 150) -> dict:
    from rlvla.algos.online import CONFIGS
    from rlvla.collectors import RolloutEngine, torch_threads
    from rlvla.envs import TASK_SETS
    from rlvla.policies import PolicyConfig, make_policy
    from rlvla.policies.heads import head_config

    tasks = list(tasks or TASK_SETS["vla5"])
    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(head=head_config(head), tasks=tasks))
    cfg = CONFIGS["grpo"](group_size=envs_per_task, groups_per_task=2, envs_per_task=envs_per_task, dynamic_sampling=False)
    with RolloutEngine(policy, tasks, cfg, workers=workers) as eng, torch_threads(1 if eng.pool.workers else torch.get_num_threads()):
        n = len(eng.env_tasks)
        env_only = _env_only(eng.pool, n, policy.cfg.chunk, decisions)
        first = eng.collect(0).stats["rollout/env_steps_per_s"]  # warm-up: first calls, instruction embeddings
        ro = eng.collect(1)
        rollout = ro.stats["rollout/env_steps_per_s"]
        env_only2 = _env_only(eng.pool, n, policy.cfg.chunk, decisions, seed=1)  # bracket the rollout: drift shows
    return {"tasks": tasks, "envs": n, "workers": eng.pool.workers, "head": head, "image_size": policy.cfg.image_size,
            "chunk": policy.cfg.chunk, "env_only_steps_per_s": [env_only, env_only2], "rollout_steps_per_s": rollout,
            "rollout_env_steps": ro.stats["rollout/env_steps"], "first_iteration_steps_per_s": first,
            "ratio": rollout / ((env_only + env_only2) / 2)}  # fmt: skip


# ---------------------------------------------------------------------------------------------- imagined vs real
def _imagined_setting(conn, policy_path: str, world_model: str, modules: list[str], n: int, imagined: bool, workers, measured: int) -> None:
    """One setting of :func:`bench_imagined`, in a fresh process; sends its result (or an error) through ``conn``."""
    import importlib
    from functools import partial

    try:
        for m in modules:  # suites registered outside rlvla (tests)
            importlib.import_module(m)
        from rlvla.algos.online import CONFIGS
        from rlvla.algos.online.explore import RL_EXPLORATION, with_exploration
        from rlvla.collectors import RolloutEngine, torch_threads
        from rlvla.policies import VLAPolicy
        from rlvla.worldmodels.env import ImaginedPool

        policy = VLAPolicy.from_pretrained(policy_path)
        explore = RL_EXPLORATION if policy.cfg.head.name in ("flow", "diffusion") else {}  # other heads: their own sampling
        policy = with_exploration(policy, **explore).eval()
        tasks = list(policy.cfg.tasks)
        cfg = CONFIGS["grpo"](group_size=n, groups_per_task=1, envs_per_task=n, dynamic_sampling=False)
        kw = {"workers": 0, "make_pool": partial(ImaginedPool, world_model=world_model)} if imagined else {"workers": workers}
        with RolloutEngine(policy, tasks, cfg, **kw) as eng, torch_threads(1 if eng.pool.workers else torch.get_num_threads()):
            eng.collect(0)
            stats = [eng.collect(1 + i).stats for i in range(measured)]
            resets = getattr(eng.pool, "real_steps", None)
        steps = sum(st["rollout/env_steps"] for st in stats)
        res = {"envs": len(tasks) * n, "steps_per_s": steps / sum(st["rollout/wall_s"] for st in stats), "env_steps": steps,
               "success": float(np.mean([st["rollout/success"] for st in stats])), "exploration": explore, "tasks": tasks}  # fmt: skip
        conn.send(("ok", {**res, "real_resets": resets} if imagined else res))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def bench_imagined(policy_path: str, world_model: str, envs_real=(4, 16), envs_imagined: int = 32, workers: int | None = None,
                   measured: int = 2) -> dict:
    """Env steps/s of whole-episode rollouts of one policy in the simulator and in a world model. Each setting runs
    in a fresh process (a process that has run one setting runs the next ~10% slower), as a warm-up iteration then
    ``measured`` iterations: their env steps over their wall time. Envs per task: each of ``envs_real`` for the
    simulator (the ratio is taken against the fastest), ``envs_imagined`` for the world model (in-process, one
    batched forward pass per decision; a GRPO group's envs share one real reset). A flow or diffusion policy runs
    with the quickstart RL recipe's exploration (``RL_EXPLORATION``), as RL in either place rolls it out."""
    import multiprocessing as mp

    from rlvla.envs.suites import suite_module
    from rlvla.policies import VLAPolicy
    from rlvla.worldmodels.env import load_world_model

    tasks = list(VLAPolicy.read_config(policy_path).tasks)
    load_world_model(world_model)  # a clear error here, before any process starts
    modules = sorted({suite_module(t) for t in tasks} - {""})
    out = {"policy": str(policy_path), "world_model": str(world_model), "real_runs": []}
    ctx = mp.get_context("spawn")
    for n, imagined in [(n, False) for n in envs_real] + [(envs_imagined, True)]:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_imagined_setting, args=(child, str(policy_path), str(world_model), modules, n, imagined, workers, measured))
        p.start()
        child.close()
        try:
            status, res = parent.recv()
        except EOFError:
            p.join(5)
            status, res = "error", f"the process died (exit code {p.exitcode})"
        p.join()
        if status != "ok":
            raise RuntimeError(f"rlvla bench imagined: the {'imagined' if imagined else 'real'} setting with {n} envs per task failed: {res}")
        out.update(tasks=res.pop("tasks"), exploration=res.pop("exploration"))
        if imagined:
            out["imagined"] = res
        else:
            out["real_runs"].append(res)
    out["real"] = max(out["real_runs"], key=lambda r: r["steps_per_s"])
    out["ratio"] = out["imagined"]["steps_per_s"] / out["real"]["steps_per_s"]
    return out


# ---------------------------------------------------------------------------------------------- PPO vs SB3
# One PPO recipe for both libraries. SB3's value loss is vf_coef * MSE while rlvla's is vf_coef * 0.5 * MSE, so rlvla
# gets twice SB3's vf_coef: the same objective. n_steps = max_steps: every update sees whole 200-step episodes in
# both libraries (MetaWorld's convention: an episode is not cut at success, so all episodes are 200 steps long).
PPO_HP = dict(n_envs=8, n_steps=200, batch_size=64, n_epochs=10, lr=3e-4, gamma=0.99, gae_lambda=0.95, clip=0.2,
              vf_coef=0.5, max_grad_norm=0.5, hidden=[64, 64], max_steps=200)  # fmt: skip
SB3_TASKS = ("reach-v3", "push-v3", "drawer-open-v3")


def _state_env(task: str, seed: int, max_steps: int):
    """Our MetaWorld env as a flat-Box Gymnasium env for SB3 (full 39-d state, no camera, chunk 1, the raw dense
    reward, episodes not cut at success: MetaWorld's convention; ``is_success`` = succeeded at any step so far)."""
    import gymnasium as gym

    from rlvla.envs import make_env

    class StateEnv(gym.Env):
        def __init__(self) -> None:
            self.env = make_env(task, seed=seed, cameras=(), full_state=True, chunk=1, max_steps=max_steps,
                                terminate_on_success=False)  # fmt: skip
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
            self.succeeded = False

        def reset(self, *, seed=None, options=None):
            obs, _ = self.env.reset(seed=seed, options=options)
            self.succeeded = False
            return obs["proprio"], {"is_success": False}

        def step(self, action):
            obs, r, term, trunc, info = self.env.step(np.clip(action, -1, 1))
            self.succeeded = self.succeeded or bool(info["success"])
            return obs["proprio"], r, term, trunc, {"is_success": self.succeeded}

    return StateEnv()


class _SB3Policy:
    """An SB3 model behind the ``act`` interface, for rlvla's evaluator."""

    def __init__(self, model, cfg) -> None:
        self.model, self.cfg = model, cfg

    def eval(self):
        return self

    def act(self, obs, deterministic=True, level="chunk", with_log_prob=False):
        from rlvla.policies.policy import Act

        a, _ = self.model.predict(np.asarray(obs["proprio"], np.float32), deterministic=deterministic)
        a = torch.as_tensor(a).float().clamp(-1, 1)[:, None]
        return Act(a, None, torch.zeros(a.shape[0]), {})


def _ppo_pair(task: str, seed: int, env_steps: int, eval_episodes: int) -> dict:
    """SB3's PPO then rlvla's on one task and seed, same budget; success of each deterministic policy on the same
    evaluation episodes (succeeded at any step)."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlvla.algos.online import CONFIGS, PolicyGradient
    from rlvla.collectors import RolloutEngine, evaluate
    from rlvla.policies.state import StatePolicy, StatePolicyConfig

    hp = PPO_HP
    torch.set_num_threads(1)
    out = {"task": task, "seed": seed}
    scfg = StatePolicyConfig(hidden=list(hp["hidden"]), tasks=[task])
    # --- SB3
    torch.manual_seed(seed)
    venv = DummyVecEnv([lambda i=i: _state_env(task, 10_000 * (i + 1) + 100_000 * seed, hp["max_steps"]) for i in range(hp["n_envs"])])
    model = sb3.PPO("MlpPolicy", venv, n_steps=hp["n_steps"], batch_size=hp["batch_size"], n_epochs=hp["n_epochs"],
                    learning_rate=hp["lr"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], clip_range=hp["clip"],
                    vf_coef=hp["vf_coef"], max_grad_norm=hp["max_grad_norm"], ent_coef=0.0, seed=seed, device="cpu",
                    policy_kwargs=dict(net_arch=dict(pi=hp["hidden"], vf=hp["hidden"]), activation_fn=torch.nn.Tanh))  # fmt: skip
    t0 = time.perf_counter()
    model.learn(total_timesteps=env_steps)
    wall = time.perf_counter() - t0
    ev = evaluate(_SB3Policy(model, scfg), [task], ["id"], episodes=eval_episodes, num_envs=8, workers=0)["splits"]["id"]
    out["sb3"] = {"version": sb3.__version__, "wall_s": wall, "env_steps": int(model.num_timesteps), "eval": _brief(ev)}
    # --- rlvla: one iteration = n_envs whole episodes of max_steps = n_envs * n_steps env steps, as SB3's rollout
    torch.manual_seed(seed)
    policy = StatePolicy(scfg)
    cfg = CONFIGS["ppo"](
        lr=hp["lr"], epochs=hp["n_epochs"], minibatch=hp["batch_size"], gamma=hp["gamma"], lam=hp["gae_lambda"],
        clip_low=hp["clip"], clip_high=hp["clip"], dual_clip=0.0, vf_coef=2 * hp["vf_coef"], vf_clip=0.0, level="chunk",
        group_size=1, groups_per_task=hp["n_envs"] * hp["n_steps"] // hp["max_steps"], envs_per_task=hp["n_envs"],
        max_steps=hp["max_steps"], terminate_on_success=False, success_bonus=0.0, shaping=0.0, env_reward=1.0,
        workers=0, iterations=10**6, advantage_norm="minibatch",
    )  # fmt: skip
    pg = PolicyGradient(policy, cfg, grad_clip=hp["max_grad_norm"], seed=seed)
    steps, it = 0, 0
    with RolloutEngine(policy, [task], cfg, seed=seed, workers=0) as eng:
        t0 = time.perf_counter()  # after building the envs, as SB3's clock starts after its DummyVecEnv is built
        while steps < env_steps:
            ro = eng.collect(it, need_values=True)
            pg.update(ro, it)
            steps += int(ro.stats["rollout/env_steps"])
            it += 1
        wall = time.perf_counter() - t0
    ev = evaluate(policy, [task], ["id"], episodes=eval_episodes, num_envs=8, workers=0)["splits"]["id"]
    out["rlvla"] = {"wall_s": wall, "env_steps": steps, "iterations": it, "eval": _brief(ev)}
    return out


def bench_sb3(tasks=SB3_TASKS, seeds=(0, 1, 2), env_steps: int = 100_000, eval_episodes: int = 50, jobs: int = 2) -> dict:
    """rlvla's PPO against stable-baselines3's on state-observation MetaWorld tasks: every (task, seed) pair runs
    both libraries back to back in one worker process; ``jobs`` pairs run at once (each library then shares the
    machine with one other run, on average alike)."""
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise ValueError("the SB3 comparison needs stable-baselines3: pip install -e '.[bench]'") from None
    import multiprocessing as mp

    pairs = [(t, s) for t in tasks for s in seeds]
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, jobs)) as pool:
        runs = pool.starmap(_ppo_pair, [(t, s, env_steps, eval_episodes) for t, s in pairs])
    out = {"env_steps_budget": env_steps, "hyperparameters": PPO_HP, "eval_episodes": eval_episodes, "runs": runs,
           "sb3_version": runs[0]["sb3"]["version"], "tasks": {}}  # fmt: skip
    for lib in ("sb3", "rlvla"):
        steps = sum(r[lib]["env_steps"] for r in runs)
        out[f"{lib}_env_steps_per_s"] = steps / sum(r[lib]["wall_s"] for r in runs)
    out["speed_ratio"] = out["rlvla_env_steps_per_s"] / out["sb3_env_steps_per_s"]
    for t in tasks:
        rs = [r for r in runs if r["task"] == t]
        out["tasks"][t] = {lib: float(np.mean([r[lib]["eval"]["success_rate"] for r in rs])) for lib in ("sb3", "rlvla")}
    out["pooled"] = {lib: float(np.mean([r[lib]["eval"]["success_rate"] for r in runs])) for lib in ("sb3", "rlvla")}
    out["rlvla_at_least_sb3"] = all(v["rlvla"] >= v["sb3"] for v in out["tasks"].values()) and out["pooled"]["rlvla"] >= out["pooled"]["sb3"]
    return out


def _brief(res: dict) -> dict:
    return {k: res[k] for k in ("success_rate", "ci95", "episodes", "mean_return", "mean_length")}


def bench_rl_main(args) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    if args.what == "imagined":
        if not args.policy or not args.world_model:
            raise ValueError("rlvla bench imagined needs --policy and --world-model")
        res = bench_imagined(args.policy, args.world_model)
        line = (f"imagined {res['imagined']['steps_per_s']:.0f} env steps/s ({res['imagined']['envs']} envs in-process) vs real "
                f"{res['real']['steps_per_s']:.0f} (the faster of {', '.join(str(r['envs']) for r in res['real_runs'])} envs): ratio {res['ratio']:.1f} (target >= 10)")  # fmt: skip
    elif args.what == "rollout":
        res = bench_rollout(head=args.head or "flow")
        line = (f"rollout {res['rollout_steps_per_s']:.0f} env steps/s vs env-only {np.mean(res['env_only_steps_per_s']):.0f} "
                f"({res['envs']} envs, {res['workers']} workers): ratio {res['ratio']:.2f} (target >= 0.7)")  # fmt: skip
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(SB3_TASKS)
        seeds = [int(x) for x in args.seeds.split(",")]
        res = bench_sb3(tasks, seeds, env_steps=args.rl_steps, eval_episodes=args.episodes, jobs=args.jobs)
        rows = [f"{r['task']:16s} seed {r['seed']}: rlvla {r['rlvla']['eval']['success_rate']:.2f}  SB3 {r['sb3']['eval']['success_rate']:.2f}"
                for r in res["runs"]]  # fmt: skip
        line = "\n".join([*rows, *(f"{t:16s} mean: rlvla {v['rlvla']:.2f}  SB3 {v['sb3']:.2f}" for t, v in res["tasks"].items()),
                          f"pooled: rlvla {res['pooled']['rlvla']:.2f}  SB3 {res['pooled']['sb3']:.2f}; env steps/s rlvla "
                          f"{res['rlvla_env_steps_per_s']:.0f} vs SB3 {res['sb3_env_steps_per_s']:.0f} (ratio {res['speed_ratio']:.2f})"])  # fmt: skip
    print(json.dumps(res) if args.json else line)
    if args.json:
        import sys

        print(line, file=sys.stderr)
    return 0
