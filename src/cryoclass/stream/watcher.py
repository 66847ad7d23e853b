"""Watch a folder for particles written by a preprocessing pipeline.

Sources: RELION STAR files (any ``*.star`` under the folder; one per micrograph, or one that
grows). Image names ``index@path`` are resolved against the watched folder first, then the STAR's
own folder. Each poll:

1. every STAR whose (size, mtime, inode) changed is re-read, up to its last complete line (a row
   being appended is left for the next poll); rows already in the ledger are skipped, so a growing
   STAR is ingested row by row, each row once;
2. rows whose stack is complete are returned; the others wait for a later poll.

When may a stack be read? Only when it is complete (``StackReadiness``). A stack written by
another program may still be growing. It is taken as complete when, at two consecutive polls, its
(size, mtime, inode) are identical AND its MRC header is readable and the file holds every image
the header declares (``cryoclass.io.stacks.stack_info`` refuses truncated files). A half-written
stack is therefore never read.

Hidden files (temporary files of atomic writers), the stream's own output folder and the done
marker are ignored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cryoclass.io import InputError, Reject, read_star
from cryoclass.io.canonical import canonicalize
from cryoclass.io.columns import STACK_INDEX, STACK_PATH
from cryoclass.io.problems import RowProblems
from cryoclass.io.stacks import StackInfo, stack_info
from cryoclass.job_options import JOB
from cryoclass.stream.pool import ARRIVAL, KEY, SOURCE_FILE, particle_keys

log = logging.getLogger("cryoclass.stream")

#: The file whose existence ends a stream (``JobOptions.done_marker``).
DONE_MARKER = JOB.done_marker
#: (size bytes, mtime ns, inode) of a file.
Stamp = tuple[int, int, int]


@dataclass
class StackStatus:
    """ready: complete and stable; info: its header (when ready); reason: why not (else '')."""

    ready: bool
    info: StackInfo | None = None
    reason: str = ""


def file_stamp(path: str | os.PathLike[str]) -> Stamp | None:
    """(size bytes, mtime ns, inode) of a regular file, or None if it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class StackReadiness:
    """Remembers each stack's stamp between polls; call :meth:`poll` once per poll."""

    def __init__(self) -> None:
        self._last: dict[str, Stamp | None] = {}

    def poll(self, paths: list[str]) -> dict[str, StackStatus]:
        """Status of each stack path at this poll (see module docstring)."""
        out = {}
        for p in paths:
            stamp = file_stamp(p)
            prev = self._last.get(p, None)
            self._last[p] = stamp
            if stamp is None:
                out[p] = StackStatus(False, reason="stack not found (yet)")
            elif prev != stamp:
                out[p] = StackStatus(False, reason="stack changed since the last poll")
            else:
                try:
                    out[p] = StackStatus(True, info=stack_info(p))
                except InputError as err:
                    out[p] = StackStatus(False, reason=err.problem)
        return out

    def forget(self, paths: list[str]) -> None:
        """Drop stacks no longer waited for (bounded memory)."""
        for p in paths:
            self._last.pop(p, None)


@dataclass
class _StarState:
    stamp: Stamp | None = None
    table: pd.DataFrame | None = None  # canonical rows not yet ingested (None: all ingested)
    error: str = ""


@dataclass
class PollResult:
    """ready: canonical rows ready to ingest (with ``_stream_key`` and ``_arrival_s``, the
    latest mtime of the row's STAR and stack, Unix s); waiting: rows seen whose stack is not
    complete yet, with the reason per key (``waiting_rows``: those rows, with their STAR file
    and row); errors: STAR files that could not be read (path -> message); rejected: rows that
    can never be used (a bad image name, a CTF value that is not a number or is absurd), key
    ``STAR path#row`` -> Reject (file, 0-based row, reason)."""

    ready: pd.DataFrame
    waiting: dict[str, str] = field(default_factory=dict)
    waiting_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    errors: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, Reject] = field(default_factory=dict)


