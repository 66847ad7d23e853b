"""The one exception type that the io layer shows to users."""

from __future__ import annotations

from os import PathLike
from typing import Any


class InputError(ValueError):
    """Bad input: a file that is missing, malformed or inconsistent.

    The message always names the file, the 0-based data row where one applies
    (the first particle row of a STAR/.cs file is row 0), and the problem, e.g.
    ``particles.star, row 17 (0-based data row): image index 205 (1-based) out of
    range, stack Movies/mic_0001.mrcs holds 200 images``.

    ``InputError("message")`` also works (a plain message), so the exception can be
    re-raised from worker processes and pickled.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | PathLike[str] | None = None,
        row: int | None = None,
    ) -> None:
        self.problem = problem
        self.file = None if file is None else str(file)
        self.row = None if row is None else int(row)
        super().__init__(_format(self.problem, self.file, self.row))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.problem, self.file, self.row))


class OutputError(OSError):
    """An output file could not be written (disk full, quota, permissions, I/O error).

    The message names the file and the system's reason, e.g. ``job1/particles.star: cannot
    write (No space left on device, errno 28); the previous version of the file is intact``.
    Outputs are written atomically, so the file on disk is still the complete previous version
    (or absent). ``errno`` is the original error number.
    """

    def __init__(
        self, reason: str, *, file: str | PathLike[str], errno_: int | None = None
    ) -> None:
        self.reason = reason
        self.file = str(file)
        super().__init__(errno_, reason, self.file)

    def __str__(self) -> str:
        code = f", errno {self.errno}" if self.errno else ""
        return (
            f"{self.file}: cannot write ({self.reason}{code}); the previous version of the file, "
            "if any, is intact"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_output, (self.reason, self.file, self.errno))

    @classmethod
    def from_os_error(cls, err: OSError, file: str | PathLike[str]) -> "OutputError":
        """The OSError ``err`` met while writing ``file``, as an OutputError."""
        return cls(err.strerror or str(err), file=file, errno_=err.errno)


def _rebuild_output(reason: str, file: str, errno_: int | None) -> OutputError:
    return OutputError(reason, file=file, errno_=errno_)


def _format(problem: str, file: str | None, row: int | None) -> str:
    where = file or ""
    if row is not None:
        where = (
            f"{where}, row {row} (0-based data row)" if where else f"row {row} (0-based data row)"
        )
    return f"{where}: {problem}" if where else problem


def _rebuild(cls: type[InputError], problem: str, file: str | None, row: int | None) -> InputError:
    return cls(problem, file=file, row=row)


def show_value(value: Any) -> str:
    """A table value for an error message: strings quoted, numbers plain (``3``, ``nan``)."""
    if isinstance(value, str):
        return repr(value)
    if hasattr(value, "item"):
        value = value.item()  # numpy scalar -> Python scalar
    return repr(value) if isinstance(value, str) else str(value)
