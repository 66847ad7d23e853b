"""Kill the stream at any moment, start it again on the same folder: it resumes with every
ingested particle, loses none and counts none twice; outputs and events stay consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch

from cryoclass.outputs.checkpoint import CHECKPOINT_NAME, JobCheckpoint
from cryoclass.outputs.events import EventLog
from cryoclass.simulate import SimulationConfig
from cryoclass.simulate.feed import feed_simulation
from cryoclass.stream import Stream, read_events

N = 200
CHUNK = 25


class Crash(Exception):
    """Stands for the process dying."""


def die(s: Stream) -> None:
    """What a killed process leaves: nothing flushed, the folder lock released by the OS."""
    os.close(s._lock_fd)
    s._lock_fd = None


def chunks(pset):
    return [
        pset.subset(np.arange(a, min(len(pset), a + CHUNK))) for a in range(0, len(pset), CHUNK)
    ]


def check_outputs(out: Path, n: int) -> None:
    """particles.star lists every particle once with a class; events count each once."""
    parts = starfile.read(out / "particles.star")["particles"]
    assert len(parts) == n
    assert parts["rlnImageName"].is_unique
    assert (parts["rlnClassNumber"] >= 1).all()
    ev = read_events(out / "events.jsonl")
    assert [e["seq"] for e in ev] == list(range(len(ev)))
    assert sum(e.get("n_new", 0) for e in ev) == n
    assert sum(e["n_new_ingested"] for e in ev) == n
    assert ev[-1]["event"] == "finish" and ev[-1]["n_processed"] == n
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*.tmp-*"))


def crash_then_resume(
    particles, config, out: Path, monkeypatch, inject, mid_ingest: bool = True
) -> tuple:
    """Add chunks until the injected crash, then restart and re-add everything. mid_ingest: the
    crash must come before every particle is ingested (otherwise it may come in the stream's
    end). Returns the resumed stream's result and history."""
    sub = particles.subset(np.arange(N))
    with monkeypatch.context() as m:
        inject(m)
        s = Stream(config, out)
        with pytest.raises(Crash):
            for c in chunks(sub):
                s.add_particles(c)
            s.finish()
        die(s)
    # temporaries a killed process leaves behind (ModelState.save's and atomic_write's)
    (out / f"{CHECKPOINT_NAME}k2j3h4.tmp").write_bytes(b"partial")
    (out / ".classes.tmp-0123456789ab.mrcs").write_bytes(b"partial")
    s = Stream(config, out)
    assert s.resumed
    before = s.n_ingested
    assert (0 < before < N) if mid_ingest else (0 < before)
    for c in chunks(sub):
        s.add_particles(c)
    result = s.finish()
    history = list(s.history)
    s.close()
    check_outputs(out, N)
    return result, history


