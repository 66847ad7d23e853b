"""Helpers of the interoperability tests: the test job's sizes, RELION's binaries (skip with a
message when absent), and the cryoclass CLI run in-process."""

from __future__ import annotations

import os
import shutil
import subprocess
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cryoclass.cli import _register, app

N, BOX, APIX, K = 240, 32, 5.0, 3


def need(*binaries: str) -> None:
    """Skip unless every RELION binary is on PATH."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(
            f"RELION tools not installed ({', '.join(missing)} not on PATH); install "
            "Debian's relion package (apt-get install relion, done by `make setup`)"
        )


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a RELION command in ``cwd`` (single-threaded OpenMP); fail with its output."""
    r = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def run_cli(*args: str) -> Result:
    """``cryoclass ARGS`` in this process; fails the test if it ends in a traceback."""
    _register()
    r = CliRunner().invoke(app, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        tb = "".join(traceback.format_exception(*r.exc_info))
        pytest.fail(f"cryoclass {' '.join(args)} ended in a traceback:\n{tb}")
    return r


def one_line(text: str) -> str:
    """Output with runs of white space as one space (terminal wrapping undone)."""
    return " ".join(text.split())
