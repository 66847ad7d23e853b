"""The default streaming schedule: online EM over the arriving particles.

Each update takes the particles not processed yet (oldest first, at most one batch minibatch,
batch_size_per_class x n_classes, so annealing moves in steps no larger than the batch job's),
adds up to ``stream_revisit`` times as many older particles (least recently processed first, ties
broken at random) while the stream is in its online-EM phase, E-steps them together at the
annealing factor of the particles processed so far, and absorbs the statistics as the batch
schedule does: each update is the schedule layer's one online-EM step
(``cryoclass.schedules.online.online_step``). The work per update is proportional to the new
particles, never to all particles seen.

Warm-up: until one minibatch of distinct particles has arrived, each update starts afresh from all
particles so far exactly as the batch job starts (random-subset classes, one E-step at the initial
uncertainty). A tiny first chunk (2 particles per class) thus only gives provisional classes and
cannot bias the classes that follow; once a minibatch has arrived, the state is the batch job's
after its first iteration. After that, once the stream has processed as many particles as the
batch job's online-EM phase (n_online_em_iters x minibatch), revisits stop: each new particle is
E-stepped once on arrival, and all particles again in the final full passes (``passes.py``).

End of a short stream: if it ends before it has processed the batch job's online-EM phase, the
phase is completed as the batch schedule runs it (random minibatches of all particles), so the
final passes start from the state a batch job on the same particles would reach.
"""

from __future__ import annotations

import time

import numpy as np

from cryoclass.engine.source import load_batch
from cryoclass.schedules.online import OnlineStep, online_step
from cryoclass.stream.context import StreamContext, UpdateReport


def choose_revisits(ctx: StreamContext, budget: int) -> np.ndarray:
    """Up to budget processed rows, least recently processed first (random among equals)."""
    cand = ctx.records.processed
    if budget <= 0 or cand.size == 0:
        return np.empty(0, dtype=np.int64)
    if budget >= cand.size:
        return cand
    key = ctx.records.last_update[cand] + ctx.rng.random(cand.size)
    return np.sort(cand[np.argpartition(key, budget - 1)[:budget]])


class OnlinePolicy:
    """Online EM on arrivals (see module docstring). Stateless apart from the context."""

    name = "online"

    def __init__(self, config) -> None:
        self.cfg = config

    def due(self, ctx: StreamContext, finishing: bool = False) -> bool:
        """An update is due whenever some ingested particle has not been processed."""
        ctx.records.grow(len(ctx.pool))
        return ctx.records.pending.size > 0

    def revisit_budget(self, ctx: StreamContext, n_new: int) -> int:
        """Older particles to revisit with n_new new ones: stream_revisit x n_new while the
        stream is in its online-EM phase (fewer particles processed than the batch job's online
        phase, n_online_em_iters x minibatch), then 0: each later particle is E-stepped once on
        arrival, and every particle again in the final full passes."""
        cfg = self.cfg
        if ctx.engine.state.processed >= cfg.n_online_em_iters * cfg.minibatch_size:
            return 0
        return int(round(cfg.stream_revisit * n_new))

    def step(self, ctx: StreamContext) -> UpdateReport:
        """One online-EM update on the oldest pending particles (+ revisits)."""
        cfg, engine = self.cfg, ctx.engine
        ctx.records.grow(len(ctx.pool))
        new = ctx.records.pending[: cfg.minibatch_size]
        ctx.updates += 1
        t0 = time.perf_counter()
        if engine.state is None or engine.state.distinct_seen < cfg.minibatch_size:
            return self._warm_up(ctx, t0)
        old = choose_revisits(ctx, self.revisit_budget(ctx, new.size))
        rows = np.sort(np.concatenate([new, old]))
        step = online_step(engine, ctx.estep, ctx.pool, rows, int(new.size), record=ctx.record)
        return _report("online", rows, new, step)

    def _warm_up(self, ctx: StreamContext, t0: float) -> UpdateReport:
        """Until one minibatch of particles has arrived: start afresh from all of them, as the
        batch schedule starts (random-subset classes, then one E-step at the initial
        uncertainty). Provisional classes for a tiny start; the state once a minibatch has
        arrived is the batch job's after its first iteration."""
        cfg, engine = self.cfg, ctx.engine
        rows = np.arange(min(len(ctx.pool), cfg.minibatch_size))
        new = rows[ctx.records.cls[rows] < 0]
        batch = load_batch(engine, ctx.pool, rows)
        engine.initialise(batch)
        t1 = time.perf_counter()
        step = online_step(
            engine, ctx.estep, ctx.pool, rows, int(rows.size), record=ctx.record, batch=batch
        )
        step.seconds = {
            "read": t1 - t0,
            "estep": step.seconds["estep"],
            "mstep": step.seconds["mstep"],
        }
        return _report("warmup", rows, new, step)

    def online_phase_target(self, ctx: StreamContext) -> int:
        """Particles the batch schedule processes in its online-EM phase for this pool."""
        return self.cfg.n_online_em_iters * min(self.cfg.minibatch_size, len(ctx.pool))

    def completion_due(self, ctx: StreamContext) -> bool:
        """At the end: has the stream processed less than the batch job's online-EM phase?"""
        st = ctx.engine.state if ctx.engine is not None else None
        return st is not None and len(ctx.pool) > 0 and st.processed < self.online_phase_target(ctx)

    def complete_step(self, ctx: StreamContext) -> UpdateReport:
        """One batch-schedule online-EM iteration: a random minibatch of all particles."""
        cfg, engine = self.cfg, ctx.engine
        ctx.updates += 1
        n = len(ctx.pool)
        rows = np.sort(ctx.rng.choice(n, size=min(cfg.minibatch_size, n), replace=False))
        step = online_step(engine, ctx.estep, ctx.pool, rows, 0, record=ctx.record)
        return _report("complete", rows, rows[:0], step)

    def rows_withdrawn(self, rows: np.ndarray) -> None:
        """Pool rows taken out (their stack is gone): nothing to adjust."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass


def _report(phase: str, rows: np.ndarray, new: np.ndarray, step: OnlineStep) -> UpdateReport:
    """The update report of an online-EM step on rows (new: those processed for the first
    time)."""
    return UpdateReport(
        phase=phase,
        rows=rows,
        new_rows=new,
        temperature=step.temperature,
        factor=step.factor,
        reseeded=len(step.reseeded),
        mean_loglik=step.mean_loglik,
        seconds=step.seconds,
    )
