"""What a streaming policy works on, and what one update reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cryoclass.config import Config
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import EStepExecutor, LocalEStep
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.stream.pool import ParticlePool
from cryoclass.stream.records import ParticleRecords


@dataclass
class StreamContext:
    """The engine (None until the stream knows its box), the ingested particles, their latest
    assignments, the stream's own random generator, the number of updates done and where the
    E-steps run (``engine.executor``: here by default, or a Dask cluster)."""

    config: Config
    engine: Engine | None
    pool: ParticlePool
    records: ParticleRecords
    rng: np.random.Generator
    updates: int = 0
    estep: EStepExecutor = field(default_factory=LocalEStep)

    def record(self, result: ParticleResult, rows: np.ndarray | None = None) -> None:
        """Store an E-step's per-particle results as the update ``self.updates``."""
        self.records.set(result, self.updates, time.time(), rows)


@dataclass
class UpdateReport:
    """One model update.

    phase: 'online' (online-EM step), 'init' (live: normal 2D run), 'full' (full pass over all
    particles), 'final' (end-of-stream full pass), 'assign' (end-of-stream pass without update);
    rows: pool rows processed; new_rows: those of them processed for the first time;
    temperature: E-step temperature; factor: annealing factor;
    reseeded: classes re-seeded; merged: classes emptied as duplicates; divided: classes whose
    particles were split anew (``schedules.passes.full_pass``); changed: of a full pass after
    the first, the fraction of particles whose class changed since the previous one
    (``schedules.passes.class_changes``; None otherwise); mean_loglik: mean best
    log-likelihood; seconds: 'read', 'estep', 'mstep' wall times (s).
    """

    phase: str
    rows: np.ndarray
    new_rows: np.ndarray
    temperature: float
    factor: float
    reseeded: int = 0
    merged: int = 0
    divided: int = 0
    changed: float | None = None
    mean_loglik: float = float("nan")
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_processed(self) -> int:
        return int(self.rows.size)

    @property
    def n_new(self) -> int:
        return int(self.new_rows.size)

    @property
    def n_revisited(self) -> int:
        return self.n_processed - self.n_new
