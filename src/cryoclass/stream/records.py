"""Each ingested particle's latest classification (class, pose, posterior) and when it was
last processed: what the stream's outputs list, and how revisits pick the stalest particles."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from cryoclass.engine.em import ParticleResult


@dataclass
class ParticleRecords:
    """Arrays over the pool's rows (n), growing as particles are ingested.

    cls (n,) int, -1 = never processed; psi_deg, tx, ty (n,) pose (degrees, pixels);
    max_prob, log_likelihood (n,) float; n_significant (n,) int; posterior (n, K) float32;
    last_update (n,) int, the update that last processed the particle (-1 = never);
    processed_at (n,) float, Unix seconds of that update (latency = processed_at - arrival).
    """

    n_classes: int
    cls: np.ndarray
    psi_deg: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    max_prob: np.ndarray
    n_significant: np.ndarray
    log_likelihood: np.ndarray
    posterior: np.ndarray
    last_update: np.ndarray
    processed_at: np.ndarray

    @staticmethod
    def empty(n_classes: int) -> "ParticleRecords":
        f = np.empty(0, dtype=np.float64)
        return ParticleRecords(
            n_classes=n_classes, cls=np.empty(0, np.int64), psi_deg=f, tx=f.copy(), ty=f.copy(),
            max_prob=f.copy(), n_significant=np.empty(0, np.int64), log_likelihood=f.copy(),
            posterior=np.empty((0, n_classes), np.float32), last_update=np.empty(0, np.int64),
            processed_at=f.copy())

    def __len__(self) -> int:
        return int(self.cls.size)

    def grow(self, n: int) -> None:
        """Extend to n rows (new rows unprocessed)."""
        m = n - len(self)
        if m <= 0:
            return
        pad = {"cls": -1, "last_update": -1, "n_significant": 0}
        for f in fields(self):
            if f.name == "n_classes":
                continue
            a = getattr(self, f.name)
            shape = (m,) + a.shape[1:]
            setattr(self, f.name, np.concatenate([a, np.full(shape, pad.get(f.name, 0),
                                                             dtype=a.dtype)]))

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where mask is True (rows withdrawn from the pool)."""
        for f in fields(self):
            if f.name != "n_classes":
                setattr(self, f.name, getattr(self, f.name)[mask])

    def set(self, result: ParticleResult, update: int, now_s: float,
            rows: np.ndarray | None = None) -> None:
        """Store an E-step's results. rows: pool rows of ``result`` (default result.index)."""
        r = np.asarray(result.index if rows is None else rows, dtype=np.int64)
        self.grow(int(r.max()) + 1 if r.size else 0)
        self.cls[r] = result.cls
        self.psi_deg[r] = result.psi_deg
        self.tx[r] = result.tx
        self.ty[r] = result.ty
        self.max_prob[r] = result.max_prob
        self.n_significant[r] = result.n_significant
        self.log_likelihood[r] = result.log_likelihood
        self.posterior[r] = result.posterior
        self.last_update[r] = update
        self.processed_at[r] = now_s

    @property
    def processed(self) -> np.ndarray:
        """Rows processed at least once (sorted)."""
        return np.flatnonzero(self.cls >= 0)

    @property
    def pending(self) -> np.ndarray:
        """Rows never processed, in arrival order."""
        return np.flatnonzero(self.cls < 0)

    def result(self, rows: np.ndarray | None = None) -> ParticleResult:
        """A ParticleResult of the processed rows (index = pool rows), for write_results."""
        r = self.processed if rows is None else np.asarray(rows, dtype=np.int64)
        return ParticleResult(index=r, cls=self.cls[r], psi_deg=self.psi_deg[r], tx=self.tx[r],
                              ty=self.ty[r], max_prob=self.max_prob[r],
                              n_significant=self.n_significant[r],
                              log_likelihood=self.log_likelihood[r],
                              posterior=self.posterior[r])

    def class_counts(self) -> np.ndarray:
        """(K,) particles per class (latest assignments)."""
        c = self.cls[self.cls >= 0]
        return np.bincount(c, minlength=self.n_classes)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_dict(d: dict) -> "ParticleRecords":
        return ParticleRecords(**d)
