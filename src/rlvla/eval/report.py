"""The SFT-vs-RL report: learning curves (PNG), a success table with 95% intervals and paired tests, rollout GIFs.

``write_report(out_dir, summary, metrics, gifs)`` writes ``out_dir/report.html`` (atomically) and the PNGs it
shows into ``out_dir/report_files/``; GIFs are linked by paths relative to ``out_dir``. ``summary`` is the
quickstart's ``{"sft": eval json, "rl": eval json, ...}``, ``metrics`` the RL run's ``metrics.jsonl`` records.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from rlvla.eval.metrics import mcnemar_exact

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.up { color: #1a7f37; } .down { color: #b42318; }
figure { display: inline-block; margin: 4px; text-align: center; font-size: 12px; }
img.curve { max-width: 100%; }
.note { color: #555; font-size: 14px; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="note">{{ subtitle }}</p>
<h2>Success rate, SFT vs RL</h2>
<table id="success-table">
<thead><tr><th>split</th><th>episodes</th><th>SFT</th><th>RL</th><th>change (points)</th><th>paired test</th></tr></thead>
<tbody>
{% for r in rows %}<tr class="split-row" data-split="{{ r.split }}"><td>{{ r.split }}</td><td>{{ r.episodes }}</td>
<td>{{ r.sft }}</td><td>{{ r.rl }}</td><td class="{{ r.cls }}">{{ r.delta }}</td><td>{{ r.test }}</td></tr>
{% endfor %}</tbody></table>
<p class="note">Success with Wilson 95% intervals on evaluation seeds (disjoint from training seeds); the same layouts
for SFT and RL on each split. Paired test: exact McNemar on episodes solved by one policy and not the other
(RL-only / SFT-only). RL trained on the <code>id</code> split only. {{ headline }}</p>
{% if sample_rows %}<h3>The exploring policy (sampled actions)</h3>
<table id="sample-table">
<thead><tr><th>split</th><th>episodes</th><th>SFT</th><th>RL</th><th>change (points)</th><th>paired test</th></tr></thead>
<tbody>
{% for r in sample_rows %}<tr class="sample-row" data-split="{{ r.split }}"><td>{{ r.split }}</td><td>{{ r.episodes }}</td>
<td>{{ r.sft }}</td><td>{{ r.rl }}</td><td class="{{ r.cls }}">{{ r.delta }}</td><td>{{ r.test }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% if baseline_rows %}<h3>Baselines: the same SFT with the image or the instruction blanked</h3>
<table id="baseline-table">
<thead><tr><th>split</th><th>episodes</th><th>VLA (SFT)</th>{% for b in baseline_names %}<th>{{ b }}</th><th>VLA - {{ b }} (paired test)</th>{% endfor %}<th>RL</th></tr></thead>
<tbody>
{% for r in baseline_rows %}<tr class="baseline-row" data-split="{{ r.split }}"><td>{{ r.split }}</td><td>{{ r.episodes }}</td><td>{{ r.sft }}</td>
{% for c in r.cells %}<td>{{ c.rate }}</td><td class="{{ c.cls }}">{{ c.delta }} ({{ c.test }})</td>{% endfor %}<td>{{ r.rl }}</td></tr>
{% endfor %}</tbody></table>
<p class="note">Trained on the same demonstrations with the same steps and evaluated on the same episodes as the VLA.
A VLA result counts where it beats both: the policy then uses what it sees and what it is told. Paired test: exact
McNemar (VLA-only / baseline-only).</p>{% endif %}
{% if per_task %}<h3>Per task (id)</h3><table id="task-table"><thead><tr><th>task</th><th>SFT</th><th>RL</th></tr></thead><tbody>
{% for t in per_task %}<tr><td>{{ t.task }}</td><td>{{ t.sft }}</td><td>{{ t.rl }}</td></tr>{% endfor %}
</tbody></table>{% endif %}
<h2>Learning curves</h2>
{% for c in curves %}<img class="curve" src="{{ c }}" alt="{{ c }}">{% endfor %}
<h2>Rollouts before and after RL</h2>
{% for group in gifs %}<h3>{{ group.label }}</h3>
{% for g in group.files %}<figure><img src="{{ g.src }}" alt="{{ g.name }}"><figcaption>{{ g.name }}</figcaption></figure>{% endfor %}
{% endfor %}
<h2>Run</h2><pre>{{ run }}</pre>
</body></html>
"""


