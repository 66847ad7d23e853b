"""`cryoclass select`: thresholds, class lists, the dashboard's saved selection, errors."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from cryoclass.cli import _register, app
from cryoclass.io import read_cs_table, read_star
from cryoclass.outputs.selection import read_job_classes, save_selection

_register()
runner = CliRunner()


def _classes_in(path) -> set[int]:
    return set(read_star(path).particles["rlnClassNumber"].unique().tolist())


def test_min_count_threshold(job):
    c = read_job_classes(job, images=False)
    thr = int(c.counts[1])  # keeps classes 1 and 2, not 3
    assert c.counts[2] < thr
    r = runner.invoke(app, ["select", str(job), "--min-count", str(thr)])
    assert r.exit_code == 0, r.output
    out = job / "selected_particles.star"
    assert _classes_in(out) == {1, 2}
    assert len(read_star(out).particles) == int(c.counts[:2].sum())
    assert len(read_cs_table(job / "selected_particles.cs")) == int(c.counts[:2].sum())
    assert f"{int(c.counts[:2].sum())} of {int(c.counts.sum())} particles" in r.output


def test_resolution_threshold_and_lists(job, tmp_path):
    c = read_job_classes(job, images=False)
    best = float(c.resolution_A.min())
    want = {i + 1 for i in np.flatnonzero(c.resolution_A <= best)}
    out = tmp_path / "best.star"
    r = runner.invoke(
        app, ["select", str(job), "--max-res-A", str(best), "--out", str(out), "--no-cs"]
    )
    assert r.exit_code == 0, r.output
    assert _classes_in(out) == want and not out.with_suffix(".cs").exists()
    # a list filtered by a threshold, minus an excluded class
    r = runner.invoke(
        app,
        [
            "select",
            str(job),
            "--classes",
            "1-3",
            "--exclude",
            "2",
            "--min-count",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert _classes_in(out) == {1, 3}


def test_saved_selection(job):
    save_selection(job, good=[2], bad=[1, 3], classes=read_job_classes(job))
    r = runner.invoke(app, ["select", str(job), "--saved"])
    assert r.exit_code == 0, r.output
    assert _classes_in(job / "selected_particles.star") == {2}


def test_errors(job):
    r = runner.invoke(app, ["select", str(job)])
    assert r.exit_code != 0  # nothing chosen
    r = runner.invoke(app, ["select", str(job), "--classes", "7"])
    assert r.exit_code == 2 and "no class 7" in r.output
    r = runner.invoke(app, ["select", str(job), "--min-count", "100000"])
    assert r.exit_code == 2 and "no class selected" in r.output
    r = runner.invoke(app, ["select", str(job), "--saved"])
    assert r.exit_code == 2 and "no saved selection" in r.output
    r = runner.invoke(app, ["select", str(job / "nope"), "--classes", "1"])
    assert r.exit_code == 2
