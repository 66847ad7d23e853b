"""A stream's outputs: the batch job's files (``write_results``) for the particles processed so
far, less duplicate picks, rewritten after an update at most every ``every_s`` seconds (always
when forced: at the end, after a final pass)."""

from __future__ import annotations

import time
from pathlib import Path

from cryoclass.config import Config
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.poses import working_steps
from cryoclass.io import Reject
from cryoclass.outputs.results import write_results
from cryoclass.stream.context import StreamContext


class StreamOutputs:
    """The outputs in ``out``; ``stale`` once an update was not written out, ``n_duplicates``:
    duplicate picks left out of the last ones written."""

    def __init__(self, out: Path, config: Config, every_s: float = 0.0) -> None:
        self.out = out
        self.config = config
        self.every_s = float(every_s)
        self.stale = False
        self.n_duplicates = 0
        self._last = 0.0

    def due(self, force: bool) -> bool:
        """Whether to write now (else the outputs are marked stale)."""
        now = time.monotonic()
        if force or self.every_s <= 0 or now - self._last >= self.every_s:
            return True
        self.stale = True
        return False

    def write(
        self, ctx: StreamContext, rejects: list[Reject], history: list[dict]
    ) -> dict[str, Path]:
        """Rewrite the outputs for the processed particles of ``ctx``; ``rejects``: the stream's
        (duplicate picks are added); ``history``: one entry per update."""
        ctx.records.grow(len(ctx.pool))
        st, res = (ctx.engine.state if ctx.engine is not None else None), ctx.records.result()
        if st is None or res.index.size == 0:
            return {}
        self._last = time.monotonic()
        self.stale = False
        pool = ctx.pool
        psi_step, shift_step = working_steps(
            pool.box * pool.pixel_size_A / max(st.r_work, 1e-6),
            pool.pixel_size_A,
            ctx.engine.particle_radius_A,
            self.config.psi_step_deg,
            self.config.shift_step_px,
        )
        rejects = list(rejects)
        if self.config.remove_duplicates:
            res, duplicates = self._without_duplicate_picks(ctx, res)
            rejects += duplicates
            self.n_duplicates = len(duplicates)
        return write_results(
            self.out,
            st,
            res,
            pool.table,
            self.config,
            rejects=rejects,
            history=history,
            accuracy_deg=psi_step,
            accuracy_A=shift_step * pool.pixel_size_A,
        )

    def _without_duplicate_picks(
        self, ctx: StreamContext, res: ParticleResult
    ) -> tuple[ParticleResult, list[Reject]]:
        """The current results less duplicate picks (same micrograph, closer than
        min_separation_A: the lower-posterior copies), and rejects naming them. Recomputed at
        each output, as posteriors change while particles arrive; the ledger is untouched."""
        from cryoclass.outputs.duplicates import without_duplicate_picks

        return without_duplicate_picks(
            ctx.pool.table.iloc[res.index], res, self.config.min_separation_A
        )
