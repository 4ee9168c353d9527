"""The `rlvla` command."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlvla", description="RL post-training of vision-language-action policies")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_collect_args, _bench_args, _tasks_args, _train_args, _eval_args, _quickstart_args, _report_args, _reward_eval_args, _wm_eval_args):
        add(sub)
    return p


def _collect_args(sub) -> None:
    c = sub.add_parser("collect", help="collect scripted-expert demonstrations into a LeRobot v3.0 dataset")
    c.add_argument("--tasks", default="quickstart", help="task names or sets (comma-separated), e.g. mt10")
    c.add_argument("--episodes", type=int, default=20, help="episodes per task")
    c.add_argument("--out", required=True, help="dataset directory (continued if it exists)")
    c.add_argument("--image-size", type=int, default=64)
    c.add_argument("--cameras", default="corner", help="comma-separated camera names")
    c.add_argument("--max-steps", type=int, default=200)
    c.add_argument("--noise", type=float, default=0.0, help="std of Gaussian action noise")
    c.add_argument("--failure-prob", type=float, default=0.0, help="probability of an injected failure per episode")
    c.add_argument("--seed-offset", type=int, default=0, help="first training layout seed")
    c.add_argument("--policy", default="", help="record rollouts of this policy checkpoint instead of the expert")
    c.add_argument("--deterministic", action="store_true", help="--policy: deterministic samples (default: random)")
    c.add_argument("--camera-every", type=int, default=1,
                   help="a new image every k steps, the last repeated between (a camera slower than control; "
                   "k = the policy's chunk renders only the frames its decisions see)")
    c.add_argument("--run-to-limit", action="store_true",
                   help="episodes go on to --max-steps after a success (MetaWorld's convention; success frames for reward models)")
    c.add_argument("--seeds", default="train", choices=["train", "eval"],
                   help="eval: layouts from evaluation seeds, for held-out test sets (nothing trains on such a dataset)")
    c.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core)")
    c.add_argument("--quiet", action="store_true")


def _bench_args(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks")
    b.add_argument("what", choices=["env", "inference", "sft", "rollout", "sb3", "offline", "imagined"],
                   help="env throughput, policy latency, SFT success, RL rollout vs env-only throughput, PPO vs SB3, imagined vs real rollouts")
    b.add_argument("--json", action="store_true")
    b.add_argument("--policy", default="", help="imagined: the policy to roll out")
    b.add_argument("--world-model", default="", help="imagined: the world model to roll it out in")
    b.add_argument("--source", default="", help="offline: dataset to replicate into the large one")
    b.add_argument("--copies", type=int, default=5, help="offline: the large dataset holds this many copies of --source")
    b.add_argument("--algo", default="iql", help="offline: algorithm to train")
    b.add_argument("--offline-steps", type=int, default=300, help="offline: training steps per run")
    b.add_argument("--task", default="push-v3")
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--steps", type=int, default=1000, help="env: steps per variant")
    b.add_argument("--train-steps", type=int, default=3400, help="sft: optimiser steps (the budget may stop earlier)")
    b.add_argument("--batch", type=int, default=8, help="inference: envs per decision")
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--heads", default="", help="sft: heads to train (default: all)")
    b.add_argument("--head", default="", help="rollout: the policy's action head (default: flow)")
    b.add_argument("--rl-steps", type=int, default=100_000, help="sb3: env-step budget of each PPO run")
    b.add_argument("--tasks", default="", help="sb3: tasks (default: reach-v3, push-v3, drawer-open-v3)")
    b.add_argument("--seeds", default="0,1,2", help="sb3: seeds per task")
    b.add_argument("--jobs", type=int, default=2, help="sb3: (task, seed) pairs run at once")
    b.add_argument("--budget", type=float, default=300.0, help="sft: training wall-clock budget per head (s)")
    b.add_argument("--episodes", type=int, default=100, help="sft: evaluation episodes; sb3: evaluation episodes per run")
    b.add_argument("--demos", type=int, default=20, help="sft: expert demos per task")
    b.add_argument("--out", default="runs/bench", help="sft: output directory")


def _tasks_args(sub) -> None:
    t = sub.add_parser("tasks", help="list tasks, task sets and splits")
    t.add_argument("--json", action="store_true")


def _train_args(sub) -> None:
    tr = sub.add_parser("train", help="train a policy: rlvla train algo=sft head=flow data.path=DIR key=value ...")
    tr.add_argument("overrides", nargs="*", help="Hydra overrides (key=value, head=<name>, algo=<name>)")
    tr.add_argument("--help-config", action="store_true", help="print the default config with every key and exit")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")


def _eval_args(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a checkpoint on splits with confidence intervals")
    e.add_argument("checkpoint", help="policy dir, training run dir, or checkpoint step dir")
    e.add_argument("--splits", default="id", help="comma-separated splits, e.g. id,ood-position,ood-visual")
    e.add_argument("--episodes", type=int, default=50, help="episodes per split (spread over the tasks)")
    e.add_argument("--tasks", default="", help="tasks (default: the tasks the policy was trained on)")
    e.add_argument("--num-envs", type=int, default=8, help="envs stepped in parallel (one batched decision for all)")
    e.add_argument("--workers", type=int, default=None, help="env worker processes (default: one per core)")
    e.add_argument("--max-steps", type=int, default=None)
    e.add_argument("--videos", type=int, default=2, help="rollout GIFs per split")
    e.add_argument("--videos-dir", default="", help="where to write GIFs (default: beside the checkpoint)")
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--out", default="", help="also write the JSON result to this file")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--test-time", default="none", help="test-time method: none, vgps, bestofn, mcts, retry")
    e.add_argument("--critic", default="", help="vgps (required) / mcts / retry: a checkpoint with a Q ensemble")
    e.add_argument("--samples", type=int, default=8, help="candidate chunks per decision (children per node for mcts)")
    e.add_argument("--temperature", type=float, default=0.0, help="vgps/bestofn: 0 = argmax, > 0 = softmax draw")
    e.add_argument("--simulations", type=int, default=8, help="mcts: simulations per decision")
    e.add_argument("--depth", type=int, default=2, help="mcts: tree depth in chunks")
    e.add_argument("--c-puct", type=float, default=1.0, help="mcts: exploration constant of the PUCT rule")
    e.add_argument("--gamma", type=float, default=0.99, help="mcts: per-step discount of backed-up values")
    e.add_argument("--stall-window", type=int, default=4, help="retry: decisions over which progress is checked")
    e.add_argument("--stall-tol", type=float, default=0.01, help="retry: a value gain below this over the window is a stall")
    e.add_argument("--retry-decisions", type=int, default=2, help="retry: decisions resampled after a stall")
    e.add_argument("--condition", type=float, default=None, help="conditioned policies (rc, recap): the input at test time")
    e.add_argument("--guidance", type=float, default=None, help="conditioned flow policies: classifier-free guidance weight")
    e.add_argument("--sample", action="store_true",
                   help="evaluate the policy as it explores (its sampling distribution, as in RL) instead of its deterministic action")
    e.add_argument("--denoise-steps", type=int, default=0,
                   help="flow/diffusion: evaluate with this many denoising steps (0: the checkpoint's own), e.g. an SFT "
                   "policy with the step count its RL run used")
    e.add_argument("--explore-noise", type=float, default=0.0,
                   help="with --sample: the exploration knob an RL run sets (algo.explore_noise; 0: the checkpoint's own), "
                   "e.g. an SFT policy sampled as its RL run starts")
    e.add_argument("--explore-steps", default="", choices=["", "one", "all", "output"],
                   help="with --sample: which denoising steps explore, or output (algo.explore_steps)")
    e.add_argument("--explore-temperature", type=float, default=0.0,
                   help="with --sample, token head: the sampling temperature (algo.explore_temperature)")
    e.add_argument("--seeds", default="eval", choices=["eval", "validation"],
                   help="evaluation seeds (report) or validation seeds (tune, on any split; never trained on)")


def _quickstart_args(sub) -> None:
    q = sub.add_parser("quickstart", help="the main job on the embedded default benchmark (make quickstart: --tasks grounded/quickstart)")
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--tasks", default="quickstart",
                   help="task set or tasks (comma-separated), e.g. grounded/quickstart (tasks where vision and language are "
                   "both needed; its own preset of the options below)")
    q.add_argument("--episodes", type=int, default=None, help="demonstrations per task (preset: 2, grounded 50)")
    q.add_argument("--cameras", default=None, help="cameras the demos are recorded from and the policy reads (comma-separated; preset: corner, grounded topview)")
    q.add_argument("--head", default="flow", help="action head: token, diffusion, flow, gaussian")
    q.add_argument("--steps", type=int, default=None, help="SFT optimiser steps (preset: 1500, grounded 3000)")
    q.add_argument("--budget", type=float, default=None, help="SFT wall-clock limit (s; preset: 240, grounded 255)")
    q.add_argument("--eval-episodes", type=int, default=100, help="evaluation episodes on id (the headline split)")
    q.add_argument("--ood-episodes", type=int, default=80,
                   help="evaluation episodes on each out-of-distribution split (80: the OOD average's standard error ~2 points)")
    q.add_argument("--eval-max-steps", type=int, default=None,
                   help="cut every evaluation episode at this many env steps (0: each task's own limit; preset: 0, grounded 100)")
    q.add_argument("--sample-episodes", type=int, default=40,
                   help="id episodes evaluating the sampling (exploring) policy before and after RL (0: skip)")
    q.add_argument("--baseline-steps", type=int, default=None,
                   help="SFT steps of the blind and instruction-blind baselines (0: --steps; preset: 0, grounded 500, "
                   "a layout warm-up shortened in proportion)")
    q.add_argument("--baseline-splits", default=None,
                   help="train blind and instruction-blind baselines on the same demos and evaluate them on these splits "
                   "(the VLA's episodes), e.g. id,ood-position; empty: no baselines (preset: none, grounded id,ood-position)")
    q.add_argument("--algo", default="grpo", help="online RL algorithm: grpo, ppo, rloo, reinforce_pp")
    q.add_argument("--rl-iterations", type=int, default=100, help="RL iterations (the budget may stop earlier)")
    q.add_argument("--rl-budget", type=float, default=None,
                   help="RL wall-clock limit (s; preset: 500, grounded 315); the whole quickstart, set-up included, must fit in 20 minutes")
    q.add_argument("--sft", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra SFT overrides (the VLA and its baselines), e.g. policy.backbone.dropout=0 algo.proprio_noise=0")
    q.add_argument("--rl", nargs="*", default=[], metavar="KEY=VALUE", help="extra RL overrides, e.g. algo.lr=1e-4")


def _report_args(sub) -> None:
    r = sub.add_parser("report", help="one comparison table (HTML + JSON) of evaluations: rlvla report [LABEL=]EVAL.json ...")
    r.add_argument("runs", nargs="+", help="evaluation JSON files (rlvla eval --out) or run dirs with eval.json; LABEL=PATH names a row")
    r.add_argument("--out", default="runs/report", help="output directory (report.html, report.json)")
    r.add_argument("--baseline", default="", help="row label the others are compared with (default: the first)")
    r.add_argument("--title", default="Offline and test-time RL")
    r.add_argument("--curves", action="append", default=[],
                   help="[LABEL=]RUN: a training run whose learning curves (metrics.jsonl) go below the table; repeat it to "
                        "compare runs' held-out success against real env steps (simulator vs world model) on one plot")  # fmt: skip


def _reward_eval_args(sub) -> None:
    r = sub.add_parser("reward-eval", help="score a held-out dataset with a reward model: AUC, Spearman, false successes")
    r.add_argument("model", help="reward model dir or its training run dir (rlvla train algo=reward_model)")
    r.add_argument("data", help="a dataset (held-out: rlvla collect --seeds eval --run-to-limit --failure-prob ...)")
    r.add_argument("--out", default="", help="write the results as JSON here")
    r.add_argument("--json", action="store_true")


def _wm_eval_args(sub) -> None:
    w = sub.add_parser("wm-eval", help="a world model's open-loop prediction error at 1, 5 and 10 decisions on a dataset")
    w.add_argument("model", help="world model dir or its training run dir (rlvla train algo=world_model)")
    w.add_argument("data", help="a dataset (held-out: rlvla collect --seeds eval ...)")
    w.add_argument("--sequences", type=int, default=256, help="windows scored")
    w.add_argument("--horizons", default="1,5,10", help="decisions ahead at which the prediction is scored")
    w.add_argument("--out", default="", help="write the results as JSON here")
    w.add_argument("--report", default="", help="a directory for report.html and real-vs-imagined GIFs of held-out episodes")
    w.add_argument("--videos", type=int, default=6, help="--report: episodes shown")
    w.add_argument("--json", action="store_true")


# command -> (module, function); bench dispatches on what it measures
_COMMANDS = {
    "collect": ("rlvla.runners.collect", "collect_main"), "tasks": ("rlvla.runners.info", "tasks_main"),
    "train": ("rlvla.runners.train", "train_main"), "eval": ("rlvla.runners.evaluate", "eval_main"),
    "wm-eval": ("rlvla.runners.world_model", "wm_eval_main"), "reward-eval": ("rlvla.runners.reward", "reward_eval_main"),
    "report": ("rlvla.runners.report", "report_main"), "quickstart": ("rlvla.runners.quickstart", "quickstart_main"),
}  # fmt: skip
_BENCH = {"offline": ("rlvla.bench.offline", "bench_offline_main"), "rollout": ("rlvla.bench.rl", "bench_rl_main"),
          "sb3": ("rlvla.bench.rl", "bench_rl_main"), "imagined": ("rlvla.bench.rl", "bench_rl_main"), "env": ("rlvla.bench.env", "bench_main")}  # fmt: skip


def main(argv=None) -> int:
    import importlib

    args = _parser().parse_args(argv)
    try:
        if args.cmd == "bench":
            module, fn = _BENCH.get(args.what, ("rlvla.bench.policy", "bench_policy_main"))
        else:
            module, fn = _COMMANDS[args.cmd]
        return getattr(importlib.import_module(module), fn)(args)
    except KeyboardInterrupt:
        print(f"rlvla {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"rlvla {args.cmd}: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # training stopped on NaN, an env worker died, ...: one line, exit 1
        from rlvla.envs.pool import EnvWorkerError
        from rlvla.errors import TrainingError

        if not isinstance(e, (TrainingError, EnvWorkerError)):
            raise
        print(f"rlvla {args.cmd}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
