"""``rlvla report RUN...``: one table of many evaluations (SFT, offline algorithms, test-time methods).

Each input is an evaluation JSON written by ``rlvla eval --out`` (or a run directory holding ``eval.json`` or
``evals/*.json``). A row is one evaluation: its label (``label=path`` on the command line, else the run's algorithm
plus the test-time method), the algorithm that trained the checkpoint (read from the run's ``train_summary.json`` /
``config.yaml``), success with Wilson 95% intervals per split, the change against the baseline row in points
with an exact McNemar test on the paired episodes (same layout seeds), and the test-time overhead: mean
per-decision time per env minus that of the same checkpoint evaluated without a test-time method (or of the
baseline when that evaluation is absent).

Writes ``report.json`` (the rows, machine-readable) and ``report.html`` atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlvla.eval.metrics import mcnemar_exact

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child, td.left { text-align: left; }
.up { color: #1a7f37; } .down { color: #b42318; } .base { background: #f3f3f3; }
.note { color: #555; font-size: 14px; }
</style></head><body>
<h1>{{ title }}</h1>
<table id="comparison">
<thead><tr><th>method</th><th>trained by</th><th>test time</th>
{% for s in splits %}<th>{{ s }}</th><th>&Delta; vs {{ baseline }}</th><th>&Delta; vs own base</th>{% endfor %}<th>overhead (ms / decision)</th></tr></thead>
<tbody>
{% for r in rows %}<tr class="{{ 'base' if r.is_baseline else '' }}"><td>{{ r.label }}</td><td class="left">{{ r.algo }}</td><td class="left">{{ r.test_time }}</td>
{% for s in splits %}{% set c = r.splits.get(s) %}<td>{{ c.text if c else '-' }}</td>
<td class="{{ c.cls if c else '' }}">{{ c.delta_text if c else '-' }}</td>
<td>{{ c.vs_own_base_text if c and c.vs_own_base_text else '-' }}</td>{% endfor %}
<td>{{ r.overhead_text }}</td></tr>
{% endfor %}</tbody></table>
<p class="note">Success rate with Wilson 95% intervals over evaluation seeds (disjoint from every training seed);
&Delta;: change in points against <b>{{ baseline }}</b>, with the exact McNemar test on the paired episodes
(episodes only this row solved / only the baseline solved, p-value). &Delta; vs own base: a test-time method
against the same checkpoint evaluated without it. Overhead: mean time per decision per env
beyond the same checkpoint's plain evaluation (test-time methods only).</p>
{% if overlay %}<h2>Held-out success against real env steps</h2>
<img style="max-width: 100%" src="{{ overlay }}" alt="{{ overlay }}">
<p class="note">The deterministic policy on held-out (validation-seed) layouts during each run, with 95% intervals.
Real env steps: a simulator run's env steps; a run in a world model counts the episode starts it rendered plus the
frames the world model was trained on.</p>{% endif %}
{% for g in curves %}<h2>Learning curves of {{ g.run }}</h2>
{% for c in g.pngs %}<img style="max-width: 100%" src="{{ c }}" alt="{{ c }}">{% endfor %}{% endfor %}
<h2>Inputs</h2><pre>{{ inputs }}</pre>
</body></html>
"""


def load_eval(path) -> tuple[dict, Path]:
    """An evaluation JSON from a file or a run directory (``eval.json``); a clear error otherwise."""
    p = Path(path)
    if p.is_dir():
        if not (p / "eval.json").exists():
            raise FileNotFoundError(f"{path}: no eval.json in this directory; run `rlvla eval CHECKPOINT --out FILE` first")
        p = p / "eval.json"
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such evaluation file")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e}); re-run the evaluation") from None
    if not isinstance(d, dict) or "splits" not in d:
        raise ValueError(f"{p}: not an evaluation result (no 'splits'); write one with `rlvla eval ... --out FILE`")
    return d, p


def trained_by(checkpoint: str) -> str:
    """The algorithm of the run that produced a policy checkpoint (``?`` when it cannot be told)."""
    for d in list(Path(checkpoint).parents)[:3]:
        s = d / "train_summary.json"
        if s.exists():
            try:
                algo = json.loads(s.read_text()).get("algo")
            except (json.JSONDecodeError, UnicodeDecodeError):
                algo = None
            if algo:
                return algo
        c = d / "config.yaml"
        if c.exists():
            for line in c.read_text().splitlines():
                if line.strip().startswith("name:"):
                    return line.split(":", 1)[1].strip()
    return "?"


def _paired(r: dict, b: dict) -> dict:
    """Change in points of split result ``r`` against ``b`` with the exact McNemar test on shared episodes."""
    pa = {(t, sd): ok for t, sd, ok in r.get("per_episode", [])}
    pb = {(t, sd): ok for t, sd, ok in b.get("per_episode", [])}
    keys = sorted(set(pa) & set(pb))
    delta = 100 * (r["success_rate"] - b["success_rate"])
    out = {"delta_points": delta, "cls": "up" if delta > 0 else ("down" if delta < 0 else "")}
    if keys:
        t = mcnemar_exact([pa[k] for k in keys], [pb[k] for k in keys])
        out.update(paired=len(keys), only_this=t["a_only"], only_baseline=t["b_only"], p_value=t["p_value"])
        out["text"] = f"{delta:+.0f} ({t['a_only']}/{t['b_only']}, p={t['p_value']:.2g})"
    else:
        out["text"] = f"{delta:+.0f} (unpaired)"
    return out


