"""RELION Class2D outputs as input: a real run of RELION's relion_refine (Debian's RELION 3.1,
240 particles, 3 classes, 2 iterations) is read (run_itNNN_data.star, _model.star,
_classes.mrcs), classified from its classes, re-classified from its data.star and compared."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from cryoclass.io import InputError
from cryoclass.io.relion_class2d import find_class2d_files, read_class_averages, read_relion_class2d
from cryoclass.quality.agreement import class_agreement

from .helpers import APIX, BOX, K, N, need, one_line, run, run_cli

FAST = [
    "-K",
    str(K),
    "--max-res-A",
    "12.5",
    "--batch-size-per-class",
    "20",
    "--device",
    "cpu",
    "--initial-uncertainty-factor",
    "8",
    "--sigma-anneal-start",
    "1",
    "--sigma-anneal-iters",
    "4",
]


@pytest.fixture(scope="session")
def relion_job(project: Path) -> Path:
    """project/Class2D/job001: RELION Class2D, K = 3, 2 iterations (about 2 s)."""
    need("relion_refine")
    job = project / "Class2D" / "job001"
    job.mkdir(parents=True)
    run(
        [
            "relion_refine",
            "--i",
            "particles.star",
            "--o",
            "Class2D/job001/run",
            "--K",
            str(K),
            "--iter",
            "2",
            "--tau2_fudge",
            "2",
            "--particle_diameter",
            "120",
            "--ctf",
            "--zero_mask",
            "--flatten_solvent",
            "--psi_step",
            "12",
            "--offset_range",
            "3",
            "--offset_step",
            "1",
            "--j",
            "1",
            "--pool",
            "10",
            "--dont_combine_weights_via_disc",
            "--random_seed",
            "1",
        ],
        cwd=project,
    )
    return job


def test_read_last_iteration(
    relion_job: Path, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the project folder: found by walking up from the job
    r = read_relion_class2d(relion_job)
    assert r.files.iteration == 2 and r.files.data_star.name == "run_it002_data.star"
    assert r.project_dir.resolve() == project.resolve()
    assert r.classes.shape == (K, BOX, BOX) and r.pixel_size_A == APIX
    np.testing.assert_array_equal(r.classes, mrcfile.read(relion_job / "run_it002_classes.mrcs"))
    assert len(r.class_table) == K
    assert r.class_table["rlnClassDistribution"].sum() == pytest.approx(1.0, abs=1e-3)
    assert len(r.particles) == N and set(r.class_number) <= set(range(1, K + 1))
    assert r.particles.images([0]).shape == (1, BOX, BOX)  # images found via the project
    one = read_relion_class2d(relion_job / "run_it001_model.star", particles=False)
    assert one.files.iteration == 1 and one.particles is None
    assert find_class2d_files(relion_job, iteration=0).iteration == 0


def test_classify_starts_from_relion_classes(
    relion_job: Path, project: Path, tmp_path: Path
) -> None:
    """With no iterations that update the classes, the job's classes are RELION's (masked)."""
    out = tmp_path / "out"
    r = run_cli(
        "classify",
        str(project / "particles.star"),
        "--out",
        str(out),
        *FAST,
        "--init-classes",
        str(relion_job),
        "--n-online-em-iters",
        "0",
        "--n-full-iters",
        "0",
        "--no-sort-classes",
    )
    assert r.exit_code == 0, r.output
    ours = mrcfile.read(out / "classes.mrcs").reshape(K, -1)
    theirs = read_class_averages(relion_job).reshape(K, -1)
    corr = np.corrcoef(ours, theirs)[:K, K:]
    assert (np.diag(corr) > 0.95).all(), np.round(corr, 3)
    # and a real run from them finishes and keeps every particle
    r = run_cli(
        "classify",
        str(project / "particles.star"),
        "--out",
        str(tmp_path / "run"),
        *FAST,
        "--init-classes",
        str(relion_job / "run_it002_classes.mrcs"),
        "--n-online-em-iters",
        "4",
        "--n-full-iters",
        "1",
    )
    assert r.exit_code == 0, r.output
    assert len(starfile.read(tmp_path / "run" / "particles.star")["particles"]) == N


def test_relion_data_star_as_input_and_comparison(
    relion_job: Path, project: Path, job: Path, tmp_path: Path
) -> None:
    data = relion_job / "run_it002_data.star"
    out = tmp_path / "out"
    r = run_cli(
        "classify",
        str(data),
        "--out",
        str(out),
        "--project-dir",
        str(project),
        *FAST,
        "--n-online-em-iters",
        "4",
        "--n-full-iters",
        "1",
    )
    assert r.exit_code == 0, r.output
    ours = starfile.read(out / "particles.star")["particles"]
    theirs = starfile.read(data)["particles"]
    assert len(ours) == N
    agree = class_agreement(ours, theirs)
    assert agree.n_common == agree.n_a == agree.n_b == N
    assert int(agree.counts.to_numpy().sum()) == N
    assert -1.0 <= agree.ari <= 1.0 and set(agree.best_match) <= set(range(1, K + 1))
    same = class_agreement(theirs, theirs)
    assert same.ari == 1.0 and same.best_match == {k: k for k in same.best_match}
    # the same particles named as the input names them (1@ vs 000001@) still match
    first = starfile.read(project / "particles.star")["particles"]
    assert (
        class_agreement(starfile.read(job / "particles.star")["particles"], theirs).n_common
        == len(first)
        == N
    )
    print(f"\nARI cryoclass vs RELION 3.1 (2 iterations): {agree.ari:.2f}")


def test_bad_relion_outputs(relion_job: Path, project: Path, tmp_path: Path) -> None:
    broken = tmp_path / "job"
    shutil.copytree(relion_job, broken)
    (broken / "run_it002_classes.mrcs").unlink()
    with pytest.raises(
        InputError, match="iteration 2 is incomplete: run_it002_classes.mrcs is missing"
    ):
        read_relion_class2d(broken)
    with pytest.raises(InputError, match="no RELION Class2D output"):
        read_relion_class2d(tmp_path)
    with pytest.raises(InputError, match="not a RELION Class2D output name"):
        read_relion_class2d(project / "particles.star")
    shutil.copy(relion_job / "run_it001_classes.mrcs", broken / "run_it002_classes.mrcs")
    model = (broken / "run_it002_model.star").read_text()
    extra = model.replace(
        "000003@Class2D/job001/run_it002_classes.mrcs",
        "000003@Class2D/job001/run_it002_classes.mrcs  0 0 0 0 0 0 0\n"
        "000004@Class2D/job001/run_it002_classes.mrcs",
        1,
    )
    (broken / "run_it002_model.star").write_text(extra)
    with pytest.raises(InputError, match="holds 3 images but model.star lists 4 classes"):
        read_relion_class2d(broken, particles=False)
    r = run_cli(
        "classify",
        str(project / "particles.star"),
        "--out",
        str(tmp_path / "o"),
        *FAST[:0],
        "-K",
        "4",
        "--init-classes",
        str(relion_job),
        "--device",
        "cpu",
    )
    assert r.exit_code == 2
    assert (
        "the initial classes are 3x32x32 (K x D x D) but this job needs 4 classes of 32x32 px"
        in one_line(r.output)
    )
    assert os.path.exists(relion_job / "run_it002_model.star")
