"""Helpers of the end-to-end stream tests: a watched folder filled micrograph by micrograph (one
STAR file and one stack each, as a pipeline writes them), and ``cryoclass stream`` run as a
process that can be signalled, killed and started again."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryoclass.stream import read_events

from .projects import BOX, FAST, Project

ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
#: The stream's job: FAST, polled every 0.1 s.
STREAM = [*FAST, "--poll", "0.1"]


def add_micrograph(
    folder: Path, name: str, n: int = 20, seed: int = 0, box: int = BOX, stack: bool = True
) -> Path:
    """Write ``Extract/name.mrcs`` (n images; none if not ``stack``) and ``name.star`` listing
    them; returns the STAR path."""
    p = Project(folder)
    p.optics[0]["rlnImageSize"] = str(box)
    p.add_stack(f"{name}.mrcs", n, seed=seed, box=box)
    if not stack:
        (folder / "Extract" / f"{name}.mrcs").unlink()
    time.sleep(0.01)  # distinct mtimes: micrographs are taken in the order written
    return p.write(f"{name}.star")


def launch(watch: Path, out: Path, *extra: str, log: Path) -> subprocess.Popen:
    """``cryoclass stream WATCH --out OUT`` as a process; stdout and stderr into ``log``."""
    cmd = [
        sys.executable,
        "-m",
        "cryoclass.cli",
        "stream",
        str(watch),
        "--out",
        str(out),
        *STREAM,
        *extra,
    ]
    fh = open(log, "w")
    return subprocess.Popen(cmd, env=ENV, stdout=fh, stderr=subprocess.STDOUT)


def wait_until(
    cond: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 60.0
) -> None:
    """Poll cond() until true; fail if the process ends first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the stream ended (rc {proc.returncode}) before the condition")
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def last_event(out: Path) -> dict:
    ev = read_events(out / "events.jsonl") if (out / "events.jsonl").exists() else []
    return ev[-1] if ev else {}


def rejects(out: Path) -> list[dict[str, str]]:
    with open(out / "rejects.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def text(log: Path) -> str:
    """The log with runs of white space as one space (terminal wrapping undone)."""
    return " ".join(log.read_text().split())