def _cell(s: dict) -> str:
    lo, hi = s["ci95"]
    return f"{s['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] (n={s['episodes']})"


def build_rows(evals: list[tuple[str, dict]], baseline: str | None = None) -> tuple[list[dict], list[str], str]:
    """-> (rows, splits in first-seen order, baseline label)."""
    if not evals:
        raise ValueError("nothing to report: pass evaluation JSON files or run directories")
    labels = [lab for lab, _ in evals]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate row labels {sorted({x for x in labels if labels.count(x) > 1})}; name rows with label=path")
    base_label = baseline or labels[0]
    if base_label not in labels:
        raise ValueError(f"baseline {base_label!r} is not one of the rows {labels}")
    by_label = dict(evals)
    base = by_label[base_label]
    splits: list[str] = []
    for _, e in evals:
        for s in e["splits"]:
            if s not in splits:
                splits.append(s)
    plain = {}  # checkpoint -> its evaluation without a test-time method (for overheads)
    for _, e in evals:
        if e.get("test_time", {}).get("method", "none") == "none":
            plain.setdefault(e.get("checkpoint"), e)
    rows = []
    for lab, e in evals:
        tt = e.get("test_time", {}) or {}
        method = tt.get("method", "none")
        row = {"label": lab, "checkpoint": e.get("checkpoint"), "algo": trained_by(e["checkpoint"]) if e.get("checkpoint") else "?",
               "test_time": method if method != "none" else "-", "is_baseline": lab == base_label, "splits": {}}  # fmt: skip
        if method != "none":
            extra = {k: tt[k] for k in ("samples", "temperature", "critic", "simulations", "depth") if k in tt}
            row["test_time_config"] = extra
        for s, r in e["splits"].items():
            c = {"success_rate": r["success_rate"], "ci95": r["ci95"], "episodes": r["episodes"], "text": _cell(r)}
            b = base["splits"].get(s)
            if b is not None and lab != base_label:
                d = _paired(r, b)
                c.update({k: v for k, v in d.items() if k != "text"}, delta_text=d["text"])
            else:
                c["delta_text"] = "-"
            own = plain.get(e.get("checkpoint"))
            if method != "none" and own is not None and s in own["splits"]:
                d = _paired(r, own["splits"][s])  # the test-time method against its own base policy
                c["vs_own_base"] = {k: v for k, v in d.items() if k != "text"}
                c["vs_own_base_text"] = d["text"]
            row["splits"][s] = c
        lat = [r.get("latency_ms", {}).get("mean_per_env") for r in e["splits"].values()]
        lat = [x for x in lat if x is not None]
        row["ms_per_decision"] = sum(lat) / len(lat) if lat else None
        ref = plain.get(e.get("checkpoint")) or base
        rlat = [r.get("latency_ms", {}).get("mean_per_env") for r in ref["splits"].values()]
        rlat = [x for x in rlat if x is not None]
        if method != "none" and row["ms_per_decision"] is not None and rlat:
            row["overhead_ms"] = row["ms_per_decision"] - sum(rlat) / len(rlat)
            row["overhead_text"] = f"{row['overhead_ms']:+.1f}"
        else:
            row["overhead_ms"] = None
            row["overhead_text"] = "-"
        rows.append(row)
    return rows, splits, base_label


def write_comparison(out_dir, inputs: list[str], baseline: str | None = None, title: str = "Offline and test-time RL",
                     curves: tuple[str, list[dict]] | list[tuple[str, list[dict]]] | None = None) -> dict:
    """``curves``: (run name, its ``metrics.jsonl`` records), or a list of them: each run's learning curves are
    drawn below the table; with more than one, also their held-out success against real env steps on one plot."""
    from jinja2 import Environment

    from rlvla.io import atomic_write_bytes, atomic_write_json

    evals, sources = [], []
    for item in inputs:
        label, _, path = item.partition("=") if "=" in item and not Path(item).exists() else ("", "", item)
        d, p = load_eval(path)
        if not label:
            tt = (d.get("test_time") or {}).get("method", "none")
            label = trained_by(d.get("checkpoint", "")) + ("" if tt == "none" else f"+{tt}")
        evals.append((label, d))
        sources.append(f"{label}: {p} (checkpoint {d.get('checkpoint')})")
    rows, splits, base = build_rows(evals, baseline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"baseline": base, "splits": splits, "rows": rows}
    atomic_write_json(out / "report.json", result)
    runs = [curves] if isinstance(curves, tuple) else list(curves or [])
    groups, overlay = [], None
    if runs:
        from rlvla.eval.report import learning_curves, real_step_curves

        for i, (name, metrics) in enumerate(runs):
            pngs = learning_curves(metrics, out / "report_files", prefix="" if len(runs) == 1 else f"run{i}_")
            groups.append({"run": name, "pngs": [p.relative_to(out).as_posix() for p in pngs]})
        if len(runs) > 1:
            png = real_step_curves(runs, out / "report_files" / "heldout_vs_real_steps.png")
            overlay = png.relative_to(out).as_posix() if png else None
    html = Environment(autoescape=True).from_string(TEMPLATE).render(
        title=title, rows=rows, splits=splits, baseline=base, inputs="\n".join(sources), curves=groups, overlay=overlay)
    atomic_write_bytes(out / "report.html", html.encode())
    return result
