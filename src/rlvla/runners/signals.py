"""Ctrl-C / SIGTERM as a flag, checked by training loops between whole updates.

The first signal sets ``stop.requested``; the loop finishes its update, writes a checkpoint and exits. A second
signal raises ``KeyboardInterrupt`` at once with ``stop.force`` set: the caller must then not write a checkpoint
(an update may have been cut in half).
"""

from __future__ import annotations

import signal
import threading


class StopOnSignal:
    def __init__(self) -> None:
        self.signal: int | None = None
        self.force = False
        self._old: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            self.force = True
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old = {}