def _fmt(s: dict | None) -> str:
    if not s:
        return "-"
    lo, hi = s["ci95"]
    return f"{s['success_rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def comparison_rows(sft: dict, rl: dict) -> list[dict]:
    """One row per split present in both evaluations: rates, intervals, change and exact McNemar on paired episodes."""
    rows = []
    for split, a in sft["splits"].items():
        b = rl["splits"].get(split)
        if b is None:
            continue
        pa = {(t, s): ok for t, s, ok in a["per_episode"]}
        pb = {(t, s): ok for t, s, ok in b["per_episode"]}
        keys = sorted(set(pa) & set(pb))
        test = mcnemar_exact([pb[k] for k in keys], [pa[k] for k in keys])
        only_rl, only_sft, p = test["a_only"], test["b_only"], test["p_value"]
        delta = 100 * (b["success_rate"] - a["success_rate"])
        rows.append({
            "split": split, "episodes": len(keys), "sft": _fmt(a), "rl": _fmt(b), "delta": f"{delta:+.0f}",
            "cls": "up" if delta > 0 else ("down" if delta < 0 else ""), "delta_points": delta,
            "test": f"{only_rl} / {only_sft}, p = {p:.3g}", "p": p,
            "disjoint_ci": b["ci95"][0] > a["ci95"][1],
        })  # fmt: skip
    return rows


def baseline_rows(summary: dict) -> list[dict]:
    """Per split the baselines were evaluated on: the VLA's SFT rate, each baseline's rate and the VLA's paired
    lead over it, and RL's rate."""
    baselines = summary.get("baselines") or {}
    if not baselines:
        return []
    vs = {name: {r["split"]: r for r in comparison_rows(res, summary["sft"])} for name, res in baselines.items()}
    rows = []
    for split, a in summary["sft"]["splits"].items():
        if not all(split in v for v in vs.values()):
            continue
        cells = []
        for name, res in baselines.items():
            r = vs[name][split]
            cells.append({"name": name, "rate": r["sft"], "delta": r["delta"], "cls": r["cls"], "test": r["test"],
                          "delta_points": r["delta_points"], "p": r["p"]})  # fmt: skip
        rows.append({"split": split, "episodes": vs[next(iter(vs))][split]["episodes"], "sft": _fmt(a), "cells": cells,
                     "rl": _fmt(summary.get("rl", {}).get("splits", {}).get(split))})  # fmt: skip
    return rows


def real_steps(metrics: list[dict]) -> list[float]:
    """Each record's real env steps so far: a simulator run's env steps; an imagined run's rendered episode starts
    plus the frames its world model was trained on (``rollout/real_env_steps_total``), so that the two compare."""
    offset = next((m["rollout/real_env_steps_total"] - m["rollout/real_env_steps"] for m in metrics
                   if "rollout/real_env_steps_total" in m and "rollout/real_env_steps" in m), 0)  # fmt: skip
    return [m.get("rollout/real_env_steps_total", m.get("rollout/real_env_steps", m.get("env_steps", 0)) + offset) for m in metrics]


