"""``rlvla report RUN...``: the comparison table of :mod:`rlvla.eval.compare` from the command line."""

from __future__ import annotations

from pathlib import Path

from rlvla.eval.compare import write_comparison


def report_main(args) -> int:
    res = write_comparison(args.out, args.runs, args.baseline or None, args.title)
    for r in res["rows"]:
        cells = "  ".join(f"{s} {r['splits'][s]['text']}" for s in res["splits"] if s in r["splits"])
        print(f"{r['label']:24s} {cells}  overhead {r['overhead_text']} ms")
    print(f"wrote {Path(args.out) / 'report.html'} and report.json")
    return 0
