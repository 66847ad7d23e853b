"""RELION's own programs read cryoclass' outputs: relion_star_handler reads every value of
particles.star and selects classes from it, relion_image_handler reads the class averages with
the right pixel size and values, and relion_refine classifies our particles starting from our
class averages."""

from __future__ import annotations

import re
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from .helpers import APIX, BOX, K, N, need, run


def assert_same_table(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Same columns and rows; numbers equal to RELION's printed precision: 6 decimals, but 5
    for a negative number of two integer digits (RELION 3.1 writes -13.651926 as -13.65193),
    so up to 5e-6 off."""
    assert list(theirs.columns) == list(ours.columns)
    assert len(theirs) == len(ours)
    for col in ours.columns:
        a, b = ours[col], theirs[col]
        if pd.api.types.is_numeric_dtype(a):
            np.testing.assert_allclose(
                b.to_numpy(float), a.to_numpy(float), rtol=1e-6, atol=6e-6, err_msg=col
            )
        else:
            assert (a.astype(str).str.strip() == b.astype(str).str.strip()).all(), col


def test_relion_star_handler_reads_every_value(project: Path, job: Path, tmp_path: Path) -> None:
    need("relion_star_handler")
    run(
        [
            "relion_star_handler",
            "--i",
            str(job / "particles.star"),
            "--o",
            str(tmp_path / "copy.star"),
        ],
        cwd=project,
    )
    ours = starfile.read(job / "particles.star")
    theirs = starfile.read(tmp_path / "copy.star")
    assert set(theirs) == {"optics", "particles"}
    assert_same_table(ours["optics"], theirs["optics"])
    assert_same_table(ours["particles"], theirs["particles"])
    assert len(theirs["particles"]) == N


def test_relion_star_handler_selects_each_class(project: Path, job: Path, tmp_path: Path) -> None:
    need("relion_star_handler")
    ours = starfile.read(job / "particles.star")["particles"]
    counts = starfile.read(job / "model.star")["model_classes"]["cryoclassParticleCount"]
    for k in range(1, K + 1):
        sel = tmp_path / f"class{k}.star"
        r = run(
            [
                "relion_star_handler",
                "--i",
                str(job / "particles.star"),
                "--o",
                str(sel),
                "--select",
                "rlnClassNumber",
                "--minval",
                str(k),
                "--maxval",
                str(k),
            ],
            cwd=project,
        )
        want = ours.loc[ours["rlnClassNumber"] == k, "rlnImageName"]
        assert f"with {len(want)} item(s)" in r.stdout
        if len(want):
            got = starfile.read(sel)["particles"]["rlnImageName"]
            assert sorted(got) == sorted(want)
        assert len(want) == counts.iloc[k - 1]


_STATS = re.compile(
    r"(\d+)@\S+ : \(x,y,z,n\)= (\d+) x (\d+) x 1 x 1 ; avg= (\S+) stddev= (\S+) "
    r"minval= (\S+) maxval= (\S+); angpix = (\S+)"
)


def test_relion_image_handler_stats_of_class_averages(project: Path, job: Path) -> None:
    need("relion_image_handler")
    r = run(["relion_image_handler", "--i", str(job / "classes.mrcs"), "--stats"], cwd=project)
    rows = _STATS.findall(r.stdout)
    assert len(rows) == K, r.stdout
    imgs = mrcfile.read(job / "classes.mrcs")
    for k, (i, x, y, avg, sd, lo, hi, apix) in enumerate(rows):
        assert int(i) == k + 1 and int(x) == int(y) == BOX
        assert float(apix) == APIX
        img = imgs[k].astype(np.float64)
        scale = max(abs(img).max(), 1e-6)
        np.testing.assert_allclose(float(avg), img.mean(), atol=1e-5 * scale)
        np.testing.assert_allclose(float(sd), img.std(), rtol=2e-3)  # RELION: n or n-1
        np.testing.assert_allclose(
            [float(lo), float(hi)], [img.min(), img.max()], atol=1e-5 * scale
        )


def test_relion_refine_starts_from_our_model_star(project: Path, job: Path, tmp_path: Path) -> None:
    """RELION Class2D reads particles.star (optics, CTF, poses) and takes model.star as --ref:
    its rlnReferenceImage paths are relative to the project folder, as RELION's own are, and
    each of the K class averages becomes one of RELION's K references."""
    need("relion_refine")
    model = starfile.read(job / "model.star")
    assert (
        model["model_classes"]["rlnReferenceImage"].iloc[0]
        == "000001@Class2D/cryoclass/classes.mrcs"
    )
    out = tmp_path / "relion"
    out.mkdir()
    run(
        [
            "relion_refine",
            "--i",
            str(job / "particles.star"),
            "--ref",
            str(job / "model.star"),
            "--o",
            str(out / "run"),
            "--iter",
            "1",
            "--tau2_fudge",
            "2",
            "--particle_diameter",
            "120",
            "--ctf",
            "--zero_mask",
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
    start = mrcfile.read(out / "run_it000_classes.mrcs")
    ours = mrcfile.read(job / "classes.mrcs")
    assert start.shape == ours.shape == (K, BOX, BOX)
    corr = np.corrcoef(ours.reshape(K, -1), start.reshape(K, -1))[:K, K:]
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-4)
    data = starfile.read(out / "run_it001_data.star")["particles"]
    assert len(data) == N and data["rlnClassNumber"].between(1, K).all()
    general = starfile.read(out / "run_it001_model.star")["model_general"]
    assert float(general["rlnPixelSize"]) == APIX and int(general["rlnNrClasses"]) == K
