"""A batch job's commits: after every step of the schedule (online-EM iteration or full pass) the
checkpoint (``outputs.checkpoint``: model, ``BatchPoint`` and the step's event), then the step's
line of ``events.jsonl`` (``outputs.events``, the stream's format); a ``finish`` event once the
outputs are written. A job killed between the two is logged exactly once when resumed (the event
is replayed from the checkpoint).

Batch events carry the stream's fields where they mean the same (``update`` is the step, ``steps``
the schedule's total); ``class_counts`` scale the model's class weights to the particles
processed during online EM, and count the assignments after a full pass.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cryoclass.engine.model import ModelState
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.io import ParticleSet
from cryoclass.outputs.checkpoint import Checkpoint, JobCheckpoint
from cryoclass.outputs.events import EVENTS_NAME, EventLog
from cryoclass.schedules.batch import BatchPoint, batch_steps


class BatchCommits:
    """Commits of the batch job checkpointed by ``ckpt`` on ``pset``; ``start``: the checkpoint
    it resumes from (None: a new run, which starts a new event log)."""

    def __init__(self, ckpt: JobCheckpoint, pset: ParticleSet, start: Checkpoint | None) -> None:
        self.ckpt = ckpt
        self.pset = pset
        self.total = batch_steps(ckpt.config)
        self.events = EventLog(Path(ckpt.path).parent / EVENTS_NAME)
        # a new run's log replaces an earlier run's once its first step is committed
        self._fresh = start is None
        self._processed = 0
        if start is not None:
            self.events.open().replay(start.state.get("events", []))
            self._processed = self._n_processed(BatchPoint.from_dict(start.state["point"]))

    def step(self, state: ModelState, point: BatchPoint) -> None:
        """Commit one step: checkpoint, then event (``run_batch``'s ``checkpoint``)."""
        t0 = time.perf_counter()
        entry = point.log[-1]
        n = self._n_processed(point)
        new, self._processed = n - self._processed, n
        if point.final is not None:
            counts = _counts(point.final, state.n_classes)
        else:
            w = state.class_weights.detach().cpu().numpy().astype(np.float64)
            frac = w / w.sum() if w.sum() > 0 else np.zeros_like(w)
            counts = np.rint(frac * n).astype(np.int64)
        event = self._event(entry.phase, point.step, n, len(self.pset), counts)
        event.update(
            {
                "n_new": new,
                "n_revisited": entry.n_particles - new,
                "temperature": round(float(entry.temperature), 4),
                "reseeded": entry.reseeded,
                "merged": entry.merged,
                "divided": entry.divided,
                "class_changes": None if entry.changed is None else round(entry.changed, 4),
                "mean_loglik": round(float(entry.mean_loglik), 4),
                "work_res_A": float(entry.work_res_A),
                "seconds": {"step": round(entry.seconds, 4)},
            }
        )
        self.ckpt.save(
            state, {"point": point.to_dict(), "events": [event]}, finished=point.step >= self.total
        )
        event["seconds"]["checkpoint"] = round(time.perf_counter() - t0, 4)
        if self._fresh:
            self.events.path.unlink(missing_ok=True)
            self._fresh = False
        self.events.append(event)

    def finish(self, particles: ParticleResult, n_classes: int) -> None:
        """The last event: the outputs are written; ``particles``: those in them."""
        n = len(particles)
        self.events.append(self._event("finish", self.total, n, n, _counts(particles, n_classes)))

    def _event(
        self, kind: str, step: int, n_processed: int, n_ingested: int, counts: np.ndarray
    ) -> dict[str, Any]:
        return {
            "seq": self.events.last_seq + 1,
            "time": round(time.time(), 3),
            "event": kind,
            "job": "batch",
            "update": step,
            "steps": self.total,
            "n_ingested": n_ingested,
            "n_new_ingested": n_ingested if step == 1 and kind != "finish" else 0,
            "n_processed": n_processed,
            "n_rejected": len(self.pset.rejects),
            "class_counts": counts.tolist(),
        }

    def _n_processed(self, point: BatchPoint) -> int:
        """Particles processed at least once by ``point``: drawn so far, all after a full pass."""
        return len(self.pset) if point.final is not None else int(np.count_nonzero(point.seen))


def _counts(particles: ParticleResult, n_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(particles.cls, dtype=np.int64), minlength=n_classes)
