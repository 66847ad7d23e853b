"""Particles found in a streaming job's watched folder: rows of its STAR files, counted once per
file version (the stream ingests a row only once its stack is complete, so found >= ingested)."""

from __future__ import annotations

import time
from pathlib import Path

from cryoclass.dashboard.jobfiles import Stamp, stamp
from cryoclass.io import read_star
from cryoclass.job_options import JOB


class FoundCounter:
    """Counts particle rows of ``pattern`` files under ``root`` (hidden files and ``exclude``
    folders skipped), re-reading only changed files, at most every ``min_interval_s``."""

    def __init__(
        self,
        root: Path,
        pattern: str = JOB.pattern,
        exclude: list[Path] | None = None,
        min_interval_s: float = 1.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.pattern = pattern
        self.exclude = [Path(e).resolve() for e in exclude or []]
        self.min_interval_s = min_interval_s
        self._rows: dict[Path, tuple[Stamp, int]] = {}
        self._last = -1e9
        self._count = 0

    def count(self) -> int:
        """Particle rows found so far."""
        now = time.monotonic()
        if now - self._last < self.min_interval_s:
            return self._count
        self._last = now
        if not self.root.is_dir():
            return self._count
        seen: dict[Path, tuple[Stamp, int]] = {}
        for p in self.root.rglob(self.pattern):
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if any(p.resolve().is_relative_to(e) for e in self.exclude):
                continue
            st = stamp(p)
            if st is None:
                continue
            old = self._rows.get(p)
            seen[p] = old if old is not None and old[0] == st else (st, _rows(p))
        self._rows = seen
        self._count = sum(n for _, n in seen.values())
        return self._count


def _rows(path: Path) -> int:
    try:
        return len(read_star(path).particles)
    except Exception:  # a STAR being written, or not a particle file: nothing found yet
        return 0
