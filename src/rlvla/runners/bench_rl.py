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
    from rlvla.algos.online import CONFIGS, RolloutEngine
    from rlvla.envs import TASK_SETS
    from rlvla.policies import PolicyConfig, make_policy
    from rlvla.policies.heads import head_config
    from rlvla.runners.evaluate import _threads

    tasks = list(tasks or TASK_SETS["quickstart"])
    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(head=head_config(head), tasks=tasks))
    cfg = CONFIGS["grpo"](group_size=envs_per_task, groups_per_task=2, envs_per_task=envs_per_task, dynamic_sampling=False)
    with RolloutEngine(policy, tasks, cfg, workers=workers) as eng, _threads(1 if eng.pool.workers else torch.get_num_threads()):
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


# ---------------------------------------------------------------------------------------------- PPO vs SB3
PPO_HP = dict(n_envs=8, n_steps=256, batch_size=64, n_epochs=10, lr=3e-4, gamma=0.99, gae_lambda=0.95, clip=0.2,
              vf_coef=0.5, max_grad_norm=0.5, hidden=[64, 64], max_steps=200)  # fmt: skip


class _StateEnv:
    """Our MetaWorld env as a flat-Box Gymnasium env for SB3 (full state, no camera, chunk 1, raw env reward)."""

    def __new__(cls, task: str, seed: int, max_steps: int):
        import gymnasium as gym

        from rlvla.envs import make_env

        class StateEnv(gym.Env):
            def __init__(self) -> None:
                self.env = make_env(task, seed=seed, cameras=(), full_state=True, chunk=1, max_steps=max_steps)
                self.observation_space = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
                self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

            def reset(self, *, seed=None, options=None):
                obs, info = self.env.reset(seed=seed, options=options)
                return obs["proprio"], {"is_success": False}

            def step(self, action):
                obs, r, term, trunc, info = self.env.step(np.clip(action, -1, 1))
                return obs["proprio"], r, term, trunc, {"is_success": info["success"]}

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


def bench_sb3(task: str = "reach-v3", env_steps: int = 200_000, eval_episodes: int = 50, seed: int = 0) -> dict:
    try:
        import stable_baselines3 as sb3
    except ImportError:
        raise ValueError("the SB3 comparison needs stable-baselines3: pip install -e '.[bench]'") from None
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlvla.algos.online import CONFIGS, PolicyGradient, RolloutEngine
    from rlvla.policies.state import StatePolicy, StatePolicyConfig
    from rlvla.runners.evaluate import evaluate

    hp = PPO_HP
    torch.set_num_threads(1)
    out = {"task": task, "env_steps_budget": env_steps, "hyperparameters": hp}
    # --- SB3
    torch.manual_seed(seed)
    venv = DummyVecEnv([lambda i=i: _StateEnv(task, 10_000 * (i + 1), hp["max_steps"]) for i in range(hp["n_envs"])])
    model = sb3.PPO("MlpPolicy", venv, n_steps=hp["n_steps"], batch_size=hp["batch_size"], n_epochs=hp["n_epochs"],
                    learning_rate=hp["lr"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], clip_range=hp["clip"],
                    vf_coef=hp["vf_coef"], max_grad_norm=hp["max_grad_norm"], ent_coef=0.0, seed=seed, device="cpu",
                    policy_kwargs=dict(net_arch=dict(pi=hp["hidden"], vf=hp["hidden"]), activation_fn=torch.nn.Tanh))  # fmt: skip
    t0 = time.perf_counter()
    model.learn(total_timesteps=env_steps)
    sb3_wall = time.perf_counter() - t0
    scfg = StatePolicyConfig(hidden=list(hp["hidden"]), tasks=[task])
    sb3_eval = evaluate(_SB3Policy(model, scfg), [task], ["id"], episodes=eval_episodes, num_envs=8, workers=0)["splits"]["id"]
    out["sb3"] = {"version": sb3.__version__, "wall_s": sb3_wall, "env_steps": int(model.num_timesteps),
                  "env_steps_per_s": model.num_timesteps / sb3_wall, "eval": _brief(sb3_eval)}  # fmt: skip
    # --- rlvla: one iteration = n_envs episodes (whole episodes of <= max_steps), so ~the same steps per update
    torch.manual_seed(seed)
    policy = StatePolicy(scfg)
    n_per_iter = hp["n_envs"] * hp["n_steps"]
    cfg = CONFIGS["ppo"](
        lr=hp["lr"], epochs=hp["n_epochs"], minibatch=hp["batch_size"], gamma=hp["gamma"], lam=hp["gae_lambda"],
        clip_low=hp["clip"], clip_high=hp["clip"], dual_clip=0.0, vf_coef=hp["vf_coef"], vf_clip=0.0, level="chunk",
        group_size=1, groups_per_task=max(1, n_per_iter // hp["max_steps"]), envs_per_task=hp["n_envs"],
        max_steps=hp["max_steps"], success_bonus=0.0, shaping=0.0, env_reward=1.0, workers=0,
        iterations=10**6, advantage_norm="minibatch",
    )  # fmt: skip
    pg = PolicyGradient(policy, cfg, grad_clip=hp["max_grad_norm"], seed=seed)
    t0 = time.perf_counter()
    steps, it = 0, 0
    with RolloutEngine(policy, [task], cfg, seed=seed, workers=0) as eng:
        while steps < env_steps:
            ro = eng.collect(it, need_values=True)
            pg.update(ro, it)
            steps += int(ro.stats["rollout/env_steps"])
            it += 1
    wall = time.perf_counter() - t0
    ours_eval = evaluate(policy, [task], ["id"], episodes=eval_episodes, num_envs=8, workers=0)["splits"]["id"]
    out["rlvla"] = {"wall_s": wall, "env_steps": steps, "env_steps_per_s": steps / wall, "iterations": it, "eval": _brief(ours_eval)}
    out["speed_ratio"] = out["rlvla"]["env_steps_per_s"] / out["sb3"]["env_steps_per_s"]
    lo_sb3 = out["sb3"]["eval"]["ci95"][0]
    out["success_within_or_above_sb3_interval"] = out["rlvla"]["eval"]["success_rate"] >= lo_sb3
    return out


def _brief(res: dict) -> dict:
    return {k: res[k] for k in ("success_rate", "ci95", "episodes", "mean_return", "mean_length")}


def bench_rl_main(args) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    if args.what == "rollout":
        res = bench_rollout(head=args.head or "flow")
        line = (f"rollout {res['rollout_steps_per_s']:.0f} env steps/s vs env-only {np.mean(res['env_only_steps_per_s']):.0f} "
                f"({res['envs']} envs, {res['workers']} workers): ratio {res['ratio']:.2f} (target >= 0.7)")  # fmt: skip
    else:
        res = bench_sb3(task=args.task if args.task != "push-v3" else "reach-v3", env_steps=args.rl_steps)
        line = (f"PPO on {res['task']} (state obs, {res['rlvla']['env_steps']} / {res['sb3']['env_steps']} env steps): "
                f"rlvla {res['rlvla']['env_steps_per_s']:.0f} steps/s vs SB3 {res['sb3']['env_steps_per_s']:.0f} "
                f"(ratio {res['speed_ratio']:.2f}, target >= 1.0); success rlvla {res['rlvla']['eval']['success_rate']:.2f} "
                f"{res['rlvla']['eval']['ci95']} vs SB3 {res['sb3']['eval']['success_rate']:.2f} {res['sb3']['eval']['ci95']}")  # fmt: skip
    print(json.dumps(res) if args.json else line)
    if args.json:
        import sys

        print(line, file=sys.stderr)
    return 0
