"""Rejected particles as a CSV file: ``source,row,image_name,reason,time``."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from .atomic import atomic_write
from .errors import InputError
from .particles import Reject

FIELDS = ("source", "row", "image_name", "reason", "time")
#: The header of files written before the time column was added (still read).
OLD_FIELDS = FIELDS[:4]


def now_utc() -> str:
    """The current time as written in rejects.csv (UTC, ISO 8601, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def reason_kind(reason: str) -> str:
    """A reason without its particulars (numbers, file names), for counting by reason."""
    head = re.sub(r"\s*\([^()]*\)", "", reason).split(":")[0]
    head = re.sub(r"\b(of|in) stack \S+", "", head)
    head = re.sub(r"[-+]?\d[\d.eE+-]*(\s*(Å|px|kV|mm)\b)?", "", head)
    return " ".join(head.split()) or "unknown"


def count_reasons(rejects: Iterable[Reject]) -> list[tuple[str, int]]:
    """(reason kind, how many) of rejects, commonest first."""
    from collections import Counter

    return Counter(reason_kind(r.reason) for r in rejects).most_common()


def write_rejects(path: str | PathLike[str], rejects: Iterable[Reject]) -> None:
    """Write rejects as CSV (header ``source,row,image_name,reason,time``; row is 0-based, -1 for
    a whole file; time UTC). Atomic."""
    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for r in rejects:
            writer.writerow([r.source, int(r.row), r.image_name, r.reason, r.time])


def read_rejects(path: str | PathLike[str]) -> list[Reject]:
    """Read a CSV written by :func:`write_rejects`."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or tuple(reader.fieldnames) not in (FIELDS, OLD_FIELDS):
                raise InputError(
                    f"expected CSV header {','.join(FIELDS)}, got {reader.fieldnames}", file=p
                )
            out: list[Reject] = []
            for i, rec in enumerate(reader):
                try:
                    row = int(rec["row"])
                except (TypeError, ValueError):
                    raise InputError(
                        f"row column is not an integer ({rec['row']!r})", file=p, row=i
                    ) from None
                out.append(
                    Reject(
                        source=rec["source"],
                        row=row,
                        image_name=rec["image_name"],
                        reason=rec["reason"],
                        time=rec.get("time") or "",
                    )
                )
            return out
    except FileNotFoundError:
        raise InputError("file not found", file=p) from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read rejects CSV ({err})", file=p) from None
