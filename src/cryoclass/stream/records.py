"""Each ingested particle's latest classification (class, pose, posterior) and when it was
last processed: what the stream's outputs list, and how revisits pick the stalest particles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoclass.engine.particle_result import ParticleResult


@dataclass
class ParticleRecords:
    """Arrays over the pool's rows (n), growing as particles are ingested.

    latest: a ParticleResult over all n rows (index = pool row; cls -1 = never processed);
    last_update (n,) int, the update that last processed the particle (-1 = never);
    processed_at (n,) float, Unix seconds of that update (latency = processed_at - arrival).
    """

    n_classes: int
    latest: ParticleResult
    last_update: np.ndarray
    processed_at: np.ndarray

    @staticmethod
    def empty(n_classes: int) -> ParticleRecords:
        return ParticleRecords(
            n_classes,
            ParticleResult.unprocessed(0, n_classes),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
        )

    def __len__(self) -> int:
        return len(self.latest)

    @property
    def cls(self) -> np.ndarray:
        """(n,) latest class of every row (-1 = never processed)."""
        return self.latest.cls

    def grow(self, n: int) -> None:
        """Extend to n rows (new rows unprocessed)."""
        m = n - len(self)
        if m <= 0:
            return
        pad = ParticleResult.unprocessed(m, self.n_classes, first_row=len(self))
        self.latest = ParticleResult.concat([self.latest, pad])
        self.last_update = np.concatenate([self.last_update, np.full(m, -1, np.int64)])
        self.processed_at = np.concatenate([self.processed_at, np.zeros(m, np.float64)])

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where mask (n,) bool is True (rows withdrawn from the pool); the
        rows after them move up, as in the pool."""
        self.latest = self.latest.take(mask)
        self.latest.index = np.arange(len(self.latest), dtype=np.int64)
        self.last_update = self.last_update[mask]
        self.processed_at = self.processed_at[mask]

    def set(
        self, result: ParticleResult, update: int, now_s: float, rows: np.ndarray | None = None
    ) -> None:
        """Store an E-step's results. rows: pool rows of ``result`` (default result.index)."""
        r = np.asarray(result.index if rows is None else rows, dtype=np.int64)
        self.grow(int(r.max()) + 1 if r.size else 0)
        self.latest.put(r, result, index=False)
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
        return self.latest.take(r)

    def class_counts(self) -> np.ndarray:
        """(K,) particles per class (latest assignments)."""
        c = self.cls[self.cls >= 0]
        return np.bincount(c, minlength=self.n_classes)

    def to_dict(self) -> dict:
        """Flat name -> array (the checkpoint's format: the result's arrays but its index, which
        is 0..n-1, and the two update columns)."""
        d = {k: v for k, v in self.latest.to_dict().items() if k != "index"}
        return {
            "n_classes": self.n_classes,
            **d,
            "last_update": self.last_update,
            "processed_at": self.processed_at,
        }

    @staticmethod
    def from_dict(d: dict) -> ParticleRecords:
        n = int(np.asarray(d["cls"]).size)
        latest = ParticleResult(
            index=np.arange(n, dtype=np.int64),
            **{f: d[f] for f in ParticleResult.names() if f != "index"},
        )
        return ParticleRecords(int(d["n_classes"]), latest, d["last_update"], d["processed_at"])
