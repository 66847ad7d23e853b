"""One online-EM step, the same in a batch job, a stream and the end of a short stream:

annealing factor of the particles processed so far -> minibatch E-step -> absorb the statistics
-> re-seed empty classes (while annealing) -> record the particles' results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cryoclass.engine.batch import ParticleBatch
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import EStepExecutor
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.source import ParticleSource
from cryoclass.schedules.annealing import annealing_factor, reseed_due


@dataclass
class OnlineStep:
    """What one online-EM step did: per-particle results (n rows), the annealing factor and the
    E-step temperature, classes re-seeded, and wall times in seconds ('read', 'estep' from the
    executor; 'mstep': absorb + re-seed + record)."""

    result: ParticleResult
    factor: float
    temperature: float
    reseeded: list[int]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def mean_loglik(self) -> float:
        """Mean best log-likelihood of the step's particles."""
        return float(np.mean(self.result.log_likelihood))


def online_step(
    engine: Engine,
    estep: EStepExecutor,
    source: ParticleSource,
    rows: np.ndarray,
    n_new_distinct: int,
    record: Callable[[ParticleResult], None] | None = None,
    batch: ParticleBatch | None = None,
) -> OnlineStep:
    """One online-EM step on rows (sorted, of ``source``) with the model in ``engine``.

    n_new_distinct: how many of the rows were never processed before (for the statistics'
    scale, ``Engine.absorb``); record(result): stores the particles' results, after any
    re-seeding moved some to a restarted class; batch: the rows already prepared, if at hand.
    The annealing factor is that of the particles processed so far (``annealing.py``).
    """
    cfg = engine.cfg
    factor = annealing_factor(cfg, engine.state.processed)
    out = estep.minibatch(engine, source, rows, factor, batch=batch)
    t0 = time.perf_counter()
    engine.absorb(out.stats, int(np.size(rows)), int(n_new_distinct))
    reseeded = engine.reseed_empty(out.batch, out.result) if reseed_due(cfg, factor) else []
    if record is not None:
        record(out.result)
    return OnlineStep(
        out.result,
        factor,
        out.temperature,
        reseeded,
        {**out.seconds, "mstep": time.perf_counter() - t0},
    )
