"""Atomic file writes: write a temp file in the target folder, fsync, then ``os.replace``.

Readers never see a half-written file: either the old file or the complete new one. A process
killed mid-write leaves its temp file (``.NAME.tmp-XXXXXXXXXXXX.EXT``); the next job on the folder
removes it (``remove_temporaries``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import IO, Any

from .errors import InputError, OutputError

#: Temporary files of atomic writes (and of ``ModelState.save`` in earlier versions).
TEMP_PATTERNS = (".*.tmp-*", "*.pt*.tmp")


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left in ``folder`` (call it only
    while holding the folder: ``io.lock``); returns those removed."""
    gone = []
    for pattern in TEMP_PATTERNS:
        for p in folder.glob(pattern):
            try:
                p.unlink()
                gone.append(p)
            except OSError:
                pass
    return gone


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform / file system
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    Use this for libraries that insist on opening the file themselves (mrcfile).
    The temp file keeps the suffix of ``path`` and lives in the same folder, so the
    final ``os.replace`` is atomic. On an exception the temp file is removed and
    ``path`` is left untouched; an :class:`OSError` (disk full, quota, permissions)
    comes out as :class:`OutputError` naming ``path``.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write: folder {folder} does not exist", file=target)
    tmp = folder / f".{target.stem}.tmp-{secrets.token_hex(6)}{target.suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise InputError("writer produced no output", file=target)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise OutputError.from_os_error(err, target) from err
        raise


@contextmanager
def atomic_write(
    path: str | PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` for writing; on success replace ``path`` with it.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"`` (binary). The file is flushed
    and fsync'ed before the ``os.replace``; on an exception nothing is replaced.

    >>> with atomic_write("out.csv") as fh:
    ...     fh.write("a,b\\n")
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        try:
            if mode == "wb":
                fh: IO[Any] = open(tmp, "wb")
            else:
                fh = open(tmp, "w", encoding=encoding, newline=newline)
        except OSError as err:
            raise OutputError.from_os_error(err, path) from None
        with fh:
            yield fh
            fh.flush()
