"""Per-particle problems found while validating a particle table: raise on the first, or collect.

Whole-file problems (a missing column, an unreadable file) always raise :class:`InputError`.
Per-particle problems (an image index out of range, a missing or corrupt stack, a non-numeric or
absurd CTF value, a duplicated particle) either raise too (``collect=False``: the first one, with
its row) or are recorded, one reason per row, so the caller can set those particles aside and go
on (``collect=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike

import numpy as np

from .errors import InputError


@dataclass
class RowProblems:
    """Problems of the rows (0-based positions) of one table read from ``file``.

    ``collect=False``: :meth:`flag` raises :class:`InputError` for the first flagged row that is
    not already flagged. ``collect=True``: it records a reason for each such row (the first
    reason of a row wins) and the rows stay flagged (:attr:`bad`, :meth:`ok`).
    ``source_rows`` maps positions to the 0-based data rows of the file (default: identity).
    """

    file: str | PathLike[str]
    n: int
    collect: bool = False
    source_rows: np.ndarray | None = None
    reasons: dict[int, str] = field(default_factory=dict)

    def ok(self) -> np.ndarray:
        """(n,) bool: rows not flagged so far."""
        keep = np.ones(self.n, dtype=bool)
        if self.reasons:
            keep[list(self.reasons)] = False
        return keep

    @property
    def bad(self) -> np.ndarray:
        """Flagged positions, sorted."""
        return np.array(sorted(self.reasons), dtype=np.int64)

    def row_of(self, pos: int) -> int:
        """0-based data row in the file of position ``pos``."""
        return int(self.source_rows[pos]) if self.source_rows is not None else int(pos)

    def flag(self, mask: np.ndarray, reason: Callable[[int], str]) -> None:
        """Flag the rows where ``mask`` is True; ``reason(pos)`` says why (one row's problem)."""
        hits = np.flatnonzero(np.asarray(mask, dtype=bool))
        hits = [int(p) for p in hits if int(p) not in self.reasons]
        if not hits:
            return
        if not self.collect:
            raise InputError(reason(hits[0]), file=self.file, row=self.row_of(hits[0]))
        for p in hits:
            self.reasons[p] = reason(p)
