"""A full disk while writing: the previous outputs stay whole and unchanged, the job stops with a
clear message (exit code 3), and once there is space again ``--resume`` finishes the job.

The disk is made full in two ways: in-process, by making every flush to disk of a file in the
output folder fail with ENOSPC (as a full file system reports it, at write or at fsync); and, where
the machine allows mounting one, a real 1 MiB tmpfs filled to the last byte.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cryoclass.config import Config
from cryoclass.io import OutputError
from cryoclass.io.lock import LOCK_NAME
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME
from cryoclass.outputs.events import EVENTS_NAME
from cryoclass.stream import Stream

from .projects import FAST, Project, one_line, run_cli


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (not the lock), by name."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != LOCK_NAME
    }


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name or p.name.startswith(".staging")]


def full_disk_for(monkeypatch: pytest.MonkeyPatch, folder: Path, after: int = 0) -> None:
    """Every fsync of a file under ``folder`` fails with ENOSPC, after ``after`` successful ones."""
    real = os.fsync
    calls = {"n": 0}
    root = str(folder.resolve())

    def fsync(fd: int) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if path.startswith(root) and os.path.isfile(path):
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("after", [0, 3, 9], ids=["checkpoint", "during-job", "during-outputs"])
def test_batch_full_disk_keeps_previous_outputs(
    after: int, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    star, out = project.write(), tmp_path / "out"
    assert run_cli("classify", str(star), "--out", str(out), *FAST).exit_code == 0
    before = snapshot(out)
    with monkeypatch.context() as m:
        full_disk_for(m, out, after)
        r = run_cli("classify", str(star), "--out", str(out), *FAST, "--seed", "7")
    assert r.exit_code == 3, r.output
    msg = one_line(r.output)
    assert f"error: {out}" in msg
    assert (
        "cannot write (No space left on device, errno 28); the previous version of the file, "
        "if any, is intact" in msg
    )
    after_files = snapshot(out)
    # the commit point and the log of the run under way change as it runs; the outputs do not
    outputs = [n for n in before if n not in (CHECKPOINT_NAME, EVENTS_NAME)]
    assert {n: after_files[n] for n in outputs} == {n: before[n] for n in outputs}
    assert no_temporaries(out)
    # space again: the interrupted run resumes (if it committed a step) and writes a new set
    again = ["--resume"] if after else []
    r = run_cli("classify", str(star), "--out", str(out), *FAST, "--seed", "7", *again)
    assert r.exit_code == 0, r.output
    assert snapshot(out)["classes.mrcs"] != before["classes.mrcs"]


def test_stream_full_disk_keeps_previous_outputs(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryoclass.io import read_particles

    pset = read_particles(project.write())
    cfg = Config(
        n_classes=2,
        n_online_em_iters=2,
        batch_size_per_class=5,
        n_full_iters=1,
        max_res_A=8,
        device="cpu",
        remove_duplicates=False,
    )
    out = tmp_path / "live"
    with Stream(cfg, out) as s:
        s.add_particles(pset.subset(np.arange(20)))
    before = snapshot(out)
    with monkeypatch.context() as m:
        full_disk_for(m, out)
        with pytest.raises(OSError) as exc:
            with Stream(cfg, out) as s:
                s.add_particles(pset.subset(np.arange(20, 40)))
    assert exc.value.errno == errno.ENOSPC
    now = snapshot(out)
    for name in (CHECKPOINT_NAME, "classes.mrcs", "particles.star", "particles.cs"):
        assert now[name] == before[name], name
    with Stream(cfg, out) as s:  # space again: resumes from the last commit, loses nothing
        assert s.n_ingested == 20
        s.add_particles(pset.subset(np.arange(20, 40)))
        assert s.finish().particles.index.size == 40


def test_stream_cli_full_disk_message(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write()
    out = tmp_path / "live"
    out.mkdir()
    with monkeypatch.context() as m:
        full_disk_for(m, out)
        r = run_cli(
            "stream",
            str(project.folder),
            "--out",
            str(out),
            "-K",
            "2",
            "--batch-size-per-class",
            "5",
            "--max-res-A",
            "8",
            "--device",
            "cpu",
            "--poll",
            "0.05",
            "--idle-timeout",
            "30",
        )
    assert r.exit_code == 3, r.output
    msg = one_line(r.output)
    assert (
        f"error: {out / CHECKPOINT_NAME}: cannot write (No space left on device, errno 28)" in msg
    )


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs); skipped where mounting is not allowed."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(
            f"cannot mount a 1 MiB tmpfs here ({r.stderr.strip() or 'not root'}); the "
            "in-process ENOSPC tests cover the full disk"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_batch_on_a_really_full_disk(project: Project, tiny_tmpfs: Path) -> None:
    star, out = project.write(), tiny_tmpfs / "out"
    assert run_cli("classify", str(star), "--out", str(out), *FAST).exit_code == 0
    before = snapshot(out)
    fd = os.open(tiny_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # take every remaining byte
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)
    r = run_cli("classify", str(star), "--out", str(out), *FAST, "--seed", "3")
    assert r.exit_code == 3, r.output
    assert "No space left on device" in one_line(r.output)
    assert snapshot(out) == before and no_temporaries(out)
    os.unlink(tiny_tmpfs / "filler")  # space again (nothing was committed: start over)
    assert run_cli("classify", str(star), "--out", str(out), *FAST, "--seed", "3").exit_code == 0
    assert snapshot(out)["classes.mrcs"] != before["classes.mrcs"]


def test_output_error_names_file_and_pickles(tmp_path: Path) -> None:
    import pickle

    err = OutputError("No space left on device", file=tmp_path / "x.star", errno_=errno.ENOSPC)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.errno == errno.ENOSPC and isinstance(back, OSError)
    assert str(err).startswith(f"{tmp_path / 'x.star'}: cannot write (No space left on device")
