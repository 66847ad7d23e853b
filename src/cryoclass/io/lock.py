"""One lock per output folder, whatever the job: batch (``classify``) and ``stream`` alike.

``lock_folder(out, kind)`` takes an exclusive ``flock`` on ``out/.cryoclass.lock`` (the OS
releases it when the process ends, even by kill -9) and writes who holds it (job kind, pid,
start time), so a second job refused the folder can name the first. The file stays after the
job: ``last_job(out)`` is the kind of the job that holds or last held the folder.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from cryoclass.io.errors import InputError, OutputError

LOCK_NAME = ".cryoclass.lock"


class FolderInUse(InputError, RuntimeError):
    """Another cryoclass job holds the output folder (bad input: exit 2)."""


def make_output_folder(out: str | Path) -> Path:
    """Create the output folder (and parents); OutputError if it cannot be (exit 3)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("it is a file, not a folder: choose another --out", file=out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError.from_os_error(err, out) from None
    return out


def lock_folder(out: str | Path, kind: str) -> int:
    """Lock ``out`` (which must exist) for this process as a ``kind`` job; returns the lock's
    file descriptor (close it to release). :class:`FolderInUse` names the holder."""
    path = Path(out) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only folder...: an output that cannot be written (exit 3)
        raise OutputError.from_os_error(err, path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise FolderInUse(
            f"another cryoclass {holder} is writing into this folder; wait for it "
            "to end or choose another --out",
            file=out,
        ) from None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{kind} {os.getpid()} {stamp}\n".encode(), 0)
    except OSError:
        pass  # a full disk must not stop the job here: the lock itself is held
    return fd


def last_job(out: str | Path) -> str | None:
    """The kind ('classify', 'stream') of the job that holds or last held ``out``; None if no
    job wrote its name there."""
    try:
        words = (Path(out) / LOCK_NAME).read_text(errors="replace").split()
    except OSError:
        return None
    return words[0] if words else None


def _holder(fd: int) -> str:
    """'stream (pid 123, since ...)' from the lock file, or 'job' if it says nothing."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        text = []
    if len(text) >= 2:
        kind = "stream" if text[0] == "stream" else f"{text[0]} job"
        since = f", since {' '.join(text[2:])}" if len(text) > 2 else ""
        return f"{kind} (pid {text[1]}{since})"
    return "job"
