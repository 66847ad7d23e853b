"""Passes over every ingested particle, shared by both streaming policies: the end-of-stream
passes (the schedule layer's ``final_passes``, exactly as the batch schedule ends), the extra
restarts run between the first of them and the second (``n_restarts``, as the batch schedule
runs them) and one live-policy full iteration."""

from __future__ import annotations

import time

import numpy as np

from cryoclass.schedules.batch import run_restart
from cryoclass.schedules.passes import final_passes, full_pass
from cryoclass.stream.context import StreamContext, UpdateReport


def one_full_pass(
    ctx: StreamContext, phase: str, hard: bool = False, update: bool = True, merge: bool = False
) -> UpdateReport:
    """E-step over all pool particles at factor 0; with update, their statistics replace the
    model's (``schedules.passes.full_pass``). Records every particle's assignment."""
    t0 = time.perf_counter()
    ctx.records.grow(len(ctx.pool))
    new = ctx.records.pending
    res, temp, merged, divided, changed = full_pass(
        ctx.engine, ctx.pool, hard=hard, update=update, estep=ctx.estep, merge=merge
    )
    ctx.record(res)
    return UpdateReport(
        phase=phase,
        rows=np.asarray(res.index),
        new_rows=new,
        temperature=temp,
        factor=0.0,
        merged=merged,
        divided=divided,
        changed=changed,
        mean_loglik=float(np.mean(res.log_likelihood)),
        seconds={"estep": time.perf_counter() - t0},
    )


def n_final_passes(ctx: StreamContext) -> int:
    """Passes at the end of a stream: as the batch schedule (``final_passes``)."""
    return len(final_passes(ctx.config))


def final_pass(ctx: StreamContext, j: int) -> UpdateReport:
    """End-of-stream pass j (0-based) of n_final_passes, as the batch schedule ends: full passes
    (the last one hard when hard_classify_last_iter), or one assignment pass without model
    update when n_full_iters == 0."""
    p = final_passes(ctx.config)[j]
    ctx.updates += 1
    return one_full_pass(
        ctx, "final" if p.update else "assign", hard=p.hard, update=p.update, merge=p.merge
    )


def restart_pass(ctx: StreamContext, r: int, kept_score: float) -> tuple[UpdateReport, bool]:
    """Extra restart r (>= 1) at the end of a stream: the batch schedule's online-EM phase over
    every pool particle from a new random start, then its first closing pass
    (``schedules.batch.run_restart``). If that pass's mean log-likelihood beats kept_score (the
    model's so far), its model replaces the stream's and its assignments are recorded.
    Returns the update report and whether the restart was kept."""
    ctx.updates += 1
    ctx.records.grow(len(ctx.pool))
    new = ctx.records.pending
    other = run_restart(ctx.config, ctx.pool, r, ctx.engine.device, ctx.estep)
    kept = other.score > kept_score
    if kept:
        ctx.engine = other.engine
        ctx.record(other.final)
    rep = UpdateReport(
        phase="restart",
        rows=np.asarray(other.final.index),
        new_rows=new,
        temperature=other.entry.temperature,
        factor=0.0,
        merged=other.entry.merged,
        divided=other.entry.divided,
        changed=other.entry.changed,
        mean_loglik=other.score,
        seconds={"estep": other.entry.seconds},
    )
    return rep, kept
