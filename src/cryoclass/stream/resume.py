"""What a stream's checkpoint holds besides its model (the ``state`` of
``cryoclass.outputs.checkpoint``), and how a resumed stream gets it back: the context (ledger,
latest assignments, update counter, random generators), the policy's counters and the stream's
bookkeeping (rejects, history, stacks of added images, final passes done)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryoclass.io import Reject
from cryoclass.stream.context import StreamContext
from cryoclass.stream.live import LivePolicy
from cryoclass.stream.online import OnlinePolicy
from cryoclass.stream.pool import ParticlePool
from cryoclass.stream.records import ParticleRecords


@dataclass
class Bookkeeping:
    """The stream's own records: rejects, history (one entry per update), API stacks written,
    final passes done, whether it finished, extra restarts done at its end and the mean
    log-likelihood of the model kept so far (``passes.restart_pass``)."""

    rejects: list[Reject] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    api_chunks: int = 0
    final_done: int = 0
    finished: bool = False
    restarts_done: int = 0
    kept_score: float | None = None


def saved_state(
    ctx: StreamContext, policy: OnlinePolicy | LivePolicy, book: Bookkeeping, events: list[dict]
) -> dict[str, Any]:
    """Plain data for the checkpoint; ``events``: those of the commit (replayed if the log lacks
    them)."""
    eng = ctx.engine
    return {
        "policy": policy.name,
        "policy_state": policy.state_dict(),
        "pool": ctx.pool.to_dict(),
        "records": ctx.records.to_dict(),
        "updates": ctx.updates,
        "rng": ctx.rng.bit_generator.state,
        "engine_rng": eng.rng.bit_generator.state if eng is not None else None,
        "rejects": [r.__dict__ for r in book.rejects],
        "history": book.history,
        "events": events,
        "api_chunks": book.api_chunks,
        "final_done": book.final_done,
        "finished": book.finished,
        "restarts_done": book.restarts_done,
        "kept_score": book.kept_score,
    }


def restore(
    ctx: StreamContext, policy: OnlinePolicy | LivePolicy, state: dict[str, Any]
) -> Bookkeeping:
    """Put the saved context and policy state back (the engine's model and generator are the
    caller's: it makes the engine); returns the saved bookkeeping."""
    policy.load_state_dict(state["policy_state"])
    ctx.pool = ParticlePool.from_dict(state["pool"])
    ctx.records = ParticleRecords.from_dict(state["records"])
    ctx.updates = int(state["updates"])
    ctx.rng.bit_generator.state = state["rng"]
    return Bookkeeping(
        rejects=[Reject(**r) for r in state["rejects"]],
        history=list(state["history"]),
        api_chunks=int(state["api_chunks"]),
        final_done=int(state["final_done"]),
        finished=bool(state["finished"]),
        restarts_done=int(state.get("restarts_done", 0)),
        kept_score=state.get("kept_score"),
    )
