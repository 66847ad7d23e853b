"""Ctrl-C (SIGINT) and SIGTERM ask a long job to stop at its next safe point.

Inside ``StopSignals()``, the first signal only sets ``requested`` (the job finishes the update
under way, commits and says what it holds); a second one raises ``KeyboardInterrupt`` at once
(the last commit stays intact). Handlers are installed only in the main thread.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    """Context manager catching SIGINT and SIGTERM (see module docstring)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        """'Ctrl-C' or 'SIGTERM' ('' before any signal)."""
        return NAMES.get(self.signum, "") if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in NAMES:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
