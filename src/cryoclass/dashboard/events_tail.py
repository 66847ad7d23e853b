"""Incremental reader of a streaming job's ``events.jsonl`` (append-only: only new bytes read)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class EventTail:
    """The complete events of ``path`` so far; :meth:`refresh` reads what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._inode: int | None = None

    def refresh(self) -> list[dict[str, Any]]:
        """Read new complete lines; start over if the file was replaced or cut."""
        try:
            st = os.stat(self.path)
        except OSError:
            self.events, self._offset, self._inode = [], 0, None
            return self.events
        if st.st_ino != self._inode or st.st_size < self._offset:
            self.events, self._offset, self._inode = [], 0, st.st_ino
        if st.st_size == self._offset:
            return self.events
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read(st.st_size - self._offset)
        end = data.rfind(b"\n") + 1  # a line being appended waits for the next refresh
        for line in data[:end].splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict):
                self.events.append(e)
        self._offset += end
        return self.events
