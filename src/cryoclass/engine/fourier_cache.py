"""Per-particle Fourier data (band coefficients, CTF, padded transforms) kept between
iterations within a memory budget; valid as long as what they depend on (the band, the padded
window) does not change. Owned by a ``PreparedCache`` (``prepared_cache.py``), used by
``ParticleBatch`` (``batch.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

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

    def get(
        self,
        name: str,
        key: object,
        rows: torch.Tensor,
        compute: Callable[[torch.Tensor | None], torch.Tensor],
    ) -> torch.Tensor:
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
            entry = _Entry(
                key,
                torch.zeros(
                    (self.n_rows, *value.shape[1:]), dtype=value.dtype, device=value.device
                ),
                np.zeros(self.n_rows, dtype=bool),
            )
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
