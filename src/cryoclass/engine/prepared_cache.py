"""Prepared particle images kept in memory between iterations, within a memory budget.

Online EM reads each particle many times (20 minibatches of 2/3 of a 3,000-particle set); reading
and normalising them again each time costs about as much as a fifth of the E-step. A set whose
prepared images fit in the budget is kept whole; a larger one is not cached at all, so memory
stays bounded by the budget whatever the number of particles. The same holds for the particles'
Fourier data (band coefficients, CTF, padded transforms: ``FourierCache``), which stay valid as
long as the working resolution does not change.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cryoclass.engine.batch import ParticleBatch

DEFAULT_BUDGET_BYTES = 1 << 30
DEFAULT_FOURIER_BUDGET_BYTES = 768 << 20


@dataclass
class _Entry:
    key: object
    data: torch.Tensor
    filled: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.data.element_size() * self.data.nelement()


class FourierCache:
    """Per-particle tensors derived from prepared images, by row of the source's table, each under
    a name and a key (what it depends on besides the particle: the band, the padded window).

    An entry whose key changes is rebuilt; one that would take the total over the budget is not
    kept (its values are computed every time, as without a cache).
    """

    def __init__(self, n_rows: int, budget_bytes: int = DEFAULT_FOURIER_BUDGET_BYTES) -> None:
        self.n_rows = n_rows
        self.budget = budget_bytes
        self.entries: dict[str, _Entry] = {}

    def get(self, name: str, key: object, rows: torch.Tensor,
            compute: Callable[[torch.Tensor | None], torch.Tensor]) -> torch.Tensor:
        """Entry ``name`` at rows (m,) long. ``compute(pos)`` gives the values ((p, ...)) at
        positions pos (long) of rows, or at all of them for pos None; it is called only for the
        rows not cached with this key, whose values are then kept within the budget."""
        entry = self.entries.get(name)
        if entry is not None and entry.key != key:
            del self.entries[name]
            entry = None
        r = rows.cpu().numpy()
        if entry is None:
            value = compute(None)
            need = value.element_size() * value[:1].nelement() * self.n_rows
            if need + sum(e.nbytes for e in self.entries.values()) > self.budget:
                return value
            entry = _Entry(key, torch.zeros((self.n_rows, *value.shape[1:]), dtype=value.dtype,
                                            device=value.device),
                           np.zeros(self.n_rows, dtype=bool))
            self.entries[name] = entry
            entry.data[rows] = value
            entry.filled[r] = True
            return value
        todo = np.flatnonzero(~entry.filled[r])
        if todo.size:
            pos = torch.as_tensor(todo, dtype=torch.long, device=rows.device)
            entry.data[rows[pos]] = compute(pos)
            entry.filled[r[todo]] = True
        return entry.data[rows]


class PreparedCache:
    """Prepared images (and min_res alignment copies) of one particle source, by row.

    Rows are those of the source's table, whose size must not change (a stream's growing pool is
    not cached, see stream/pool.py).
    """

    def __init__(self, source: object, box: int, two_copies: bool,
                 budget_bytes: int | None = None) -> None:
        self._source = weakref.ref(source)
        self.box = box
        self.copies = 2 if two_copies else 1
        self.budget = DEFAULT_BUDGET_BYTES if budget_bytes is None else budget_bytes
        self.enabled = True
        self.filled = np.zeros(0, dtype=bool)
        self.images: torch.Tensor | None = None
        self.align: torch.Tensor | None = None
        self.fourier: FourierCache | None = None

    def serves(self, source: object) -> bool:
        return self._source() is source

    def _fit(self, n: int) -> bool:
        """Allocate for a source of n rows on first use; give up for good when the source is
        over the budget or changes size."""
        if self.filled.size == 0 and n * self.box * self.box * 4 * self.copies <= self.budget:
            self.filled = np.zeros(n, dtype=bool)
            self.images = torch.zeros(n, self.box, self.box)
            self.align = torch.zeros(n, self.box, self.box) if self.copies == 2 else None
            self.fourier = FourierCache(n)
        if self.filled.size != n:
            self.enabled = False
            self.filled, self.images, self.align = np.zeros(0, bool), None, None
            self.fourier = None
        return self.enabled

    def missing(self, idx: np.ndarray, n_rows: int) -> np.ndarray:
        """The rows of idx not cached yet (all of idx once the cache is disabled)."""
        if not self.enabled or not self._fit(n_rows):
            return idx
        return idx[~self.filled[idx]]

    def store(self, batch: ParticleBatch) -> None:
        if not self.enabled:
            return
        rows = batch.index.cpu().numpy()
        self.images[rows] = batch.images.cpu()
        if self.align is not None:
            self.align[rows] = batch.align_images.cpu()
        self.filled[rows] = True

    def take(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = self.images[idx].to(device)
        align = self.align[idx].to(device) if self.align is not None else None
        return images, align