def real_step_curves(runs: list[tuple[str, list[dict]]], path: Path) -> Path | None:
    """One PNG: the held-out success (with its 95% interval) of each run against the real env steps it had used
    (:func:`real_steps`); None when no run has held-out points (``algo.eval_every``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = False
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, metrics in runs:
        x = real_steps(metrics)
        held = [(xi, m) for xi, m in zip(x, metrics) if "heldout/success" in m]
        if not held:
            continue
        drawn = True
        ax.errorbar([h[0] for h in held], [m["heldout/success"] for _, m in held], capsize=3, fmt="o-", label=name,
                    yerr=[[m["heldout/success"] - m["heldout/ci_low"] for _, m in held],
                          [m["heldout/ci_high"] - m["heldout/success"] for _, m in held]])  # fmt: skip
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="real env steps (imagined runs: episode starts + the world model's training frames)",
           ylabel="held-out success (validation seeds)", ylim=(-0.02, 1.02))  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)
    return path


def learning_curves(metrics: list[dict], out: Path, prefix: str = "") -> list[Path]:
    """PNGs of an RL run's ``metrics.jsonl`` records in ``out`` (file names start with ``prefix``): success (rollout
    per task, held-out with its interval), KL and clip fraction, groups kept/dropped and env steps/s, explore std,
    value EV and losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics:
        return []
    steps = [m["step"] for m in metrics]
    env = [m.get("env_steps", s) for m, s in zip(metrics, steps)]
    paths = []
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    held = [m for m in metrics if "heldout/success" in m]
    if held:  # the deterministic policy on held-out (validation) layouts, with its 95% interval
        he = [m.get("env_steps", m["step"]) for m in held]
        ax[0].errorbar(he, [m["heldout/success"] for m in held], fmt="o-", color="tab:red", capsize=3,
                       yerr=[[m["heldout/success"] - m["heldout/ci_low"] for m in held],
                             [m["heldout/ci_high"] - m["heldout/success"] for m in held]],
                       label="held-out (deterministic, validation seeds)")  # fmt: skip
    ax[0].plot(env, [m.get("rollout/success", float("nan")) for m in metrics], lw=2.5, color="k", label="all tasks")
    for key in sorted({k for m in metrics for k in m if k.startswith("rollout/success/")}):
        ax[0].plot(env, [m.get(key, float("nan")) for m in metrics], lw=1, label=key.split("/")[-1])
    ax[0].set(xlabel="env steps", ylabel="rollout success (stochastic, training seeds)", ylim=(-0.02, 1.02))
    ax[0].legend(fontsize=7)
    ax[1].plot(env, [m.get("train/approx_kl", float("nan")) for m in metrics], label="approx KL (old || new)")
    ax[1].plot(env, [m.get("train/clip_fraction", float("nan")) for m in metrics], label="clip fraction")
    ax[1].set(xlabel="env steps", yscale="log")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / f"{prefix}learning_curves.png")
    _save_fig(fig, paths[-1])
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
    ax[0].plot(env, [m.get("rollout/groups_kept", float("nan")) for m in metrics], label="groups kept")
    ax[0].plot(env, [m.get("rollout/groups_dropped", float("nan")) for m in metrics], label="groups dropped (all same outcome)")
    ax[0].set(xlabel="env steps")
    ax[0].legend(fontsize=7)
    ax[1].plot(env, [m.get("rollout/env_steps_per_s", float("nan")) for m in metrics])
    ax[1].set(xlabel="env steps", ylabel="rollout env steps/s (incl. inference)")
    fig.tight_layout()
    paths.append(out / f"{prefix}rollout_stats.png")
    _save_fig(fig, paths[-1])
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.2))
    ax[0].plot(env, [m.get("rollout/explore_std", float("nan")) for m in metrics])
    ax[0].set(xlabel="env steps", ylabel="explore std (action units)")
    ax[1].plot(env, [m.get("train/explained_variance", float("nan")) for m in metrics])
    ax[1].axhline(0, color="grey", lw=0.5)
    ax[1].set(xlabel="env steps", ylabel="value explained variance", ylim=(-1.05, 1.05))
    ax[2].plot(env, [m.get("train/value_loss", float("nan")) for m in metrics], label="value loss")
    ax[2].plot(env, [m.get("train/entropy", float("nan")) for m in metrics], label="entropy")
    ax[2].set(xlabel="env steps")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / f"{prefix}rl_diagnostics.png")
    _save_fig(fig, paths[-1])
    plt.close("all")
    return paths


def _save_fig(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=90, format="png")
    os.replace(tmp, path)


def write_report(out_dir, summary: dict, metrics: list[dict], gifs: dict[str, list[Path]], title: str = "rlvla quickstart: SFT -> RL") -> Path:
    import jinja2

    from rlvla.io import atomic_write_bytes

    out = Path(out_dir)
    rows = comparison_rows(summary["sft"], summary["rl"])
    sample_rows = comparison_rows(summary["sft_sample"], summary["rl_sample"]) if summary.get("sft_sample") and summary.get("rl_sample") else []
    head = summary.get("headline") or {}
    headline = f"The table evaluates the {head['evaluation']} policy: {head['why']}." if head else ""
    per_task = []
    sid, rid = summary["sft"]["splits"].get("id"), summary["rl"]["splits"].get("id")
    if sid and rid:
        for t, s in sid["tasks"].items():
            r = rid["tasks"].get(t, {})
            per_task.append({"task": t, "sft": f"{s['success_rate']:.2f}", "rl": f"{r.get('success_rate', float('nan')):.2f}"})
    curves = [p.relative_to(out).as_posix() for p in learning_curves(metrics, out / "report_files")]
    gif_groups = [{"label": label, "files": [{"src": Path(os.path.relpath(g, out)).as_posix(), "name": Path(g).stem} for g in files]}
                  for label, files in gifs.items()]  # fmt: skip
    cfg = summary.get("config", {})
    run = "\n".join(f"{k}: {v}" for k, v in [("wall_s", f"{summary.get('wall_s', 0):.0f}"),
                                              ("peak_rss_mb", f"{summary.get('peak_rss_mb', 0):.0f}"), *cfg.items()])  # fmt: skip
    env = jinja2.Environment(autoescape=True)
    page = env.from_string(TEMPLATE).render(
        title=title, rows=rows, sample_rows=sample_rows, baseline_rows=baseline_rows(summary),
        baseline_names=list(summary.get("baselines") or {}), headline=headline, per_task=per_task, curves=curves, gifs=gif_groups, run=run,
        subtitle=html.unescape(f"SFT checkpoint {summary['sft'].get('checkpoint', '?')} -> RL checkpoint "
                               f"{summary['rl'].get('checkpoint', '?')}"),
    )  # fmt: skip
    path = out / "report.html"
    atomic_write_bytes(path, page.encode())
    return path
