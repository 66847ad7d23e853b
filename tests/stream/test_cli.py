"""`cryoclass simulate --stream-to DIR --rate N` and `cryoclass stream WATCH_DIR --out DIR`."""

from __future__ import annotations

import mrcfile
import starfile
from typer.testing import CliRunner

from cryoclass.cli import _register, app
from cryoclass.stream import read_events

_register()
runner = CliRunner()
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


def test_simulate_stream_to_then_stream(tmp_path):
    watch, out = tmp_path / "watch", tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "simulate",
            "--stream-to",
            str(watch),
            "--rate",
            "2000",
            "--n",
            "120",
            "--box",
            "32",
            "--apix",
            "5",
            "--views",
            "3",
            "--snr",
            "1",
            "--per-mic",
            "40",
        ],
    )
    assert r.exit_code == 0, r.output
    stars = sorted((watch / "Movies").glob("*.star"))
    assert len(stars) == 3 and (watch / "DONE").exists() and (watch / "truth.csv").exists()
    for s in stars:  # each stack was complete before its STAR appeared
        assert s.with_suffix(".mrcs").stat().st_mtime_ns <= s.stat().st_mtime_ns
    assert (watch / "DONE").stat().st_mtime_ns >= max(s.stat().st_mtime_ns for s in stars)
    r = runner.invoke(
        app, ["stream", str(watch), "--out", str(out), "--poll", "0.05", "--policy", "online", *JOB]
    )
    assert r.exit_code == 0, r.output
    assert "stream ended (done): 120 particles ingested, 120 classified" in r.output
    parts = starfile.read(out / "particles.star")["particles"]
    assert len(parts) == 120 and parts["rlnImageName"].is_unique
    assert mrcfile.read(out / "classes.mrcs").shape == (3, 32, 32)
    ev = read_events(out / "events.jsonl")
    assert ev[-1]["event"] == "finish" and ev[-1]["n_processed"] == 120
    assert all(e["latency_s"]["mean"] >= 0 for e in ev if e.get("latency_s"))


def test_stream_idle_timeout_and_bad_policy(tmp_path):
    r = runner.invoke(
        app,
        [
            "stream",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--poll",
            "0.05",
            "--idle-timeout",
            "0.2",
            *JOB,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "stream ended (idle): 0 particles" in r.output
    r = runner.invoke(
        app, ["stream", str(tmp_path), "--out", str(tmp_path / "o2"), "--policy", "batchy", *JOB]
    )
    assert r.exit_code != 0


def test_simulate_needs_one_destination(tmp_path):
    r = runner.invoke(app, ["simulate", "--n", "10"])
    assert r.exit_code != 0
