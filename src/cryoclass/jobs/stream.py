"""The streaming job: watch a folder, classify particles as they arrive, finish at the end.

The loop polls the folder (``FolderWatcher``), ingests the complete new particles, runs the
updates the policy finds due (each committed: checkpoint, outputs, event), and ends when the done
marker exists and nothing is left waiting, or when no new particle arrived for ``idle_timeout_s``.
Then it finishes the stream (the batch schedule's final passes). Started again on the same output
folder, it resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryoclass.config import Config
from cryoclass.engine.executor import EStepExecutor
from cryoclass.jobs.execution import executor_for
from cryoclass.stream.context import UpdateReport
from cryoclass.stream.stream import Stream, StreamResult
from cryoclass.stream.watcher import DONE_MARKER, FolderWatcher

log = logging.getLogger("cryoclass.stream")

#: Polls to keep waiting, after the done marker appeared, for stacks still incomplete.
DONE_GRACE_POLLS = 5


@dataclass
class WatchSummary:
    """How a watch ended: reason ('done', 'idle', 'max_seconds'), particles ingested, processed
    and rejected, updates, wall seconds, and the final result."""

    reason: str
    n_ingested: int
    n_processed: int
    n_rejected: int
    n_updates: int
    seconds: float
    result: StreamResult


Progress = Callable[[Stream, UpdateReport], None]


def watch(watch_dir: str | Path, config: Config, out_dir: str | Path, poll_s: float = 5.0,
          idle_timeout_s: float | None = None, done_marker: str = DONE_MARKER,
          pattern: str = "*.star", outputs_every_s: float = 0.0,
          max_seconds: float | None = None, progress: Progress | None = None,
          cluster: str | None = None, scheduler: str | None = None) -> WatchSummary:
    """Classify the particles written into watch_dir while they arrive; outputs in out_dir.

    poll_s: seconds between polls; idle_timeout_s: end when no new particle arrived for this
    long (None: never); done_marker: file name in watch_dir whose existence ends the stream
    ('' : none); pattern: STAR file names to watch (recursive); outputs_every_s: see
    ``Stream``; max_seconds: hard limit on the loop (testing); progress(stream, report) after
    each update; cluster / scheduler: run the E-steps on a Dask cluster ('local:N', 'slurm:N'
    or a scheduler address, see ``cryoclass.distributed``). The watched folder need not exist
    yet.
    """
    with executor_for(cluster, scheduler) as estep:
        return _watch(watch_dir, config, out_dir, poll_s, idle_timeout_s, done_marker, pattern,
                      outputs_every_s, max_seconds, progress, estep)


def _watch(watch_dir: str | Path, config: Config, out_dir: str | Path, poll_s: float,
           idle_timeout_s: float | None, done_marker: str, pattern: str,
           outputs_every_s: float, max_seconds: float | None, progress: Progress | None,
           estep: EStepExecutor | None) -> WatchSummary:
    """``watch`` with its E-step executor (None: here)."""
    t0 = time.monotonic()
    watch_dir, out_dir = Path(watch_dir), Path(out_dir)
    if not watch_dir.is_dir():
        log.warning("watch folder %s does not exist (yet): waiting for it", watch_dir)
    watcher = FolderWatcher(watch_dir, pattern=pattern, exclude=[out_dir],
                            done_marker=done_marker)
    with Stream(config, out_dir, outputs_every_s=outputs_every_s, on_update=progress,
                estep=estep) as stream:
        if stream.resumed:
            log.info("resuming %s with %d particles", out_dir, stream.n_ingested)
        last_new = time.monotonic()
        done_polls = 0
        reason = ""
        while True:
            is_done = watcher.done  # before polling: everything written before it is visible
            res = watcher.poll(stream.known)
            if res.rejected:  # rows with a problem of their own: set aside, the rest goes on
                stream.reject_keys(res.rejected)
            n_new = stream.ingest(res.ready) if len(res.ready) else 0
            if n_new:
                last_new = time.monotonic()
            reports = stream.update()
            if n_new and not reports:
                stream.commit(None)  # persist what arrived while the policy waits
            if is_done:
                if not res.waiting and not res.errors:
                    reason = "done"
                    break
                done_polls += 1
                if done_polls > DONE_GRACE_POLLS:
                    left = {k: f"stack never complete: {why}" for k, why in res.waiting.items()}
                    left.update({k: f"STAR file unreadable: {why}"
                                 for k, why in res.errors.items()})
                    stream.reject_keys(left, source=str(watch_dir))
                    reason = "done"
                    break
            if idle_timeout_s is not None and time.monotonic() - last_new > idle_timeout_s:
                reason = "idle"
                break
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                reason = "max_seconds"
                break
            time.sleep(poll_s)
        result = stream.finish()
        return WatchSummary(reason=reason, n_ingested=stream.n_ingested,
                            n_processed=stream.n_processed, n_rejected=len(stream.rejects),
                            n_updates=stream.n_updates, seconds=time.monotonic() - t0,
                            result=result)