def nth_call_raises(target, n: int, before=None):
    """A wrapper of target that raises Crash on its n-th call (after calling `before`)."""
    calls = {"k": 0}

    def wrapper(*args, **kwargs):
        calls["k"] += 1
        if calls["k"] == n:
            if before:
                before(*args, **kwargs)
            raise Crash()
        return target(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("where", ["checkpoint", "outputs", "event", "checkpoint_tmp"])
def test_crash_anywhere_resumes_exactly_once(where, particles, config_for, tmp_path, monkeypatch):
    cfg = config_for(0, n_full_iters=1)
    out = tmp_path / "out"

    def inject(m):
        if where == "checkpoint":  # dies before the commit point
            m.setattr(JobCheckpoint, "save", nth_call_raises(JobCheckpoint.save, 4))
        elif where == "outputs":  # dies after the checkpoint, before outputs and event
            m.setattr(Stream, "write_outputs", nth_call_raises(Stream.write_outputs, 4))
        elif where == "event":  # dies halfway through the event line

            def half_line(self, event):
                with open(self.path, "a") as fh:
                    fh.write('{"seq": %d, "ev' % event["seq"])

            m.setattr(EventLog, "append", nth_call_raises(EventLog.append, 4, half_line))
        else:  # dies while writing the checkpoint's temp file
            real = torch.save

            def partial(obj, fh, *args, **kwargs):
                fh.write(b"half a checkpoint")

            m.setattr(torch, "save", nth_call_raises(real, 4, partial))

    crash_then_resume(particles, cfg, out, monkeypatch, inject)


def test_images_added_through_the_api_resume(particles, config_for, tmp_path, monkeypatch):
    """Images + table (no stacks of the caller's): stored by the stream, keyed by the table's
    rlnImageName, so adding the same particles again after a crash is a no-op."""
    cfg = config_for(0, n_full_iters=1)
    sub = particles.subset(np.arange(N))
    imgs = sub.images(np.arange(N))
    table = sub.table.drop(columns=[c for c in sub.table.columns if c.startswith("_")])
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(JobCheckpoint, "save", nth_call_raises(JobCheckpoint.save, 3))
        s = Stream(cfg, out)
        with pytest.raises(Crash):
            for a in range(0, N, CHUNK):
                s.add_particles(imgs[a : a + CHUNK], table.iloc[a : a + CHUNK])
        die(s)
    with Stream(cfg, out) as s:
        for a in range(0, N, CHUNK):
            s.add_particles(imgs[a : a + CHUNK], table.iloc[a : a + CHUNK])
        s.finish()
    check_outputs(out, N)
    parts = starfile.read(out / "particles.star")["particles"]
    assert set(parts["rlnImageOriginalName"]) == set(table["rlnImageName"])
    assert parts["rlnImageName"].str.contains("stream_stacks/api_").all()


def test_resume_refuses_other_settings(particles, config_for, tmp_path):
    with Stream(config_for(0), tmp_path) as s:
        s.add_particles(particles.subset(np.arange(20)))
    with pytest.raises(ValueError, match="n_classes"):
        Stream(config_for(0, n_classes=5), tmp_path)
    with Stream(config_for(0, device="auto", batch_particles=64), tmp_path) as s:
        assert s.resumed and s.n_ingested == 20


def test_one_process_per_folder(config_for, tmp_path):
    with Stream(config_for(0), tmp_path):
        with pytest.raises(RuntimeError, match="another cryoclass stream"):
            Stream(config_for(0), tmp_path)


# --------------------------------------------------------------------------- real kill -9
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


def launch(watch: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    cmd = [
        sys.executable,
        "-c",
        "from cryoclass.cli import main; main()",
        "stream",
        str(watch),
        "--out",
        str(out),
        *STREAM_ARGS,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_mid_stream_and_restart(tmp_path):
    watch, out = tmp_path / "watch", tmp_path / "out"
    n = 500
    sim = SimulationConfig(
        n_particles=n,
        box=32,
        pixel_size_A=5.0,
        n_views=4,
        snr=1.0,
        particles_per_micrograph=50,
        seed=3,
    )
    feeder = threading.Thread(target=feed_simulation, args=(watch, sim, 60.0), daemon=True)
    feeder.start()
    proc = launch(watch, out)
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline:
        ev = read_events(out / "events.jsonl")
        online = [e for e in ev if e["event"] == "online"]
        if online:
            killed_at = online[-1]["n_ingested"]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed_at is not None and killed_at < n, "the stream was not killed mid-run"
    assert (out / CHECKPOINT_NAME).exists()
    proc = launch(watch, out)
    _, err = proc.communicate(timeout=240)
    feeder.join(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    check_outputs(out, n)
    ev = read_events(out / "events.jsonl")
    print(
        f"\nkilled at {killed_at} particles ingested; resumed; {len(ev)} events; "
        f"latency {ev[-3].get('latency_s')}"
    )


def test_a_stream_stopped_in_its_restarts_resumes_to_the_same_result(
    particles, config_for, tmp_path, monkeypatch
):
    """n_restarts: a stream killed during its second extra restart (after the first was
    committed) resumes with the restarts still due and ends as the stream never stopped."""
    import cryoclass.stream.stream as stream_module

    cfg = config_for(0, n_full_iters=2, n_restarts=3)
    sub = particles.subset(np.arange(N))

    def by_row(result) -> np.ndarray:
        out = np.full(N, -1)
        out[np.asarray(result.particles.index)] = result.particles.cls
        return out

    with Stream(cfg, tmp_path / "ref") as s:
        for c in chunks(sub):
            s.add_particles(c)
        reference = s.finish()
    result, history = crash_then_resume(
        particles,
        cfg,
        tmp_path / "out",
        monkeypatch,
        lambda m: m.setattr(
            stream_module, "restart_pass", nth_call_raises(stream_module.restart_pass, 2)
        ),
        mid_ingest=False,
    )
    assert [h["phase"] for h in history].count("restart") == 2
    np.testing.assert_array_equal(by_row(result), by_row(reference))
