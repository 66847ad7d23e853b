"""Rejects CSV: round trip and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoclass.io import InputError, Reject, write_rejects
from cryoclass.io.rejects import read_rejects


def test_rejects_round_trip(tmp_path: Path) -> None:
    rejects = [
        Reject(
            "data/particles.star",
            3,
            "000004@Extract/a b.mrcs",
            "image 3 (0-based) of stack x has NaN/Inf pixels",
        ),
        Reject("p.cs", 0, "000001@s.mrcs", 'constant, "quoted", comma', "2026-12-04T23:59:00Z"),
    ]
    path = tmp_path / "rejects.csv"
    write_rejects(path, rejects)
    assert path.read_text().splitlines()[0] == "source,row,image_name,reason,time"
    assert read_rejects(path) == rejects
    write_rejects(path, [])
    assert read_rejects(path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.csv"]
    path.write_text("source,row,image_name,reason\nx.star,1,1@s.mrcs,why\n")  # older files
    assert read_rejects(path) == [Reject("x.star", 1, "1@s.mrcs", "why")]


def test_bad_rejects_file(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="expected CSV header") as exc:
        read_rejects(path)
    assert str(path) in str(exc.value)
    path.write_text("source,row,image_name,reason\nx.star,one,1@s.mrcs,why\n")
    with pytest.raises(InputError, match=r"row 0 .*not an integer"):
        read_rejects(path)
    with pytest.raises(InputError, match="file not found"):
        read_rejects(tmp_path / "missing.csv")
