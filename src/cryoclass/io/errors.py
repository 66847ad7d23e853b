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


def _format(problem: str, file: str | None, row: int | None) -> str:
    where = file or ""
    if row is not None:
        where = f"{where}, row {row} (0-based data row)" if where else f"row {row} (0-based data row)"
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
