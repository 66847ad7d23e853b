"""An output folder owned by one batch job at a time, cleaned of what a killed job left.

``hold(out_dir)`` takes an exclusive lock (``.classify.lock``; the OS releases it when the process
ends, even by kill -9) and removes the temporary files of atomic writes that a killed job left
(``.NAME.tmp-XXXXXXXXXXXX.EXT``, see ``cryoclass.io.atomic``); finished outputs are never touched.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryoclass.io import InputError

LOCK_NAME = ".classify.lock"
#: Temporary files of cryoclass.io.atomic (and of ModelState.save) in an output folder.
TEMP_PATTERNS = (".*.tmp-*", "*.pt*.tmp")


@contextmanager
def hold(out_dir: str | Path) -> Iterator[Path]:
    """Create ``out_dir`` if needed, lock it for this process and clean stale temporaries."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise InputError(f"cannot use as output folder ({err.strerror or err})", file=out) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another cryoclass classify job is writing into this folder",
                             file=out) from None
        remove_stale_temporaries(out)
        yield out
    finally:
        os.close(fd)


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete temp files of interrupted atomic writes in ``out``; returns those removed."""
    gone = []
    for pattern in TEMP_PATTERNS:
        for p in out.glob(pattern):
            try:
                p.unlink()
                gone.append(p)
            except OSError:
                pass
    return gone
