"""``events.jsonl``, a job's progress record, batch and stream alike (what the dashboard reads):
one JSON object per line, appended and fsync'ed, numbered by ``seq``.

A process killed mid-append leaves at most one partial last line; :meth:`EventLog.open` cuts it
off. Events that describe a committed update are stored in the checkpoint too, and
:meth:`EventLog.replay` appends any the log lacks, so after a crash every committed update is
logged exactly once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryoclass.io import OutputError

EVENTS_NAME = "events.jsonl"


class EventLog:
    """Append-only JSON-lines event log at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.last_seq = -1

    def open(self) -> "EventLog":
        """Drop a partial trailing line (from a kill mid-write) and read the last ``seq``."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
            data = data[:cut]
        for line in reversed(data.splitlines()):
            try:
                self.last_seq = int(json.loads(line)["seq"])
                break
            except (ValueError, KeyError, TypeError):
                continue
        return self

    def append(self, event: dict[str, Any]) -> None:
        """Append one event (it must carry an int ``seq`` larger than the last one)."""
        line = json.dumps(event, default=_jsonable, separators=(",", ":")) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:  # disk full ...: an OutputError naming the file
            raise OutputError.from_os_error(err, self.path) from None
        self.last_seq = int(event["seq"])

    def replay(self, events: list[dict[str, Any]]) -> int:
        """Append the events (ordered by seq) newer than the log's last; returns how many."""
        n = 0
        for e in events:
            if int(e["seq"]) > self.last_seq:
                self.append(e)
                n += 1
        return n


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events of a log (a partial last line is ignored)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)
