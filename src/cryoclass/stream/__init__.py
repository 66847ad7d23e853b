"""Streaming 2D classification: keep class averages up to date while particles are collected.

Public API::

    Stream(config, out_dir)            a resumable streaming job on one output folder
        .add_particles(ParticleSet | images, table)   Python source (commits after each update)
        .ingest(table) / .update() / .finish() / .result()
    FolderWatcher(watch_dir)           new/growing STAR files + complete stacks, polled
    cryoclass.jobs.stream.watch(watch_dir, config, out_dir)   the watch loop (``cryoclass stream``)

A simulated pipeline that writes micrographs into a watched folder at a given rate is
``cryoclass.simulate.feed.feed_simulation``.

Schedules (``config.stream_policy``): "online" (online EM on arrivals, ``online.py``) and "live"
(CryoSPARC Live, corrected: ``live.py``). Both drive the one ``cryoclass.engine.em.Engine``.
"""

from cryoclass.outputs.events import EventLog, read_events
from cryoclass.stream.context import UpdateReport
from cryoclass.stream.stream import Stream, StreamResult
from cryoclass.stream.watcher import DONE_MARKER, FolderWatcher, PollResult

__all__ = [
    "DONE_MARKER",
    "EventLog",
    "FolderWatcher",
    "PollResult",
    "Stream",
    "StreamResult",
    "UpdateReport",
    "read_events",
]
