"""The particles a stream has ingested so far: a growing table with an ingestion ledger.

Every particle is identified by a key (by default ``<absolute stack path>@<0-based index>``), so
the same image referenced by two STAR files, or a STAR that is re-read, is ingested only once.
The pool is a ``ParticleSource`` (see ``cryoclass.engine.source``): ``box``,
``pixel_size_A``, ``len()``, ``images(idx)`` and ``ctf_params(idx)``, so ``load_batch`` and the schedules' ``full_pass``
work on it directly. Rows are in ingestion order and never change position.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryoclass.io import ParticleSet
from cryoclass.io.columns import STACK_INDEX, STACK_PATH, ctf_parameters

#: Internal column: when the particle's files appeared (Unix seconds, file mtime).
ARRIVAL = "_arrival_s"
#: Internal column: the particle's ledger key.
KEY = "_stream_key"
#: Internal column: the file the particle was read from (for rejects).
SOURCE_FILE = "_source_file"


def particle_keys(table: pd.DataFrame) -> np.ndarray:
    """(n,) str ledger keys ``<stack path>@<0-based index>`` of canonical table rows."""
    if not len(table):
        return np.empty(0, dtype=object)
    return (
        table[STACK_PATH].astype(str) + "@" + table[STACK_INDEX].astype(np.int64).astype(str)
    ).to_numpy(dtype=object)


class ParticlePool:
    """Ingested particles (rows in arrival order) and the ledger of their keys.

    ``table``: canonical RELION columns + ``_stack_path``, ``_stack_index``, ``_arrival_s``
    (Unix s) and ``_stream_key``. ``box`` (px) and ``pixel_size_A`` (Å) are fixed by the first
    particles; later particles must match them (the caller rejects those that do not).
    """

    # Not images_immutable (engine/prepared_cache.py): a pool grows by small chunks, and a
    # stream revisits only a bounded number of older particles, so a cache would cost more in
    # reallocation and memory than it saves.

    def __init__(
        self,
        table: pd.DataFrame | None = None,
        box: int | None = None,
        pixel_size_A: float | None = None,
    ) -> None:
        self._parts: list[pd.DataFrame] = []
        self._table: pd.DataFrame | None = None
        self._keys: set[str] = set()
        self._rejected: set[str] = set()
        self._n = 0
        self._box = box
        self._apix = pixel_size_A
        if table is not None and len(table):
            self._append(table.reset_index(drop=True))

    # ------------------------------------------------------------------ ParticleSource
    @property
    def table(self) -> pd.DataFrame:
        """All ingested rows (index 0..n-1)."""
        if self._table is None:
            self._table = (
                pd.concat(self._parts, ignore_index=True)
                if self._parts
                else pd.DataFrame({STACK_PATH: [], STACK_INDEX: [], KEY: [], ARRIVAL: []})
            )
            self._parts = [self._table] if self._parts else []
        return self._table

    @property
    def box(self) -> int:
        if self._box is None:
            raise ValueError("no particles yet, so no box size")
        return int(self._box)

    @property
    def pixel_size_A(self) -> float:
        if self._apix is None:
            raise ValueError("no particles yet, so no pixel size")
        return float(self._apix)

    @property
    def has_geometry(self) -> bool:
        return self._box is not None and self._apix is not None

    def set_geometry(self, box: int, pixel_size_A: float) -> None:
        """Fix the stream's box (px) and pixel size (Å); only once."""
        if self.has_geometry:
            raise ValueError("geometry already set")
        self._box, self._apix = int(box), float(pixel_size_A)

    def __len__(self) -> int:
        return self._n

    def images(self, idx: np.ndarray) -> np.ndarray:
        """float32 (len(idx), D, D) images of rows idx, read from their stacks."""
        return ParticleSet(table=self.table).images(np.asarray(idx))

    def ctf_params(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """CTF parameters of rows idx in physical units (name -> (len(idx),) float64)."""
        return ctf_parameters(self.table.iloc[np.asarray(idx)])

    # ------------------------------------------------------------------ ledger
    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def known(self, keys: np.ndarray) -> np.ndarray:
        """(n,) bool: which keys are already in the ledger (ingested or rejected)."""
        return np.fromiter(
            (k in self._keys or k in self._rejected for k in keys), dtype=bool, count=len(keys)
        )

    def mark_rejected(self, keys: np.ndarray) -> None:
        """Record keys set aside (bad image, wrong box...): never ingested, never retried."""
        self._rejected.update(str(k) for k in keys)

    def withdraw(self, rows: np.ndarray) -> pd.DataFrame:
        """Take ingested rows (positions) out of the pool for good, e.g. when their stack was
        deleted: their keys move to the rejected ledger and later rows move up. Returns the rows
        taken out."""
        t = self.table
        gone = np.zeros(len(t), dtype=bool)
        gone[np.asarray(rows, dtype=np.int64)] = True
        out, keep = t.loc[gone].reset_index(drop=True), t.loc[~gone].reset_index(drop=True)
        self._parts, self._table = ([keep] if len(keep) else []), None
        self._keys = set(keep[KEY].astype(str))
        self._n = len(keep)
        self.mark_rejected(out[KEY].to_numpy(dtype=object))
        return out

    @property
    def n_rejected(self) -> int:
        return len(self._rejected)

    def add(self, table: pd.DataFrame, arrival_s: np.ndarray | float) -> np.ndarray:
        """Append canonical rows not yet in the ledger (duplicates within ``table`` are taken
        once). ``arrival_s``: Unix seconds, per row or one value. Returns the new rows' positions.
        """
        t = table.reset_index(drop=True).copy()
        keys = t[KEY].to_numpy(dtype=object) if KEY in t.columns else particle_keys(t)
        arrival = np.broadcast_to(np.asarray(arrival_s, dtype=np.float64), (len(t),))
        fresh = ~self.known(keys)
        _, first = np.unique(keys.astype(str), return_index=True) if len(t) else ([], [])
        once = np.zeros(len(t), dtype=bool)
        once[np.asarray(first, dtype=np.int64)] = True
        keep = fresh & once
        if not keep.any():
            return np.empty(0, dtype=np.int64)
        t = t.loc[keep].reset_index(drop=True)
        t[KEY] = keys[keep]
        t[ARRIVAL] = arrival[keep]
        start = self._n
        self._append(t)
        return np.arange(start, self._n, dtype=np.int64)

    def _append(self, t: pd.DataFrame) -> None:
        self._parts.append(t)
        self._table = None
        self._keys.update(t[KEY].astype(str))
        self._n += len(t)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """Picklable snapshot (the table holds the ledger keys)."""
        return {
            "table": self.table,
            "box": self._box,
            "pixel_size_A": self._apix,
            "rejected": sorted(self._rejected),
        }

    @staticmethod
    def from_dict(d: dict) -> "ParticlePool":
        pool = ParticlePool(d["table"], d["box"], d["pixel_size_A"])
        pool.mark_rejected(np.asarray(d.get("rejected", []), dtype=object))
        return pool
