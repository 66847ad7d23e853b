"""The folder watcher: never reads a stack before it is complete, takes a growing STAR row by row
(each row once), skips temporary files, duplicates and the stream's own output folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoclass.io import write_stack, write_star
from cryoclass.stream import FolderWatcher, Stream
from cryoclass.stream.pool import KEY

D = 32
APIX = 5.0


def star_table(stack_rel: str, n: int, start: int = 0) -> pd.DataFrame:
    """RELION rows for images start..start+n-1 (0-based) of stack_rel."""
    i = np.arange(start, start + n)
    return pd.DataFrame(
        {
            "rlnImageName": [f"{k + 1:06d}@{stack_rel}" for k in i],
            "rlnDefocusU": 15000.0 + i,
            "rlnDefocusV": 14800.0 + i,
            "rlnDefocusAngle": 10.0,
            "rlnVoltage": 300.0,
            "rlnSphericalAberration": 2.7,
            "rlnAmplitudeContrast": 0.1,
            "rlnImagePixelSize": APIX,
            "rlnImageSize": D,
            "rlnOpticsGroup": 1,
        }
    )


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D, D)).astype(np.float32)


def star_text(tmp: Path, table: pd.DataFrame) -> str:
    """What write_star writes for table (via a scratch file)."""
    p = tmp / "scratch.star"
    write_star(p, table)
    text = p.read_text()
    p.unlink()
    return text


class Poller:
    """A watcher feeding a Stream the way the watch loop does (ingest only, no updates)."""

    def __init__(self, watch: Path, out: Path, config) -> None:
        self.watcher = FolderWatcher(watch, exclude=[out])
        self.stream = Stream(config, out)

    def poll(self):
        res = self.watcher.poll(self.stream.known)
        self.stream.ingest(res.ready)
        return res


@pytest.fixture
def poller(tmp_path, config_for):
    watch = tmp_path / "watch"
    (watch / "Movies").mkdir(parents=True)
    p = Poller(watch, tmp_path / "out", config_for(0))
    yield p
    p.stream.close()


def test_half_written_stack_waits_until_complete(poller, tmp_path):
    watch = poller.watcher.root
    full = tmp_path / "full.mrcs"
    write_stack(full, images(100), APIX)
    data = full.read_bytes()
    stack = watch / "Movies" / "mic_0001.mrcs"
    stack.write_bytes(data[: 1024 + 50 * D * D * 4])  # header says 100, file holds 50
    write_star(watch / "Movies" / "mic_0001.star", star_table("Movies/mic_0001.mrcs", 100))
    for _ in range(4):
        res = poller.poll()
        assert poller.stream.n_ingested == 0
        assert len(res.waiting) == 100
    assert "truncated" in next(iter(res.waiting.values()))
    with open(stack, "ab") as fh:  # the writer finishes
        fh.write(data[1024 + 50 * D * D * 4 :])
    poller.poll()
    assert poller.stream.n_ingested == 0  # changed since the last poll: wait
    poller.poll()
    assert poller.stream.n_ingested == 100
    got = poller.stream.pool.images(np.arange(100))
    np.testing.assert_array_equal(got, images(100))
    poller.poll()
    assert poller.stream.n_ingested == 100


def test_growing_star_taken_row_by_row_once(poller, tmp_path):
    watch = poller.watcher.root
    write_stack(watch / "Movies" / "stack.mrcs", images(30), APIX)
    star = watch / "particles.star"
    text = star_text(tmp_path, star_table("Movies/stack.mrcs", 30))
    lines = text.splitlines(keepends=True)
    first_row = next(i for i, line in enumerate(lines) if "@Movies" in line)
    counts = []
    # header + 10 rows, then + half a row (being appended), then the rest in two steps
    cuts = [first_row + 10, first_row + 15, None]
    with open(star, "w") as fh:
        fh.write("".join(lines[: cuts[0]]))
    for _ in range(2):
        poller.poll()
    counts.append(poller.stream.n_ingested)
    with open(star, "a") as fh:
        fh.write("".join(lines[cuts[0] : cuts[1]]) + lines[cuts[1]][:12])  # partial row
    for _ in range(2):
        poller.poll()
    counts.append(poller.stream.n_ingested)
    with open(star, "a") as fh:
        fh.write(lines[cuts[1]][12:] + "".join(lines[cuts[1] + 1 :]))
    for _ in range(2):
        poller.poll()
    counts.append(poller.stream.n_ingested)
    assert counts == [10, 15, 30]
    t = poller.stream.pool.table
    assert t[KEY].is_unique
    assert sorted(t["_stack_index"]) == list(range(30))
    # the partial row was read once complete, with its full defocus value
    np.testing.assert_allclose(
        t.sort_values("_stack_index")["rlnDefocusU"], 15000.0 + np.arange(30)
    )


def test_duplicates_temporaries_and_output_folder_ignored(poller, tmp_path):
    watch = poller.watcher.root
    write_stack(watch / "Movies" / "mic_0001.mrcs", images(20), APIX)
    write_star(watch / "Movies" / "mic_0001.star", star_table("Movies/mic_0001.mrcs", 20))
    # the same particles again in a combined file, and a hidden temp file of an atomic writer
    write_star(watch / "all.star", star_table("Movies/mic_0001.mrcs", 20))
    shutil.copy(watch / "all.star", watch / ".all.tmp-123abc.star")
    (watch / "sub").mkdir()
    for _ in range(3):
        poller.poll()
    assert poller.stream.n_ingested == 20
    out = watch / "classified"  # an output folder inside the watched one is not watched
    out.mkdir()
    write_star(out / "particles.star", star_table("Movies/mic_0001.mrcs", 20))
    w = FolderWatcher(watch, exclude=[out])
    assert all(out not in p.parents for p in w.star_files())
    assert not any(p.name.startswith(".") for p in w.star_files())


def test_image_paths_relative_to_the_star_folder(poller, tmp_path):
    """Image names relative to the STAR's own folder (not the watched folder) are found too,
    even when the stack is written after the STAR."""
    watch = poller.watcher.root
    job = watch / "job012"
    job.mkdir()
    write_star(job / "p.star", star_table("stack.mrcs", 5))
    poller.poll()
    assert poller.stream.n_ingested == 0
    write_stack(job / "stack.mrcs", images(5), APIX)
    for _ in range(2):
        poller.poll()
    assert poller.stream.n_ingested == 5
    assert (poller.stream.pool.table["_stack_path"] == str((job / "stack.mrcs").resolve())).all()


def test_done_marker(tmp_path):
    w = FolderWatcher(tmp_path / "not-yet")
    assert w.star_files() == [] and not w.done
    (tmp_path / "not-yet").mkdir()
    (tmp_path / "not-yet" / "DONE").write_text("")
    assert w.done


def test_bad_images_set_aside_once(poller, tmp_path):
    watch = poller.watcher.root
    imgs = images(6)
    imgs[2] = np.nan
    imgs[4] = 1.0
    write_stack(watch / "Movies" / "m.mrcs", imgs, APIX)
    write_star(watch / "Movies" / "m.star", star_table("Movies/m.mrcs", 6))
    for _ in range(4):
        poller.poll()
    s = poller.stream
    assert s.n_ingested == 4 and len(s.rejects) == 2
    assert {r.reason for r in s.rejects} == {
        "image has NaN/Inf pixels",
        "image is constant (std 0)",
    }
    assert s.rejects[0].image_name == "000003@Movies/m.mrcs"
    assert s.rejects[0].source == str(watch / "Movies" / "m.star")
    assert s.rejects[0].row == 2


def test_watch_ends_on_done_and_sets_aside_stacks_never_completed(tmp_path, config_for):
    from cryoclass.io import read_rejects
    from cryoclass.jobs.stream import watch

    watch_dir, out = tmp_path / "w", tmp_path / "out"
    (watch_dir / "Movies").mkdir(parents=True)
    write_stack(watch_dir / "Movies" / "a.mrcs", images(12), APIX)
    write_star(watch_dir / "Movies" / "a.star", star_table("Movies/a.mrcs", 12))
    full = tmp_path / "full.mrcs"
    write_stack(full, images(10, seed=1), APIX)
    (watch_dir / "Movies" / "b.mrcs").write_bytes(full.read_bytes()[: 1024 + 4 * D * D * 4])
    write_star(watch_dir / "Movies" / "b.star", star_table("Movies/b.mrcs", 10))
    (watch_dir / "DONE").write_text("")
    cfg = config_for(0, n_classes=2, n_online_em_iters=2, n_full_iters=1)
    summary = watch(watch_dir, cfg, out, poll_s=0.01)
    assert summary.reason == "done"
    assert (summary.n_ingested, summary.n_processed, summary.n_rejected) == (12, 12, 10)
    rejects = read_rejects(out / "rejects.csv")
    assert len(rejects) == 10 and all("never complete" in r.reason for r in rejects)
