"""An output folder owned by one batch job at a time, cleaned of what a killed job left, whose
outputs are replaced all together.

``hold(out_dir)`` takes the folder's one job lock (``lock.py``, shared by batch and stream jobs;
the OS releases it when the process ends, even by kill -9) and removes what a killed job left:
temporary files of atomic writes (``.NAME.tmp-XXXXXXXXXXXX.EXT``, see ``cryoclass.io.atomic``)
and staging folders. Finished outputs are never touched.

``publish(out_dir, write)`` has ``write`` put every output into a staging folder inside
``out_dir``, then moves them into place (renames: they need no disk space). If writing fails
(a full disk) the previous outputs are all left as they were, not a mix of old and new.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryoclass.io import OutputError
from cryoclass.io.atomic import remove_temporaries
from cryoclass.io.lock import LOCK_NAME, lock_folder, make_output_folder

__all__ = ["LOCK_NAME", "hold", "publish", "remove_stale_temporaries"]
STAGING_PREFIX = ".staging-"


@contextmanager
def hold(out_dir: str | Path) -> Iterator[Path]:
    """Create ``out_dir`` if needed, lock it for this process and clean stale temporaries."""
    out = make_output_folder(out_dir)
    fd = lock_folder(out, "classify")
    try:
        remove_stale_temporaries(out)
        yield out
    finally:
        os.close(fd)


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete temp files of interrupted atomic writes in ``out``; returns those removed."""
    gone = remove_temporaries(out)
    for p in out.glob(STAGING_PREFIX + "*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def publish(out_dir: str | Path, write: Callable[[Path], dict[str, Path]]) -> dict[str, Path]:
    """Call ``write(staging_dir) -> {name: path}``, then move every file into ``out_dir``.

    Returns ``{name: out_dir / file name}``. On any error the staging folder is removed and
    the outputs in ``out_dir`` are as before; an :class:`OSError` comes out as
    :class:`OutputError`.
    """
    out = Path(out_dir)
    staging = out / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
    try:
        staging.mkdir()
        written = write(staging)
        final = {}
        for name, path in written.items():
            target = out / Path(path).name
            os.replace(path, target)
            final[name] = target
        _fsync_dir(out)
        return final
    except OSError as err:
        if isinstance(err, OutputError):
            raise
        raise OutputError.from_os_error(err, getattr(err, "filename", None) or out) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
