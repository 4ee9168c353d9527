"""``rlvla report RUN...``: the comparison table of :mod:`rlvla.eval.compare` from the command line."""

from __future__ import annotations

from pathlib import Path

from rlvla.eval.compare import write_comparison


def report_main(args) -> int:
    curves = []
    for item in args.curves or []:
        from rlvla.runners.runlog import read_metrics

        label, _, run = item.partition("=") if "=" in item and not Path(item).exists() else (item, "", item)
        if not (Path(run) / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{run} has no metrics.jsonl; pass a training run directory to --curves")
        curves.append((label, read_metrics(Path(run))))
    res = write_comparison(args.out, args.runs, args.baseline or None, args.title, curves)
    for r in res["rows"]:
        cells = "  ".join(f"{s} {r['splits'][s]['text']}" for s in res["splits"] if s in r["splits"])
        print(f"{r['label']:24s} {cells}  overhead {r['overhead_text']} ms")
    print(f"wrote {Path(args.out) / 'report.html'} and report.json")
    return 0
