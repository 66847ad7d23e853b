"""Bad input in a stream: a row with a CTF value that is absurd or not a number, or an image name
that cannot be parsed, is set aside with its file, row and reason; every other particle of that
micrograph and of the others is classified; a NaN image is set aside too."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import starfile

from cryoclass.config import Config
from cryoclass.io import write_stack
from cryoclass.jobs.stream import watch

from .projects import APIX, BOX, Project


def test_bad_rows_in_a_stream_are_set_aside_and_the_rest_classified(tmp_path: Path) -> None:
    live = Project(tmp_path / "watch")
    live.add_stack("mic_a.mrcs", 20, seed=1)
    live.add_stack("mic_b.mrcs", 20, seed=2)
    live.rows[3]["rlnDefocusU"] = "-15000"
    live.rows[25]["rlnDefocusV"] = "n/a"
    live.rows[30]["rlnImageName"] = "x@Extract/mic_b.mrcs"
    imgs = np.random.default_rng(0).normal(size=(20, BOX, BOX)).astype(np.float32)
    imgs[7, 1, 1] = np.nan
    write_stack(live.folder / "Extract" / "mic_a.mrcs", imgs, APIX)
    rows = live.rows
    live.rows = rows[:20]
    live.write("mic_a.star")  # one STAR file per micrograph, as a pipeline writes them
    live.rows = rows[20:]
    live.write("mic_b.star")
    (live.folder / "DONE").write_text("")
    cfg = Config(
        n_classes=2,
        n_online_em_iters=2,
        batch_size_per_class=5,
        n_full_iters=1,
        max_res_A=8,
        device="cpu",
        remove_duplicates=False,
    )
    out = tmp_path / "out"
    summary = watch(live.folder, cfg, out, poll_s=0.05, max_seconds=120)
    assert summary.reason == "done"
    with open(out / "rejects.csv", newline="") as fh:
        rejects = {(Path(r["source"]).name, int(r["row"])): r["reason"] for r in csv.DictReader(fh)}
    assert set(rejects) == {
        ("mic_a.star", 3),
        ("mic_b.star", 5),
        ("mic_b.star", 10),
        ("mic_a.star", 7),
    }, rejects
    assert rejects[("mic_a.star", 3)].startswith("rlnDefocusU -15000 Å is not a plausible defocus")
    assert rejects[("mic_b.star", 5)] == "rlnDefocusV is not a finite number ('n/a')"
    assert rejects[("mic_b.star", 10)].startswith("cannot parse rlnImageName 'x@Extract/mic_b")
    assert "NaN/Inf" in rejects[("mic_a.star", 7)]
    parts = starfile.read(out / "particles.star")["particles"]
    assert len(parts) == 36 and parts["rlnImageName"].is_unique
    assert summary.n_rejected == 4 and summary.n_processed == 36
