"""The CryoSPARC Live streaming schedule, corrected as its developers proposed.

1. Wait until batch_size_per_class x n_classes x n_online_em_iters particles have arrived, then
   classify those with a normal 2D run (``schedules.batch.run_batch``: the batch schedule, with
   the same engine and every parameter honoured: max_res_A, white_noise, skip_ctf, ...).
2. Then, each time batch_size_per_class x n_classes x 2 more particles have arrived, run one full
   iteration over all particles so far (cost grows with everything seen: kept for comparison).
"""

from __future__ import annotations

import time

import numpy as np

from cryoclass.io import ParticleSet
from cryoclass.schedules.batch import run_batch
from cryoclass.stream.context import StreamContext, UpdateReport
from cryoclass.stream.passes import one_full_pass


class LivePolicy:
    """Live schedule (see module docstring); remembers how many particles the last pass saw."""

    name = "live"

    def __init__(self, config) -> None:
        self.cfg = config
        self.n_at_last_pass = 0

    @property
    def n_init(self) -> int:
        """Particles the initial 2D run waits for."""
        return self.cfg.minibatch_size * max(self.cfg.n_online_em_iters, 1)

    @property
    def every(self) -> int:
        """New particles between full iterations."""
        return self.cfg.minibatch_size * 2

    def due(self, ctx: StreamContext, finishing: bool = False) -> bool:
        """Initial run: once n_init particles arrived (or at the end, with whatever came);
        afterwards every ``every`` new particles (at the end the final passes take the rest)."""
        n = len(ctx.pool)
        if n == 0:
            return False
        if ctx.engine is None or ctx.engine.state is None:
            return n >= self.n_init or finishing
        return not finishing and n - self.n_at_last_pass >= self.every

    def step(self, ctx: StreamContext) -> UpdateReport:
        ctx.updates += 1
        if ctx.engine.state is None:
            return self._initial_run(ctx)
        rep = one_full_pass(ctx, "full", merge=self.cfg.merge_duplicates)
        self.n_at_last_pass = len(ctx.pool)
        return rep

    def _initial_run(self, ctx: StreamContext) -> UpdateReport:
        t0 = time.perf_counter()
        n = min(len(ctx.pool), self.n_init)
        rows = np.arange(n)
        subset = ParticleSet(table=ctx.pool.table.iloc[:n].reset_index(drop=True))
        result = run_batch(subset, self.cfg, estep=ctx.estep)
        ctx.engine.state = result.state
        ctx.record(result.particles, rows=rows[result.particles.index])
        self.n_at_last_pass = n
        last = result.log[-1]
        return UpdateReport(
            phase="init",
            rows=rows,
            new_rows=rows,
            temperature=last.temperature,
            factor=0.0,
            mean_loglik=last.mean_loglik,
            seconds={"estep": time.perf_counter() - t0},
        )

    def completion_due(self, ctx: StreamContext) -> bool:
        """The initial run already is a complete batch job: nothing to complete."""
        return False

    def rows_withdrawn(self, rows: np.ndarray) -> None:
        """Pool rows taken out (their stack is gone): the last pass saw fewer particles."""
        self.n_at_last_pass -= int(np.count_nonzero(np.asarray(rows) < self.n_at_last_pass))

    def state_dict(self) -> dict:
        return {"n_at_last_pass": self.n_at_last_pass}

    def load_state_dict(self, d: dict) -> None:
        self.n_at_last_pass = int(d.get("n_at_last_pass", 0))
