"""Helpers of the reliability tests. Small projects: MRC stacks of random images and a STAR
file whose every value is text, so a test can break any value (a wrong type, an absurd CTF, an
index out of range) exactly as a damaged file would hold it.

Subprocesses started by the tests run single-threaded (OpenMP), as the streaming tests' do.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from cryoclass.cli import _register, app
from cryoclass.io import write_stack

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

BOX, APIX = 16, 2.0
#: A classification that takes well under a second on 40 particles of 16 px.
FAST = [
    "-K",
    "2",
    "--n-online-em-iters",
    "2",
    "--n-full-iters",
    "1",
    "--batch-size-per-class",
    "10",
    "--max-res-A",
    "8",
    "--device",
    "cpu",
    "--no-remove-duplicates",
]

OPTICS = {
    "rlnOpticsGroup": "1",
    "rlnOpticsGroupName": "opticsGroup1",
    "rlnAmplitudeContrast": "0.1",
    "rlnSphericalAberration": "2.7",
    "rlnVoltage": "300",
    "rlnImagePixelSize": f"{APIX}",
    "rlnImageSize": f"{BOX}",
    "rlnImageDimensionality": "2",
}


@dataclass
class Project:
    """A RELION project folder: stacks under ``Extract/``, rows of text values, optics groups."""

    folder: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    optics: list[dict[str, str]] = field(default_factory=lambda: [dict(OPTICS)])

    def add_stack(self, name: str, n: int, seed: int = 0, box: int = BOX) -> np.ndarray:
        """Write ``Extract/name`` with n random images and add one row per image; returns them."""
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:box, :box] - box / 2
        blob = np.exp(-(xx**2 + yy**2) / (2 * (box / 6) ** 2)).astype(np.float32)
        imgs = blob[None] * rng.uniform(0.5, 2.0, (n, 1, 1)) + rng.normal(size=(n, box, box))
        imgs = imgs.astype(np.float32)
        (self.folder / "Extract").mkdir(parents=True, exist_ok=True)
        write_stack(self.folder / "Extract" / name, imgs, APIX)
        for i in range(n):
            self.rows.append(
                {
                    "rlnImageName": f"{i + 1:06d}@Extract/{name}",
                    "rlnMicrographName": f"Micrographs/{Path(name).stem}.mrc",
                    "rlnCoordinateX": f"{100 + 50 * i}",
                    "rlnCoordinateY": "300",
                    "rlnDefocusU": f"{15000 + 37 * len(self.rows):.2f}",
                    "rlnDefocusV": f"{14500 + 37 * len(self.rows):.2f}",
                    "rlnDefocusAngle": "30.5",
                    "rlnOpticsGroup": "1",
                }
            )
        return imgs

    def star_text(self) -> str:
        lines = ["# version 30001", "", "data_optics", "", "loop_"]
        ocols = list(self.optics[0])
        lines += [f"_{c} #{i + 1}" for i, c in enumerate(ocols)]
        lines += ["  ".join(o[c] for c in ocols) for o in self.optics]
        lines += ["", "", "# version 30001", "", "data_particles", "", "loop_"]
        cols = list(dict.fromkeys(c for r in self.rows for c in r))
        lines += [f"_{c} #{i + 1}" for i, c in enumerate(cols)]
        lines += ["  ".join(r.get(c, "0") for c in cols) for r in self.rows]
        return "\n".join(lines) + "\n"

    def write(self, name: str = "particles.star") -> Path:
        path = self.folder / name
        path.write_text(self.star_text())
        return path


def run_cli(*args: str) -> Result:
    """``cryoclass ARGS`` in this process. Fails the test if it ends in a traceback (any
    exception other than a clean exit)."""
    _register()
    r = CliRunner().invoke(app, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        tb = "".join(traceback.format_exception(*r.exc_info))
        pytest.fail(f"cryoclass {' '.join(args)} ended in a traceback:\n{tb}")
    return r


def one_line(text: str) -> str:
    """Output with runs of white space as one space (terminal wrapping undone)."""
    return " ".join(text.split())
