"""Full passes (an E-step over every particle) and how a classification ends, the same for a
batch job and a stream: max(n_full_iters, 1) passes, the last one hard when
hard_classify_last_iter; with n_full_iters = 0, one assignment pass that leaves the model as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoclass.config import Config
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import EStepExecutor, LocalEStep
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.source import ParticleSource, load_batch


@dataclass(frozen=True)
class FinalPass:
    """One of the closing passes: hard (one-hot posteriors), update (the pass's statistics
    replace the model's; False: assign only), merge (then merge duplicate classes: every
    updating pass but the last, whose assignments are the job's)."""

    hard: bool
    update: bool
    merge: bool = False

    @property
    def phase(self) -> str:
        """'full' for a pass that updates the model, 'assign' for one that does not."""
        return "full" if self.update else "assign"


def final_passes(config: Config) -> list[FinalPass]:
    """The passes that end a classification (module docstring), in order."""
    n = max(config.n_full_iters, 1)
    update = config.n_full_iters > 0
    return [
        FinalPass(
            hard=j == n - 1 and config.hard_classify_last_iter,
            update=update,
            merge=update and j < n - 1 and config.merge_duplicates,
        )
        for j in range(n)
    ]


def class_changes(previous: np.ndarray | None, cls: np.ndarray) -> float | None:
    """Fraction of the particles whose class changed since the previous full pass, as RELION
    reports it (rlnChangesOptimalClasses): previous, (m,) classes of rows 0..m-1 then (a stream
    has added rows since: they are not counted); cls, (n,) classes now, n >= m. None without a
    previous pass."""
    if previous is None or previous.size == 0:
        return None
    m = min(previous.size, cls.size)
    return float(np.mean(previous[:m] != cls[:m]))


def full_pass(
    engine: Engine,
    source: ParticleSource,
    hard: bool = False,
    update: bool = True,
    estep: EStepExecutor | None = None,
    merge: bool = False,
) -> tuple[ParticleResult, float, int, int, float | None]:
    """E-step over all particles in chunks at annealing factor 0; with update, replace the
    statistics by the pass's, then with merge, merge duplicate classes and divide classes that
    hold two views (``Engine.divide_classes``). estep: where the E-steps run (default: here,
    ``LocalEStep``). Returns the particles' results (row order), the mean temperature, the
    number of classes emptied by merging, the number of classes whose particles were split
    anew (pairs re-drawn and classes divided) and the fraction of particles whose class changed
    since the previous full pass (``class_changes``; None for the first)."""
    n = len(source)
    res, stats, temp = (estep or LocalEStep()).full(engine, source, hard=hard)
    cls = np.asarray(res.cls, dtype=np.int32)
    changed = class_changes(engine.state.pass_classes, cls)
    engine.state.pass_classes = cls.copy()
    if update:
        engine.state.distinct_seen = 0
        engine.absorb(stats, n, n, replace=True)
        if merge:

            def load(rows):
                return load_batch(engine, source, rows)

            redrawn: list[tuple[int, int]] = []
            merged = engine.merge_duplicates(load, res.cls, redrawn)
            touched = {c for pair in merged + redrawn for c in pair[:2]}
            divided = engine.divide_classes(load, res.cls, touched)
            return res, temp, len(merged), len(redrawn) + len(divided), changed
    return res, temp, 0, 0, changed