class FolderWatcher:
    """Polls ``watch_dir`` for new particles (see module docstring)."""

    def __init__(
        self,
        watch_dir: str | Path,
        pattern: str = JOB.pattern,
        exclude: list[str | Path] | None = None,
        done_marker: str = DONE_MARKER,
    ) -> None:
        self.root = Path(watch_dir).resolve()
        self.pattern = pattern
        self.exclude = [Path(e).resolve() for e in (exclude or [])]
        self.done_marker = done_marker
        self._stars: dict[str, _StarState] = {}
        self._stacks = StackReadiness()

    @property
    def done(self) -> bool:
        """True once the done marker file exists in the watched folder."""
        return bool(self.done_marker) and (self.root / self.done_marker).exists()

    def star_files(self) -> list[Path]:
        """STAR files under the folder (recursive), oldest first; hidden and excluded skipped."""
        out = []
        if not self.root.is_dir():
            return out
        for p in self.root.rglob(self.pattern):
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if any(p.resolve().is_relative_to(e) for e in self.exclude):
                continue
            if p.name == self.done_marker or not p.is_file():
                continue
            out.append(p)
        stamps = {p: file_stamp(p) for p in out}
        return sorted((p for p in out if stamps[p]), key=lambda p: (stamps[p][1], str(p)))

    def poll(self, known: Callable[[np.ndarray], np.ndarray]) -> PollResult:
        """One poll. ``known(keys) -> bool array``: keys already in the ledger."""
        errors: dict[str, str] = {}
        rejected: dict[str, Reject] = {}
        pending: list[pd.DataFrame] = []
        for path in self.star_files():
            key = str(path)
            st = self._stars.setdefault(key, _StarState())
            stamp = file_stamp(path)
            if stamp != st.stamp or (st.table is not None and _missing_stacks(st.table)):
                try:
                    bad: list[Reject] = []
                    st.table = read_complete_rows(path, self.root, rejected=bad)
                    rejected.update({f"{path}#{r.row}": r for r in bad})
                    st.error = ""
                except InputError as err:
                    st.table, msg = None, str(err)
                    if msg != st.error:
                        log.warning("cannot read %s yet: %s", path, msg)
                    st.error = msg
                    errors[key] = msg
                    stamp = None  # retry at the next poll
                st.stamp = stamp
            if st.table is None:
                continue
            fresh = ~known(particle_keys(st.table))
            st.table = st.table.loc[fresh].reset_index(drop=True) if fresh.any() else None
            if st.table is not None:
                t = st.table.copy()
                t[ARRIVAL] = stamp_seconds(stamp) if stamp else 0.0
                pending.append(t)
        if not pending:
            return PollResult(ready=pd.DataFrame(), errors=errors, rejected=rejected)
        rows = pd.concat(pending, ignore_index=True)
        rows[KEY] = particle_keys(rows)
        status = self._stacks.poll(list(pd.unique(rows[STACK_PATH])))
        ok = np.zeros(len(rows), dtype=bool)
        waiting: dict[str, str] = {}
        for i, (path, index, key) in enumerate(zip(rows[STACK_PATH], rows[STACK_INDEX], rows[KEY])):
            s = status[path]
            if s.ready and index < s.info.n:
                ok[i] = True
            else:
                waiting[key] = s.reason or (
                    f"image index {index} (0-based) beyond the {s.info.n} images of the stack"
                )
        ready = rows.loc[ok].reset_index(drop=True)
        if len(ready):
            stack_mtime = {p: stamp_seconds(file_stamp(p)) for p in pd.unique(ready[STACK_PATH])}
            ready[ARRIVAL] = np.maximum(
                ready[ARRIVAL].to_numpy(), ready[STACK_PATH].map(stack_mtime).to_numpy()
            )
            ready["rlnImageSize"] = (
                ready[STACK_PATH]
                .map({p: s.info.box for p, s in status.items() if s.ready})
                .astype(np.int64)
            )
        still = set(rows.loc[~ok, STACK_PATH])
        self._stacks.forget([p for p, s in status.items() if s.ready and p not in still])
        return PollResult(
            ready=ready,
            waiting=waiting,
            errors=errors,
            rejected=rejected,
            waiting_rows=rows.loc[~ok].reset_index(drop=True),
        )


def stamp_seconds(stamp: Stamp | None) -> float:
    """The mtime of a stamp in Unix seconds (0 if None)."""
    return stamp[1] / 1e9 if stamp else 0.0


def _missing_stacks(table: pd.DataFrame) -> bool:
    """True if some row's stack path does not exist (it may have been resolved against the wrong
    folder because the stack was not written yet)."""
    return any(not os.path.exists(p) for p in pd.unique(table[STACK_PATH]))


def read_complete_rows(
    path: Path, project_dir: Path, rejected: list[Reject] | None = None
) -> pd.DataFrame:
    """Canonical rows of a STAR file that may be being appended to: only text up to the last
    newline is parsed. Image paths are resolved against project_dir, then the STAR's folder.
    Stacks are not opened. Raises InputError if the complete part cannot be parsed. With
    ``rejected``, rows with a problem of their own (bad image name, CTF value not a number or
    absurd) are left out and appended there instead of failing the whole file."""
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    if not data.strip():
        raise InputError("empty (being written?)", file=path)
    fd, tmp = tempfile.mkstemp(suffix=".star", prefix=".cryoclass-watch-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        content = read_star(tmp)
    except InputError as err:
        raise InputError(err.problem, file=path) from None
    finally:
        os.unlink(tmp)
    problems = (
        RowProblems(path, len(content.particles), collect=True) if rejected is not None else None
    )
    table = canonicalize(
        path,
        content.particles,
        bases=[project_dir, path.resolve().parent, Path.cwd()],
        relion30=content.relion30,
        check_images=False,
        problems=problems,
        check_values=rejected is not None,
    )
    if problems is not None:
        names = content.particles.get("rlnImageName")
        rejected += [
            Reject(
                source=str(path),
                row=int(r),
                image_name=str(names.iloc[r]) if names is not None else "",
                reason=problems.reasons[int(r)],
            )
            for r in problems.bad
        ]
    table[SOURCE_FILE] = str(path)
    return table
