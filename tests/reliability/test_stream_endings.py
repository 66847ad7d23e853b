"""A stream never dies and never loses a particle silently (issue 19, items 1-4), end to end
through ``cryoclass stream``: a stack deleted after ingestion, two box sizes in the first poll,
every ending (DONE, idle timeout, Ctrl-C, SIGTERM) accounting for every particle found, and one
lock shared by batch and stream jobs."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import starfile

from cryoclass.jobs.outdir import hold

from .projects import FAST, one_line, run_cli
from .streams import STREAM, add_micrograph, last_event, launch, rejects, text, wait_until


def test_stack_deleted_after_ingestion_is_set_aside_and_the_stream_survives_restart(
    tmp_path: Path,
) -> None:
    watch, out, log = tmp_path / "watch", tmp_path / "out", tmp_path / "log"
    add_micrograph(watch, "mic_a", seed=1)
    add_micrograph(watch, "mic_b", seed=2)
    proc = launch(watch, out, log=log)
    wait_until(lambda: last_event(out).get("n_processed") == 40, proc)
    (watch / "Extract" / "mic_a.mrcs").unlink()  # deleted after it was classified
    add_micrograph(watch, "mic_c", seed=3)
    add_micrograph(watch, "mic_d", seed=4)
    wait_until(lambda: last_event(out).get("n_processed") == 80, proc)
    proc.kill()  # kill -9, then start again
    proc.wait(timeout=30)
    proc = launch(watch, out, log=log)
    add_micrograph(watch, "mic_e", seed=5)
    add_micrograph(watch, "mic_f", seed=6)
    (watch / "DONE").write_text("")
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    said = text(log)
    assert (
        "stream ended (done): 100 particles ingested, 100 classified, 20 set aside, 0 still "
        "waiting (found 120 = classified + set aside + still waiting)" in said
    ), said[-2000:]
    assert "20 particles set aside (20 stack unreadable after ingestion)" in said
    rows = rejects(out)
    assert len(rows) == 20 and {Path(r["source"]).name for r in rows} == {"mic_a.star"}
    assert sorted(int(r["row"]) for r in rows) == list(range(20))
    assert all(
        "image stack not found" in r["reason"]
        and "withdrawn" in r["reason"]
        and r["time"].endswith("Z")
        for r in rows
    )
    parts = starfile.read(out / "particles.star")["particles"]
    assert len(parts) == 100 and not parts["rlnImageName"].str.contains("mic_a").any()


def test_first_poll_with_two_box_sizes_keeps_the_majority(tmp_path: Path) -> None:
    watch, out = tmp_path / "watch", tmp_path / "out"
    add_micrograph(watch, "mic_a", seed=1, box=24)  # the first micrograph, outnumbered
    add_micrograph(watch, "mic_b", seed=2)
    add_micrograph(watch, "mic_c", seed=3)
    (watch / "DONE").write_text("")
    r = run_cli("stream", str(watch), "--out", str(out), *STREAM)
    assert r.exit_code == 0, r.output
    said = one_line(r.output)
    assert "40 classified, 20 set aside, 0 still waiting (found 60" in said, said
    rows = rejects(out)
    assert len(rows) == 20 and {Path(x["source"]).name for x in rows} == {"mic_a.star"}
    assert all(x["reason"] == "box 24 px differs from the stream's 16 px" for x in rows)
    r = run_cli("stream", str(watch), "--out", str(out), *STREAM)  # a restart is fine too
    assert r.exit_code == 0, r.output


def test_box_tie_goes_to_the_first_micrograph() -> None:
    import pandas as pd

    from cryoclass.stream.geometry import first_geometry

    t = pd.DataFrame({"rlnImageSize": [24] * 3 + [16] * 3, "rlnImagePixelSize": [2.0] * 6})
    assert first_geometry(t) == (24, 2.0)
    t = pd.DataFrame({"rlnImageSize": [24] * 3 + [16] * 4, "rlnImagePixelSize": [2.0] * 7})
    assert first_geometry(t) == (16, 2.0)


def test_idle_timeout_sets_aside_what_never_became_usable(tmp_path: Path) -> None:
    watch, out = tmp_path / "watch", tmp_path / "out"
    add_micrograph(watch, "mic_a", seed=1)
    add_micrograph(watch, "mic_b", seed=2, stack=False)  # its stack never arrives
    add_micrograph(watch, "mic_c", seed=3)
    stack = watch / "Extract" / "mic_c.mrcs"
    stack.write_bytes(stack.read_bytes()[:-500])  # truncated: never complete
    (watch / "garbled.star").write_bytes(b"\x00\x01 not a STAR file\n")
    r = run_cli("stream", str(watch), "--out", str(out), *STREAM, "--idle-timeout", "1")
    assert r.exit_code == 0, r.output
    said = one_line(r.output)
    assert (
        "stream ended (idle): 20 particles ingested, 20 classified, 40 set aside, 0 still "
        "waiting (found 60 = classified + set aside + still waiting)" in said
    ), said
    assert "1 STAR file(s) could not be read and were set aside" in said
    rows = rejects(out)
    by_file: dict[str, list[dict]] = {}
    for x in rows:
        by_file.setdefault(Path(x["source"]).name, []).append(x)
    assert {k: len(v) for k, v in by_file.items()} == {
        "mic_b.star": 20,
        "mic_c.star": 20,
        "garbled.star": 1,
    }
    assert all(x["reason"].startswith("stack never complete") for x in by_file["mic_b.star"])
    assert all(x["reason"].startswith("stack never complete") for x in by_file["mic_c.star"])
    assert by_file["garbled.star"][0]["reason"].startswith("STAR file unreadable")


def test_idle_timeout_shorter_than_a_poll_still_ingests_what_was_found(tmp_path: Path) -> None:
    watch, out = tmp_path / "watch", tmp_path / "out"
    add_micrograph(watch, "mic_a", seed=1)
    add_micrograph(watch, "mic_b", seed=2)
    r = run_cli(
        "stream", str(watch), "--out", str(out), *FAST, "--poll", "0.5", "--idle-timeout", "0"
    )
    assert r.exit_code == 0, r.output
    assert (
        "stream ended (idle): 40 particles ingested, 40 classified, 0 set aside, 0 still "
        "waiting (found 40" in one_line(r.output)
    ), r.output


@pytest.mark.parametrize(
    "sig,rc,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]
)
def test_signal_stops_with_every_particle_accounted_and_resumes(
    tmp_path: Path, sig: int, rc: int, name: str
) -> None:
    watch, out, log = tmp_path / "watch", tmp_path / "out", tmp_path / "log"
    add_micrograph(watch, "mic_a", seed=1)
    add_micrograph(watch, "mic_b", seed=2, stack=False)  # waiting for its stack
    proc = launch(watch, out, log=log)
    wait_until(lambda: last_event(out).get("n_processed") == 20, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == rc, log.read_text()[-3000:]
    said = text(log)
    assert (
        f"stream ended ({name}): 20 particles ingested, 20 classified, 0 set aside, 20 still "
        "waiting (found 40 = classified + set aside + still waiting)" in said
    ), said[-2000:]
    assert "run the same command to resume" in said
    add_micrograph(watch, "mic_b", seed=2)  # the stack arrives; then DONE
    (watch / "DONE").write_text("")
    proc = launch(watch, out, log=log)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert "stream ended (done): 40 particles ingested, 40 classified, 0 set aside" in text(log)


def test_batch_and_stream_share_one_lock(tmp_path: Path, project) -> None:
    star = project.write()
    watch, out, log = tmp_path / "watch", tmp_path / "out", tmp_path / "log"
    watch.mkdir()
    proc = launch(watch, out, log=log)
    try:
        wait_until(
            lambda: (
                (out / ".cryoclass.lock").exists()
                and (out / ".cryoclass.lock").read_text().startswith("stream")
            ),
            proc,
        )
        r = run_cli("classify", str(star), "--out", str(out), *FAST)
        assert r.exit_code == 2, r.output
        assert f"another cryoclass stream (pid {proc.pid}" in one_line(r.output), r.output
        assert not (out / "particles.star").exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with hold(tmp_path / "batch_out"):
        r = run_cli(
            "stream",
            str(watch),
            "--out",
            str(tmp_path / "batch_out"),
            *STREAM,
            "--idle-timeout",
            "0",
        )
        assert r.exit_code == 2, r.output
        assert "another cryoclass classify job (pid" in one_line(r.output), r.output
