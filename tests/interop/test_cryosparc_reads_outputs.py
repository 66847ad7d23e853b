"""cryosparc-tools reads cryoclass' outputs: particles.cs (Dataset.load) with every particle once,
its stack and index, CTF and 2D alignments matching particles.star; classes.mrcs with
cryosparc.mrc; particles.star with cryosparc.star."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import starfile
from cryosparc import mrc as cs_mrc
from cryosparc import star as cs_star
from cryosparc.dataset import Dataset

from cryoclass.io import read_images

from .helpers import APIX, BOX, K, N


def test_particles_cs(project: Path, job: Path) -> None:
    d = Dataset.load(job / "particles.cs")
    star = starfile.read(job / "particles.star")["particles"]
    assert len(d) == N == len(star)
    assert len(np.unique(d["uid"])) == N
    # same particle, row by row: stack + 0-based index <-> RELION's 1-based index@stack
    idx = np.asarray(d["blob/idx"]) + 1
    names = [f"{i:06d}@{p}" for i, p in zip(idx, d["blob/path"])]
    assert names == list(star["rlnImageName"])
    np.testing.assert_array_equal(np.asarray(d["blob/shape"]), np.full((N, 2), BOX))
    np.testing.assert_allclose(d["blob/psize_A"], APIX)
    np.testing.assert_allclose(d["ctf/df1_A"], star["rlnDefocusU"], rtol=1e-6)
    np.testing.assert_allclose(
        d["ctf/df_angle_rad"], np.radians(star["rlnDefocusAngle"]), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(d["alignments2D/class"]) + 1, star["rlnClassNumber"])
    assert np.asarray(d["alignments2D/class"]).max() < K
    np.testing.assert_allclose(np.degrees(d["alignments2D/pose"]), star["rlnAnglePsi"], atol=1e-4)
    shift_A = np.asarray(d["alignments2D/shift"]) * np.asarray(d["alignments2D/psize_A"])[:, None]
    np.testing.assert_allclose(shift_A[:, 0], star["rlnOriginXAngst"], atol=1e-4)
    np.testing.assert_allclose(shift_A[:, 1], star["rlnOriginYAngst"], atol=1e-4)
    post = np.asarray(d["alignments2D/class_posterior"])
    assert ((post > 0) & (post <= 1 + 1e-6)).all()
    # the images the .cs points to are there (paths relative to the project, as CryoSPARC's)
    first = read_images(project / d["blob/path"][0], [int(d["blob/idx"][0])])
    assert first.shape == (1, BOX, BOX)


def test_class_averages_with_cryosparc_mrc(job: Path) -> None:
    header, data = cs_mrc.read(job / "classes.mrcs")
    np.testing.assert_array_equal(data, mrcfile.read(job / "classes.mrcs"))
    assert data.shape == (K, BOX, BOX) and data.dtype == np.float32
    assert header.xlen / header.nx == APIX  # pixel size as CryoSPARC computes it


def test_particles_star_with_cryosparc_star(job: Path) -> None:
    blocks = cs_star.read(job / "particles.star")
    ours = starfile.read(job / "particles.star")
    assert set(blocks) == {"optics", "particles"}
    p = blocks["particles"]
    assert len(p) == N
    assert list(p["rlnImageName"]) == list(ours["particles"]["rlnImageName"])
    np.testing.assert_allclose(p["rlnAnglePsi"].astype(float), ours["particles"]["rlnAnglePsi"])
    assert float(blocks["optics"]["rlnImagePixelSize"][0]) == APIX
