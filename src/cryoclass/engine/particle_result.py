"""Per-particle outcome of an E-step: best class, its pose and posterior, for n particles.

One type for every place that holds per-particle results (an E-step's chunk, a whole pass, the
stream's latest result of every ingested particle), with the array operations they need:
``concat`` (chunks in order), ``take`` (a subset by position), ``put`` (overwrite positions).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class ParticleResult:
    """Per-particle outcome of an E-step (n particles).

    index (n,) rows of the particle table; cls (n,) best class (0-based); psi_deg, tx, ty (n,) its
    pose (degrees, pixels, RELION-style model, see poses.py); max_prob (n,) its posterior;
    n_significant (n,) classes with posterior > 1 %; log_likelihood (n,) best tempered score;
    posterior (n, K).
    """

    index: np.ndarray
    cls: np.ndarray
    psi_deg: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    max_prob: np.ndarray
    n_significant: np.ndarray
    log_likelihood: np.ndarray
    posterior: np.ndarray

    def __len__(self) -> int:
        return int(np.asarray(self.index).size)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The per-particle arrays' names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def concat(cls, parts: list[ParticleResult]) -> ParticleResult:
        """The parts' particles one after the other (in the order of ``parts``)."""
        return cls(*[np.concatenate([getattr(p, f) for p in parts]) for f in cls.names()])

    @classmethod
    def unprocessed(cls, n: int, n_classes: int, first_row: int = 0) -> ParticleResult:
        """n placeholder rows (index first_row, first_row + 1, ...) for particles never
        E-stepped: class -1, poses and scores 0, posterior (n, K) float32 zeros."""
        f = np.zeros(n, dtype=np.float64)
        return cls(
            index=np.arange(first_row, first_row + n, dtype=np.int64),
            cls=np.full(n, -1, dtype=np.int64),
            psi_deg=f,
            tx=f.copy(),
            ty=f.copy(),
            max_prob=f.copy(),
            n_significant=np.zeros(n, dtype=np.int64),
            log_likelihood=f.copy(),
            posterior=np.zeros((n, n_classes), dtype=np.float32),
        )

    def take(self, pos: np.ndarray) -> ParticleResult:
        """The particles at positions ``pos`` (an index array or a boolean mask)."""
        return ParticleResult(*[np.asarray(getattr(self, f))[pos] for f in self.names()])

    def put(self, pos: np.ndarray, other: ParticleResult, index: bool = True) -> None:
        """Overwrite positions ``pos`` with ``other``'s particles (in place); index=False keeps
        this result's row numbers."""
        for f in self.names():
            if f != "index" or index:
                getattr(self, f)[pos] = getattr(other, f)

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(np.asarray(getattr(self, f)).nbytes for f in self.names())

    def to_dict(self) -> dict[str, np.ndarray]:
        """name -> array (for checkpoints; ``ParticleResult(**d)`` reads it back)."""
        return {f: getattr(self, f) for f in self.names()}
