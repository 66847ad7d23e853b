"""`cryoclass serve` and `cryoclass classify --dashboard` as a user runs them (subprocesses on
127.0.0.1, port 0), and a batch job still running (shown from its checkpoint)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from cryoclass.dashboard.app import create_app
from cryoclass.dashboard.service import Dashboard
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME
from cryoclass.outputs.selection import read_job_classes

JOB = [
    "--classes",
    "3",
    "--max-res-A",
    "12.5",
    "--batch-size-per-class",
    "20",
    "--n-online-em-iters",
    "4",
    "--n-full-iters",
    "1",
    "--device",
    "cpu",
]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cryoclass.cli import main; main()", *args]


def _run_until(args: list[str], log: Path, pattern: str, timeout_s: float = 90.0):
    """Start the command; return (process, first match of pattern in its output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    with open(log, "w") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        m = re.search(pattern, log.read_text(errors="replace"))
        if m:
            return proc, m
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{pattern!r} not printed:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def test_serve_prints_a_url_that_serves_the_job(job, tmp_path):
    proc, m = _run_until(
        _cli("serve", str(job), "--port", "0"), tmp_path / "log", r"(http://127\.0\.0\.1:\d+/)"
    )
    try:
        s = httpx.get(m.group(1) + "api/state", timeout=10).json()
        assert [it["count"] for it in s["classes"]["items"]] == read_job_classes(
            job, images=False
        ).counts.tolist()
    finally:
        _stop(proc)


def test_serve_off_loopback_requires_the_printed_token(job, tmp_path):
    proc, m = _run_until(
        _cli("serve", str(job), "--host", "0.0.0.0", "--port", "0"),
        tmp_path / "log",
        r"http://\S+:(\d+)/\?token=(\S+)",
    )
    try:
        base = f"http://127.0.0.1:{m.group(1)}/"
        assert httpx.get(base + "api/state", timeout=10).status_code == 401
        r = httpx.get(base + "api/state", params={"token": m.group(2)}, timeout=10)
        assert r.status_code == 200
    finally:
        _stop(proc)


def test_classify_with_dashboard(finished_job, tmp_path):
    data = finished_job.parent / "data" / "particles.star"
    out = tmp_path / "job"
    proc, m = _run_until(
        _cli(
            "classify", str(data), "--out", str(out), "--dashboard", "--dashboard-port", "0", *JOB
        ),
        tmp_path / "log",
        r"dashboard still at (http://\S+)",
    )
    try:
        s = httpx.get(m.group(1) + "api/state", timeout=10).json()
        assert s["kind"] == "batch" and s["progress"]["finished"]
        assert s["classes"]["total"] == int(read_job_classes(out, images=False).counts.sum())
    finally:
        _stop(proc)


def test_running_batch_job_is_shown_from_its_checkpoint(job):
    ck = job / CHECKPOINT_NAME
    if not ck.exists():
        pytest.skip("this batch job writes no checkpoint")
    later = (job / "model.star").stat().st_mtime_ns + 10**9
    os.utime(ck, ns=(later, later))  # as if the job had just checkpointed again
    c = TestClient(create_app(Dashboard(job)))
    s = c.get("/api/state").json()
    assert s["classes"]["source"] == "checkpoint" and len(s["classes"]["items"]) == 3
    assert s["progress"]["step"] == s["progress"]["total_steps"] == 5
    assert len(s["history"]["mean_loglik"]) == 5
    assert c.get(s["classes"]["items"][0]["image"]).status_code == 200
    assert c.post("/api/mark", json={"number": 1, "mark": "good"}).status_code == 400
