"""Rejected particles as a CSV file: ``source,row,image_name,reason``."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from .atomic import atomic_write
from .errors import InputError
from .particles import Reject

FIELDS = ("source", "row", "image_name", "reason")


def write_rejects(path: str | PathLike[str], rejects: Iterable[Reject]) -> None:
    """Write rejects as CSV (header ``source,row,image_name,reason``; row is 0-based). Atomic."""
    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for r in rejects:
            writer.writerow([r.source, int(r.row), r.image_name, r.reason])


def read_rejects(path: str | PathLike[str]) -> list[Reject]:
    """Read a CSV written by :func:`write_rejects`."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or tuple(reader.fieldnames) != FIELDS:
                raise InputError(f"expected CSV header {','.join(FIELDS)}, got {reader.fieldnames}", file=p)
            out: list[Reject] = []
            for i, rec in enumerate(reader):
                try:
                    row = int(rec["row"])
                except (TypeError, ValueError):
                    raise InputError(
                        f"row column is not an integer ({rec['row']!r})", file=p, row=i
                    ) from None
                out.append(
                    Reject(source=rec["source"], row=row, image_name=rec["image_name"], reason=rec["reason"])
                )
            return out
    except FileNotFoundError:
        raise InputError("file not found", file=p) from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read rejects CSV ({err})", file=p) from None
