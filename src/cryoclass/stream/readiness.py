"""When may a particle stack be read? Only when it is complete.

A stack written by another program may still be growing. It is taken as complete when, at two
consecutive polls, its (size, mtime, inode) are identical AND its MRC header is readable and the
file holds every image the header declares (``cryoclass.io.stacks.stack_info`` refuses truncated
files). A half-written stack is therefore never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryoclass.io import InputError
from cryoclass.io.stacks import StackInfo, stack_info

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
