"""What a stream records of each commit: the history entry of an update (``model.star``'s
iteration log) and the line of ``events.jsonl`` (``cryoclass.outputs.events``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cryoclass.stream.context import StreamContext, UpdateReport
from cryoclass.stream.pool import ARRIVAL


def history_entry(ctx: StreamContext, rep: UpdateReport) -> dict[str, Any]:
    """The iteration-log entry of update ``rep`` (the update counter of ``ctx``)."""
    eng = ctx.engine
    return {
        "iteration": ctx.updates,
        "phase": rep.phase,
        "n_particles": rep.n_processed,
        "temperature": float(rep.temperature),
        "work_res_A": float(eng.res_A(eng.state.r_work)) if eng and eng.state else 0.0,
        "mean_loglik": float(rep.mean_loglik),
        "seconds": float(sum(rep.seconds.values())),
        "reseeded": rep.reseeded,
        "merged": rep.merged,
        "divided": rep.divided,
        "changed": rep.changed,
    }


def commit_event(
    ctx: StreamContext,
    policy: str,
    rep: UpdateReport | None,
    kind: str | None,
    seq: int,
    now: float,
    n_new_ingested: int,
    n_rejected: int,
) -> dict[str, Any]:
    """Event ``seq`` of a commit at Unix time ``now``: of update ``rep`` (None: particles ingested
    or set aside, or ``kind``, e.g. 'finish'); ``n_new_ingested`` since the last commit,
    ``n_rejected`` so far."""
    recs = ctx.records
    recs.grow(len(ctx.pool))
    e: dict[str, Any] = {
        "seq": seq,
        "time": round(now, 3),
        "event": kind or (rep.phase if rep else "ingest"),
        "job": "stream",
        "policy": policy,
        "update": ctx.updates,
        "n_ingested": len(ctx.pool),
        "n_new_ingested": n_new_ingested,
        "n_processed": int(recs.processed.size),
        "n_rejected": n_rejected,
    }
    if rep is not None:
        new = np.asarray(rep.new_rows, dtype=np.int64)
        arrival = ctx.pool.table[ARRIVAL].to_numpy(np.float64)
        lat = recs.processed_at[new] - arrival[new] if new.size else np.empty(0)
        e.update(
            {
                "n_new": rep.n_new,
                "n_revisited": rep.n_revisited,
                "temperature": round(float(rep.temperature), 4),
                "factor": round(float(rep.factor), 4),
                "reseeded": rep.reseeded,
                "merged": rep.merged,
                "divided": rep.divided,
                "class_changes": None if rep.changed is None else round(rep.changed, 4),
                "mean_loglik": round(float(rep.mean_loglik), 4),
                "work_res_A": history_entry(ctx, rep)["work_res_A"],
                "latency_s": (
                    {"mean": round(float(lat.mean()), 3), "max": round(float(lat.max()), 3)}
                    if lat.size
                    else None
                ),
                "seconds": {k: round(v, 4) for k, v in rep.seconds.items()},
            }
        )
    e["class_counts"] = recs.class_counts().tolist()
    return e
