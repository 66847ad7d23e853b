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

import numpy as np
import torch

from cryoclass.engine.batch import ParticleBatch
from cryoclass.engine.fourier_cache import DEFAULT_FOURIER_BUDGET_BYTES, FourierCache

__all__ = ["DEFAULT_BUDGET_BYTES", "DEFAULT_FOURIER_BUDGET_BYTES", "FourierCache", "PreparedCache"]

DEFAULT_BUDGET_BYTES = 1 << 30


class PreparedCache:
    """Prepared images (and min_res alignment copies) of one particle source, by row.

    Rows are those of the source's table, whose size must not change (a stream's growing pool is
    not cached, see stream/pool.py).
    """

    def __init__(
        self, source: object, box: int, two_copies: bool, budget_bytes: int | None = None
    ) -> None:
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

    def take(
        self, idx: np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = self.images[idx].to(device)
        align = self.align[idx].to(device) if self.align is not None else None
        return images, align
