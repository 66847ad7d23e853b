"""kill -9 at random moments, again and again, then restart: batch jobs (``--resume``) and
streaming jobs end complete, with every particle classified exactly once, and batch gives exactly
the result of the run that was never killed. Meanwhile a reader thread parses every output over
and over: it never meets a half-written file.

The kill moments are drawn at random (seeded) within phases seen from the job's own commits, so
every run kills during start-up, online EM, full passes and output writing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from cryoclass.outputs.checkpoint import CHECKPOINT_NAME
from cryoclass.simulate import SimulationConfig, simulate_dataset
from cryoclass.simulate.feed import feed_simulation
from cryoclass.stream import read_events

from .whole import Watcher, broken_outputs

N_BATCH = 400
BATCH_ARGS = [
    "-K",
    "4",
    "--max-res-A",
    "12.5",
    "--batch-size-per-class",
    "20",
    "--n-online-em-iters",
    "10",
    "--n-full-iters",
    "2",
    "--sigma-anneal-start",
    "1",
    "--sigma-anneal-iters",
    "5",
    "--initial-uncertainty-factor",
    "8",
    "--device",
    "cpu",
]
BATCH_STEPS = 12
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryoclass.cli", *args]


def checkpoint_step(path: Path) -> int:
    """The step a batch checkpoint holds (-1 if none yet)."""
    try:
        return int(
            torch.load(path, map_location="cpu", weights_only=False)["state"]["point"]["step"]
        )
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll ``cond()`` every 10 ms until true (True) or the process ended (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError("the job made no progress")


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; True if the process was still running."""
    running = proc.poll() is None
    if running:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return running


@pytest.fixture(scope="module")
def batch_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            out,
            n_particles=N_BATCH,
            box=32,
            pixel_size_A=5.0,
            n_views=4,
            snr=1.0,
            particles_per_micrograph=50,
            seed=11,
        )
    return out / "particles.star"


@pytest.mark.slow
def test_batch_killed_repeatedly_resumes_to_the_same_result(batch_data, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    r = subprocess.run(
        cli("classify", str(batch_data), "--out", str(ref), *BATCH_ARGS),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rng = np.random.default_rng(2026)
    ckpt = out / CHECKPOINT_NAME
    # (phase, checkpoint step to wait for): start-up, online EM, full passes, output writing
    plan = [
        ("start-up", None),
        ("online EM", 2),
        ("online EM", 6),
        ("full pass", 11),
        ("outputs", BATCH_STEPS),
    ]
    watcher = Watcher(out)
    watcher.start()
    killed, steps = [], []
    for phase, step in plan:
        proc = subprocess.Popen(
            cli("classify", str(batch_data), "--out", str(out), *BATCH_ARGS, "--resume"),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if step is None:
            time.sleep(rng.uniform(0.2, 1.0))
        else:
            wait_for(lambda: checkpoint_step(ckpt) >= step, proc)
            time.sleep(rng.uniform(0.0, 0.15))
        if kill(proc):
            killed.append(phase)
        steps.append(checkpoint_step(ckpt))
        assert steps == sorted(steps), f"a resumed run went back: steps {steps}"
        assert not broken_outputs(out), broken_outputs(out)
    proc = subprocess.run(
        cli("classify", str(batch_data), "--out", str(out), *BATCH_ARGS, "--resume"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    watcher.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(killed) >= 4, f"only {killed} were killed mid-run"
    assert not watcher.problems, watcher.problems[:5]
    assert watcher.reads > 50
    # complete and identical to the run never killed: every particle once, same class and pose
    np.testing.assert_array_equal(
        mrcfile.read(ref / "classes.mrcs"), mrcfile.read(out / "classes.mrcs")
    )
    pr = starfile.read(ref / "particles.star")["particles"]
    po = starfile.read(out / "particles.star")["particles"]
    assert len(po) == N_BATCH and po["rlnImageName"].is_unique
    pd.testing.assert_frame_equal(pr, po)
    assert not [p for p in out.iterdir() if ".tmp" in p.name or p.name.startswith(".staging")]
    print(
        f"\nkilled during {killed}; checkpoint steps at the kills {steps}; "
        f"{watcher.reads} whole reads of every output"
    )


# --------------------------------------------------------------------------- streaming
N_STREAM = 450
STREAM_ARGS = [
    "--classes",
    "4",
    "--max-res-A",
    "12.5",
    "--batch-size-per-class",
    "20",
    "--n-online-em-iters",
    "10",
    "--n-full-iters",
    "1",
    "--sigma-anneal-start",
    "1",
    "--sigma-anneal-iters",
    "5",
    "--device",
    "cpu",
    "--poll",
    "0.1",
]


def stream_proc(watch: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cli("stream", str(watch), "--out", str(out), *STREAM_ARGS),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def n_updates(out: Path) -> int:
    return sum(
        e["event"] in ("online", "live", "full", "final") for e in read_events(out / "events.jsonl")
    )


def n_processed(out: Path) -> int:
    ev = read_events(out / "events.jsonl")
    return int(ev[-1]["n_processed"]) if ev else 0


@pytest.mark.slow
def test_stream_killed_repeatedly_loses_nothing(tmp_path):
    watch, out = tmp_path / "watch", tmp_path / "out"
    sim = SimulationConfig(
        n_particles=N_STREAM,
        box=32,
        pixel_size_A=5.0,
        n_views=4,
        snr=1.0,
        particles_per_micrograph=25,
        seed=4,
    )
    # no done marker until the kills are over: the stream is always running when killed
    feeder = threading.Thread(target=feed_simulation, args=(watch, sim, 60.0, ""), daemon=True)
    feeder.start()
    rng = np.random.default_rng(7)
    watcher = Watcher(out)
    watcher.start()
    killed = []
    for _ in range(5):
        proc = stream_proc(watch, out)
        target = n_updates(out) + 1 + int(rng.integers(0, 3))
        wait_for(
            lambda: (
                n_updates(out) >= target or (not feeder.is_alive() and n_processed(out) >= N_STREAM)
            ),
            proc,
        )
        time.sleep(rng.uniform(0.0, 0.3))
        if kill(proc):
            killed.append(n_updates(out))
        assert not broken_outputs(out), broken_outputs(out)
    feeder.join(timeout=120)
    (watch / "DONE").write_text("")
    proc = stream_proc(watch, out)
    _, err = proc.communicate(timeout=300)
    watcher.stop()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert len(killed) == 5, f"only {len(killed)} kills hit a running stream"
    assert not watcher.problems, watcher.problems[:5]
    parts = starfile.read(out / "particles.star")["particles"]
    assert len(parts) == N_STREAM and parts["rlnImageName"].is_unique
    assert (parts["rlnClassNumber"] >= 1).all()
    ev = read_events(out / "events.jsonl")
    assert [e["seq"] for e in ev] == list(range(len(ev)))  # each commit logged exactly once
    assert sum(e["n_new_ingested"] for e in ev) == N_STREAM  # each particle ingested once
    assert sum(e.get("n_new", 0) for e in ev) == N_STREAM  # and classified as new once
    assert ev[-1]["event"] == "finish" and ev[-1]["n_processed"] == N_STREAM
    print(f"\nstream killed {len(killed)} times (after updates {killed}); {len(ev)} events")
