"""Peak resident memory of this process and all its descendants (env workers included), sampled from /proc.

``getrusage`` reports one process (or the largest child), not a process tree; the quickstart's memory budget is
for the whole tree, so a daemon thread sums ``VmRSS`` over the tree every ``interval`` seconds.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_rss_mb(pid: int | None = None) -> float:
    """Current resident memory (MB) of ``pid`` and its descendants (0 where /proc is unavailable)."""
    todo, total = [pid or os.getpid()], 0
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
        todo += _children(p)
    return total / 1024.0


class TreePeak:
    """``with TreePeak() as m: ...; m.peak_mb``: the largest tree RSS seen while the block ran."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreePeak":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, tree_rss_mb())
