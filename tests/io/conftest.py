"""Shared fixtures for the io tests: the real data folder and small STAR/stack builders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from cryoclass.io import clear_stack_cache, write_stack

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real cryo-EM test data (/work/shared/data), used in place, never copied."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"../shared/data not found at {DATA_DIR}; real-data tests skipped")
    return DATA_DIR


@pytest.fixture(autouse=True)
def _fresh_stack_cache() -> Iterator[None]:
    clear_stack_cache()
    yield
    clear_stack_cache()


def _star_text(
    names: Sequence[str],
    *,
    optics: bool = True,
    drop: Sequence[str] = (),
    box: int = 32,
    pixel_size: float = 1.5,
    defocus: Sequence[str] | None = None,
) -> str:
    n = len(names)
    particles = {
        "rlnImageName": list(names),
        "rlnDefocusU": list(defocus)
        if defocus is not None
        else [f"{15000 + 100 * i:.1f}" for i in range(n)],
        "rlnDefocusV": [f"{14500 + 100 * i:.1f}" for i in range(n)],
        "rlnDefocusAngle": [f"{10.0 + i:.2f}" for i in range(n)],
        "rlnAnglePsi": [f"{5.0 * i:.1f}" for i in range(n)],
    }
    optics_cols = {
        "rlnOpticsGroup": "1",
        "rlnOpticsGroupName": "opticsGroup1",
        "rlnVoltage": "300.0",
        "rlnSphericalAberration": "2.7",
        "rlnAmplitudeContrast": "0.1",
        "rlnImagePixelSize": f"{pixel_size}",
        "rlnImageSize": f"{box}",
        "rlnImageDimensionality": "2",
    }
    lines: list[str] = []
    if optics:
        cols = [c for c in optics_cols if c not in drop]
        lines += ["# version 30001", "", "data_optics", "", "loop_"]
        lines += [f"_{c} #{i + 1}" for i, c in enumerate(cols)]
        lines += [
            " ".join(optics_cols[c] for c in cols),
            "",
            "",
            "# version 30001",
            "",
            "data_particles",
            "",
            "loop_",
        ]
        particles["rlnOpticsGroup"] = ["1"] * n
    else:
        lines += ["data_", "", "loop_"]
        for c in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
            particles[c] = [optics_cols[c]] * n
        particles["rlnDetectorPixelSize"] = ["5.0"] * n
        particles["rlnMagnification"] = [f"{5.0e4 / pixel_size:.4f}"] * n
    cols = [c for c in particles if c not in drop]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(cols)]
    for i in range(n):
        lines.append("  ".join(str(particles[c][i]) for c in cols))
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_star() -> Callable[..., Path]:
    """``make_star(path, names, optics=True, drop=(), box=32, pixel_size=1.5)`` writes a small STAR."""

    def _make(path: Path, names: Sequence[str], **kw: object) -> Path:
        path.write_text(_star_text(names, **kw))  # type: ignore[arg-type]
        return path

    return _make


@pytest.fixture
def make_stack() -> Callable[..., np.ndarray]:
    """``make_stack(path, n=10, box=32, seed=0, pixel_size=1.5)`` writes a random float32 stack."""

    def _make(
        path: Path, n: int = 10, box: int = 32, seed: int = 0, pixel_size: float = 1.5
    ) -> np.ndarray:
        data = np.random.default_rng(seed).normal(size=(n, box, box)).astype(np.float32)
        write_stack(path, data, pixel_size)
        return data

    return _make
