"""The streaming job: watch a folder, classify particles as they arrive, finish at the end.

The loop polls the folder (``FolderWatcher``), ingests the complete new particles, runs the
updates the policy finds due (each committed: checkpoint, outputs, event), and ends when the done
marker exists and nothing is left waiting, or when no new particle was found for
``idle_timeout_s``. Then whatever is still waiting (a stack never complete, a STAR file never
readable) is set aside in rejects.csv with its reason, and the stream finishes (the batch
schedule's final passes). Ctrl-C or SIGTERM stops it after the update under way, committed, without
setting anything aside: started again on the same output folder, it resumes. At every ending,
every particle found is classified, set aside or still waiting (``WatchSummary``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cryoclass.config import Config
from cryoclass.engine.executor import EStepExecutor
from cryoclass.io import Reject
from cryoclass.job_options import JOB
from cryoclass.jobs.execution import executor_for
from cryoclass.jobs.stopping import StopSignals
from cryoclass.stream.context import UpdateReport
from cryoclass.stream.stream import Stream, StreamResult
from cryoclass.stream.watcher import FolderWatcher, PollResult

log = logging.getLogger("cryoclass.stream")

#: Polls to keep waiting, after the done marker appeared, for stacks still incomplete.
DONE_GRACE_POLLS = 5


@dataclass
class WatchSummary:
    """How a watch ended and where every particle found is.

    reason: 'done', 'idle', 'max_seconds', or 'Ctrl-C' / 'SIGTERM' (stopped: resumable, nothing
    set aside for being late); n_ingested, n_processed (E-stepped at least once), n_rejected
    (particles in rejects.csv), n_updates, seconds; n_found = n_classified (in particles.star) +
    n_rejected + n_waiting (ingested but not processed yet, or found and waiting for their stack);
    n_files_set_aside: whole STAR files set aside (unreadable; their particles are not counted);
    n_files_waiting: STAR files not readable yet (stopped streams); reasons: (reason kind,
    particles) set aside, commonest first; result: the final result."""

    reason: str
    n_ingested: int
    n_processed: int
    n_rejected: int
    n_updates: int
    seconds: float
    result: StreamResult
    n_found: int = 0
    n_classified: int = 0
    n_waiting: int = 0
    n_files_set_aside: int = 0
    n_files_waiting: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        """True when a signal stopped the stream (it resumes when started again)."""
        return self.reason in ("Ctrl-C", "SIGTERM")


Progress = Callable[[Stream, UpdateReport], None]


def watch(
    watch_dir: str | Path,
    config: Config,
    out_dir: str | Path,
    poll_s: float = JOB.poll_s,
    idle_timeout_s: float | None = None,
    done_marker: str = JOB.done_marker,
    pattern: str = JOB.pattern,
    outputs_every_s: float = 0.0,
    max_seconds: float | None = None,
    progress: Progress | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
) -> WatchSummary:
    """Classify the particles written into watch_dir while they arrive; outputs in out_dir.

    poll_s: seconds between polls; idle_timeout_s: end when no new particle was found for this
    long (None: never); done_marker: file name in watch_dir whose existence ends the stream
    ('' : none); pattern: STAR file names to watch (recursive); outputs_every_s: see
    ``Stream``; max_seconds: hard limit on the loop (testing); progress(stream, report) after
    each update; cluster / scheduler: run the E-steps on a Dask cluster ('local:N', 'slurm:N'
    or a scheduler address, see ``cryoclass.distributed``). The watched folder need not exist
    yet. In the main thread, Ctrl-C and SIGTERM stop the stream after the update under way
    (``jobs.stopping``; a second one at once).
    """
    w, o = Path(watch_dir).resolve(), Path(out_dir).resolve()
    if w == o or o in w.parents:
        raise ValueError(
            f"--out {out_dir} is (or holds) the watched folder {watch_dir}: its "
            "outputs would be ignored as input and the input never seen; choose "
            "an output folder outside it"
        )
    if poll_s < 0:
        raise ValueError(f"--poll must be >= 0 seconds, got {poll_s:g}")
    if idle_timeout_s is not None and idle_timeout_s < 0:
        raise ValueError(f"--idle-timeout must be >= 0 seconds, got {idle_timeout_s:g}")
    with executor_for(cluster, scheduler) as estep, StopSignals() as stop:
        return _watch(
            watch_dir,
            config,
            out_dir,
            poll_s,
            idle_timeout_s,
            done_marker,
            pattern,
            outputs_every_s,
            max_seconds,
            progress,
            estep,
            stop,
        )


def _watch(
    watch_dir: str | Path,
    config: Config,
    out_dir: str | Path,
    poll_s: float,
    idle_timeout_s: float | None,
    done_marker: str,
    pattern: str,
    outputs_every_s: float,
    max_seconds: float | None,
    progress: Progress | None,
    estep: EStepExecutor | None,
    stop: StopSignals,
) -> WatchSummary:
    """``watch`` with its E-step executor (None: here) and stop signals."""
    t0 = time.monotonic()
    watch_dir, out_dir = Path(watch_dir), Path(out_dir)
    if not watch_dir.is_dir():
        log.warning("watch folder %s does not exist (yet): waiting for it", watch_dir)
    watcher = FolderWatcher(watch_dir, pattern=pattern, exclude=[out_dir], done_marker=done_marker)
    with Stream(
        config, out_dir, outputs_every_s=outputs_every_s, on_update=progress, estep=estep
    ) as stream:
        if stream.resumed:
            log.info("resuming %s with %d particles", out_dir, stream.n_ingested)
        last_found = time.monotonic()
        done_polls = 0
        reason = ""
        res = PollResult(ready=pd.DataFrame())
        seen_waiting: set[str] = set()
        while not stop.requested:
            is_done = watcher.done  # before polling: everything written before it is visible
            res, found = _poll_and_update(watcher, stream, stop, seen_waiting)
            seen_waiting = set(res.waiting)
            if found:
                last_found = time.monotonic()  # found something new: not idle
            if stop.requested:
                break
            if is_done:
                if not res.waiting and not res.errors:
                    reason = "done"
                    break
                done_polls += 1
                if done_polls > DONE_GRACE_POLLS:
                    reason = "done"
                    break
            if idle_timeout_s is not None and time.monotonic() - last_found > idle_timeout_s:
                reason = "idle"
                break
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                reason = "max_seconds"
                break
            stop.sleep(poll_s)
        if stop.requested:  # resumable: what waits keeps waiting; commit what was ingested
            reason = stop.name
            if stream.uncommitted:
                stream.commit(None)
            result, waiting, files_waiting = stream.result(), len(res.waiting), len(res.errors)
        else:
            if res.waiting and reason != "done":  # a last look: stacks complete since
                res, _ = _poll_and_update(watcher, stream, stop, seen_waiting)
            _set_aside_what_waits(stream, res)
            result, waiting, files_waiting = stream.finish(), 0, 0
        counts = stream.accounting(waiting=waiting)
        return WatchSummary(
            reason=reason,
            n_ingested=stream.n_ingested,
            n_processed=stream.n_processed,
            n_rejected=counts["set_aside"],
            n_updates=stream.n_updates,
            seconds=time.monotonic() - t0,
            result=result,
            n_found=counts["found"],
            n_classified=counts["classified"],
            n_waiting=counts["waiting"],
            n_files_set_aside=counts["files"],
            n_files_waiting=files_waiting,
            reasons=stream.set_aside_reasons(),
        )


def _poll_and_update(
    watcher: FolderWatcher, stream: Stream, stop: StopSignals, seen_waiting: set[str]
) -> tuple[PollResult, bool]:
    """One poll: set aside bad rows, ingest the ready ones, run the updates due (until a stop
    is requested). Returns the poll and whether it found anything new."""
    res = watcher.poll(stream.known)
    n_bad = len(stream.rejects)
    if res.rejected:  # rows with a problem of their own: set aside, the rest goes on
        stream.reject_keys(res.rejected)
    n_new = stream.ingest(res.ready) if len(res.ready) else 0
    found = bool(n_new or set(res.waiting) - seen_waiting or len(stream.rejects) > n_bad)
    updated = False
    while not stop.requested and stream.update(max_updates=1):
        updated = True
    if not updated and (n_new or len(stream.rejects) > n_bad):
        stream.commit(None)  # persist what arrived while the policy waits
    return res, found


def _set_aside_what_waits(stream: Stream, res: PollResult) -> None:
    """At the end of a stream: rows whose stack never became complete, and STAR files never
    readable, go to rejects.csv with the reason (nothing found is dropped silently)."""
    stream.set_aside_rows(res.waiting_rows, res.waiting, prefix="stack never complete: ")
    stream.reject_keys(
        {
            path: Reject(source=path, row=-1, image_name="", reason=f"STAR file unreadable: {why}")
            for path, why in res.errors.items()
        }
    )
