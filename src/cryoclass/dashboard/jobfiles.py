"""The files of a job's output folder that the dashboard reads or serves, and their stamps.

Only these names are ever served (no path from a request reaches the file system).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryoclass.outputs.checkpoint import CHECKPOINT_NAME
from cryoclass.outputs.selection import SELECTED_CS, SELECTED_STAR

#: Files whose change means the page should refresh.
WATCHED = (
    "classes.mrcs",
    "particles.star",
    "particles.cs",
    "model.star",
    "rejects.csv",
    "config.json",
    "events.jsonl",
    CHECKPOINT_NAME,
)
#: Files a user may download from the page.
DOWNLOADS = (
    "classes.mrcs",
    "particles.star",
    "particles.cs",
    "model.star",
    "gallery.png",
    "rejects.csv",
    "config.json",
    "events.jsonl",
    SELECTED_STAR,
    SELECTED_CS,
)

Stamp = tuple[int, int, int]


def stamp(path: Path) -> Stamp | None:
    """(mtime ns, size, inode) of a file, None if it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def version(job: Path, extra: str = "") -> str:
    """Short hash of the stamps of the watched files (and ``extra``)."""
    h = hashlib.blake2s(digest_size=8)
    for name in WATCHED:
        h.update(f"{name}={stamp(job / name)};".encode())
    h.update(extra.encode())
    return h.hexdigest()


def outputs_settled(job: Path) -> bool:
    """True when classes.mrcs, particles.star and model.star were written in this order by one
    ``write_results`` (not while a rewrite is under way: classes.mrcs goes first)."""
    s = [stamp(job / n) for n in ("classes.mrcs", "particles.star", "model.star")]
    if any(x is None for x in s):
        return False
    return s[0][0] <= s[1][0] <= s[2][0]


def download_path(job: Path, name: str) -> Path | None:
    """The file ``name`` of the job if it is one of DOWNLOADS and exists inside it, else None."""
    if name not in DOWNLOADS:
        return None
    p = (job / name).resolve()
    root = job.resolve()
    if p.parent != root or not p.is_file():
        return None
    return p
