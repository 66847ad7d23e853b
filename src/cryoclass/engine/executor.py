"""Where E-steps run: the schedules (batch and streaming) ask an E-step executor for them.

``LocalEStep`` (the default) reads and E-steps the particles in this process, exactly as the
schedules always did. ``cryoclass.distributed.DaskEStep`` runs the same E-steps as a map over
particle shards on a Dask cluster and sums their statistics in shard order. Both give the same
results (within float rounding); the schedules do not know which one they use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cryoclass.engine.batch import ParticleBatch
from cryoclass.engine.em import Engine, ParticleResult
from cryoclass.engine.mstep import Statistics

if TYPE_CHECKING:
    from cryoclass.engine.schedule import ParticleSource


@dataclass
class EStepOutput:
    """One minibatch E-step: the batch (or a stand-in that reads it when first used, for
    re-seeding empty classes), per-particle results, the batch statistics (not yet absorbed),
    the temperature, and wall times in seconds ('read', 'estep')."""

    batch: ParticleBatch | Any
    result: ParticleResult
    stats: Statistics
    temperature: float
    seconds: dict[str, float] = field(default_factory=dict)


class EStepExecutor(Protocol):
    """Runs E-steps for a schedule (see module docstring)."""

    def minibatch(self, engine: Engine, source: "ParticleSource", idx: np.ndarray, factor: float,
                  batch: ParticleBatch | None = None) -> EStepOutput:
        """E-step of rows idx of source at annealing factor ``factor``, as one batch (one
        temperature for all of them). ``batch``: those rows already prepared, if at hand."""
        ...

    def full(self, engine: Engine, source: "ParticleSource", hard: bool = False
             ) -> tuple[ParticleResult, Statistics, float]:
        """E-step of every particle at factor 0 in chunks of ``config.batch_particles`` (each
        chunk its own temperature): results in row order, summed statistics, mean temperature."""
        ...


class LocalEStep:
    """E-steps in this process (the default)."""

    def minibatch(self, engine: Engine, source: "ParticleSource", idx: np.ndarray, factor: float,
                  batch: ParticleBatch | None = None) -> EStepOutput:
        from cryoclass.engine.schedule import load_batch

        t0 = time.perf_counter()
        if batch is None:
            batch = load_batch(engine, source, idx)
        t1 = time.perf_counter()
        res, stats, temp = engine.expectation(batch, factor)
        return EStepOutput(batch, res, stats, temp,
                           {"read": t1 - t0, "estep": time.perf_counter() - t1})

    def full(self, engine: Engine, source: "ParticleSource", hard: bool = False
             ) -> tuple[ParticleResult, Statistics, float]:
        from cryoclass.engine.schedule import concat_results, load_batch

        n = len(source)
        stats = Statistics.zeros(engine.cfg.n_classes, engine.grid.size, engine.n_shells,
                                 engine.device)
        parts: list[ParticleResult] = []
        temps = []
        for a in range(0, n, engine.cfg.batch_particles):
            idx = np.arange(a, min(n, a + engine.cfg.batch_particles))
            batch = load_batch(engine, source, idx)
            res, bstats, t = engine.expectation(batch, factor=0.0, hard=hard)
            stats.add_(bstats)
            parts.append(res)
            temps.append(t)
        return concat_results(parts), stats, float(np.mean(temps))
