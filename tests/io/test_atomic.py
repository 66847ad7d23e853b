"""atomic_write / atomic_path: all-or-nothing replacement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cryoclass.io import InputError, atomic_path, atomic_write


def test_atomic_write_text_and_binary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with atomic_write(path) as fh:
        fh.write("hello\n")
        assert not path.exists()  # nothing visible until the block ends
    assert path.read_text() == "hello\n"
    with atomic_write(path, "wb") as fh:
        fh.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as fh:
            fh.write("new")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_suffix_and_needs_output(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x.mrcs") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mrcs"
        tmp.write_bytes(b"data")
    assert (tmp_path / "x.mrcs").read_bytes() == b"data"
    with pytest.raises(InputError, match="no output"):
        with atomic_path(tmp_path / "y.bin"):
            pass
    with pytest.raises(InputError, match="does not exist"):
        with atomic_write(tmp_path / "nope" / "z.txt") as fh:
            fh.write("x")
