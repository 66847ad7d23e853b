"""Passes over every ingested particle, shared by both streaming policies: the end-of-stream
passes (the schedule layer's ``final_passes``, exactly as the batch schedule ends) and one
live-policy full iteration."""

from __future__ import annotations

import time

import numpy as np

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
    res, temp, merged = full_pass(
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
