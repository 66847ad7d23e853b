"""Class selection: thresholds, exports read back with cryoclass' readers, class matching, and
saved selections carried onto renumbered classes."""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass.io import read_cs_table, read_star
from cryoclass.outputs.class_match import match_classes
from cryoclass.outputs.selection import (
    JobClasses,
    OutputsChanging,
    auto_select,
    export_selection,
    load_selection,
    read_job_classes,
    save_selection,
)


def test_auto_select_thresholds():
    c = JobClasses(
        counts=np.array([500, 120, 40, 0]),
        resolution_A=np.array([8.0, 12.0, 7.5, 30]),
        images=None,
        pixel_size_A=1.0,
    )
    assert auto_select(c, min_count=100) == [1, 2]
    assert auto_select(c, max_res_A=10) == [1, 3]
    assert auto_select(c, min_count=100, max_res_A=10) == [1]
    assert auto_select(c, min_count=0) == [1, 2, 3, 4]


def test_read_job_classes_matches_particles(job):
    c = read_job_classes(job)
    stars = read_star(job / "particles.star").particles
    assert c.images.shape == (3, 32, 32)
    assert c.counts.tolist() == np.bincount(stars["rlnClassNumber"] - 1, minlength=3).tolist()
    assert list(c.counts) == sorted(c.counts, reverse=True)  # output order: by count


def test_export_is_the_particles_of_the_chosen_classes(job, tmp_path):
    allp = read_star(job / "particles.star").particles
    allcs = read_cs_table(job / "particles.cs")
    res = export_selection(job, [1, 3], tmp_path / "sel.star", tmp_path / "sel.cs")
    want = allp.loc[allp["rlnClassNumber"].isin([1, 3])].reset_index(drop=True)
    got = read_star(res.star).particles
    assert res.n_particles == len(want) == len(got) > 0
    assert got["rlnImageName"].tolist() == want["rlnImageName"].tolist()
    assert got["rlnClassNumber"].tolist() == want["rlnClassNumber"].tolist()
    np.testing.assert_allclose(got["rlnAnglePsi"], want["rlnAnglePsi"], atol=1e-5)
    np.testing.assert_allclose(got["rlnDefocusU"], want["rlnDefocusU"], atol=1e-3)
    cs = read_cs_table(res.cs)
    want_cs = allcs.loc[allcs["rlnClassNumber"].isin([1, 3])]
    assert cs["rlnImageName"].tolist() == want["rlnImageName"].tolist()
    assert cs["_cs_uid"].tolist() == want_cs["_cs_uid"].tolist()  # same uids as the job's .cs


def test_export_refuses_outputs_that_moved_on_and_unknown_classes(job):
    counts = read_job_classes(job, images=False).counts
    with pytest.raises(OutputsChanging):
        export_selection(job, [1], expected_counts=counts + 1, attempts=1)
    with pytest.raises(ValueError, match="no class 9"):
        export_selection(job, [9])


def test_match_classes_follows_renumbering():
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(5, 16, 16))
    perm = np.array([3, 0, 4, 1, 2])  # new[i] = old[perm[i]]
    new = imgs[perm] + 0.3 * rng.normal(size=imgs.shape)
    new[2] = rng.normal(size=(16, 16))  # class old 4 became something else
    where = match_classes(imgs, new)
    assert where.tolist() == [1, 3, 4, 0, -1]


def test_saved_selection_is_carried_onto_renumbered_classes(job):
    c = read_job_classes(job)
    save_selection(job, good=[1, 3], bad=[2], classes=c)
    assert load_selection(job, c) == ([1, 3], [2])
    perm = np.array([2, 0, 1])  # the job renumbered: new class i+1 = old perm[i]+1
    moved = JobClasses(
        counts=c.counts[perm],
        resolution_A=c.resolution_A[perm],
        images=c.images[perm],
        pixel_size_A=c.pixel_size_A,
    )
    assert load_selection(job, moved) == ([1, 2], [3])  # old 3 -> 1, old 1 -> 2, old 2 -> 3
