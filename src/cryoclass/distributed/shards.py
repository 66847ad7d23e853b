"""Particle shards: which rows each E-step task gets, and what it needs to read them itself.

A shard carries the job's row numbers of its particles (``ParticleResult.index``, the half-set
of each particle) and their metadata rows, slimmed to what reading and preparing them needs
(stack path and index, CTF parameters): a few hundred bytes per particle. The images never
travel: the worker reads them from the stacks on the shared filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryoclass.io import ParticleSet
from cryoclass.io.columns import CTF_COLUMNS, SOURCE_ROW, STACK_INDEX, STACK_PATH

#: Metadata columns a shard carries (those present in the table).
SHARD_COLUMNS = (STACK_PATH, STACK_INDEX, SOURCE_ROW, "rlnImageName", *CTF_COLUMNS.values())


@dataclass
class Shard:
    """Rows ``index`` (n,) of the job's particle table, in order, with their slimmed metadata
    ``rows`` (n rows); ``number``: the shard's place in the reduction order."""

    number: int
    index: np.ndarray
    rows: pd.DataFrame

    @property
    def n(self) -> int:
        return int(self.index.size)


def make_shard(number: int, index: np.ndarray, table: pd.DataFrame) -> Shard:
    """Shard of rows ``index`` of ``table`` (the job's particle table)."""
    index = np.asarray(index, dtype=np.int64)
    cols = [c for c in SHARD_COLUMNS if c in table.columns]
    return Shard(number, index, table.iloc[index][cols].reset_index(drop=True))


class ShardSource:
    """The particles of one shard as a particle source (``cryoclass.engine.source``), on a
    worker: positions 0..n-1 of ``shard.rows``; images read from their stacks."""

    def __init__(self, shard: Shard, box: int, pixel_size_A: float) -> None:
        self.table = shard.rows
        self.box = int(box)
        self.pixel_size_A = float(pixel_size_A)
        self._set = ParticleSet(table=shard.rows)

    def __len__(self) -> int:
        return len(self.table)

    def images(self, idx: np.ndarray) -> np.ndarray:
        return self._set.images(idx)

    def ctf_params(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return self._set.ctf_params(idx)
