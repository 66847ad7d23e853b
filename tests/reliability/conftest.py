"""Fixtures of the reliability tests (helpers in projects.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cryoclass.io import clear_stack_cache

from .projects import Project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """40 particles in two stacks of 20 (box 16 px at 2 Å), one optics group."""
    p = Project(tmp_path / "proj")
    p.add_stack("mic_a.mrcs", 20, seed=1)
    p.add_stack("mic_b.mrcs", 20, seed=2)
    return p


@pytest.fixture(autouse=True)
def _fresh_stack_cache() -> Iterator[None]:
    clear_stack_cache()
    yield
    clear_stack_cache()
