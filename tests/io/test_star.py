"""RELION STAR files: every real file parses, 3.0 conversions, lossless round trips, bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoclass.io import InputError, ParticleSet, read_particles, read_star, write_star

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# What each real STAR file should give. images=False: metadata only (stacks not shipped).
EXPECTED: dict[str, dict[str, Any]] = {
    "aspire/sample_particles_relion30.star": dict(
        n=17, images=True, box=200, psize=5e4 / 37369.207031
    ),
    "aspire/starfile_historic_3800particles.star": dict(
        n=3796, images=False, psize=5e4 / 37369.207031
    ),
    "cryodrgn/FinalRefinement-OriginalParticles-PfCRT.star": dict(
        n=5, images=False, psize=1.035, defaults={"rlnAmplitudeContrast": 0.1}
    ),
    "cryodrgn/empiar_10076_7.star": dict(n=7, images=True, box=320, psize=5e4 / 38168),
    "cryodrgn/relion31.6opticsgroups.star": dict(n=139, images=False, box=196, psize=None),
    "cryodrgn/relion31.star": dict(n=5, images=True, box=256, psize=2.806),
    "cryodrgn/relion31.v2.star": dict(n=5, images=True, box=256, psize=2.806),
    "cryodrgn/relion5.star": dict(n=17, images=False, box=448, psize=0.89),
    "cryodrgn/sta_testing_bin8.star": dict(n=219, images=True, box=64, psize=1.96),
    "cryojax_trpv1/trpv1_small_stack.star": dict(n=10, images=False, box=48, psize=4.88),
    "micrograph_cleaner_em/Ucsf_stack_1142_DW_autopick.star": dict(not_particles=True),
    "relion_tutorial_betagal/mtf_k2_200kV.star": dict(not_particles=True),
    "relion_tutorial_betagal/particles.star": dict(n=1157, images=True, box=64, psize=3.54),
}


def _found() -> list[str]:
    if not DATA_DIR.is_dir():
        return ["<no data>"]
    return sorted(str(p.relative_to(DATA_DIR)) for p in DATA_DIR.glob("*/*.star"))


STAR_FILES = _found()
PARTICLE_STAR_FILES = [f for f in STAR_FILES if not EXPECTED.get(f, {}).get("not_particles")]


def _read(path: Path, exp: dict[str, Any], **kw: Any) -> ParticleSet:
    return read_particles(
        path, check_images=exp.get("images", False), defaults=exp.get("defaults"), **kw
    )


def check_ctf_units(ps: ParticleSet) -> None:
    """CTF parameters in plausible ranges for Å, degrees, kV, mm."""
    t = ps.table
    for col in ("rlnDefocusU", "rlnDefocusV"):
        assert t[col].between(1_000, 60_000).all(), col
    assert t["rlnDefocusAngle"].between(-360, 360).all()
    assert t["rlnVoltage"].between(100, 300).all()
    assert t["rlnSphericalAberration"].between(0, 10).all()
    assert t["rlnAmplitudeContrast"].between(0, 0.5).all()
    assert t["rlnImagePixelSize"].between(0.3, 10).all()
    assert t["rlnPhaseShift"].between(-360, 360).all()
    for col in (
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
        "rlnPhaseShift",
        "rlnCtfBfactor",
    ):
        assert t[col].dtype == np.float64, col
    assert t["rlnOpticsGroup"].dtype == np.int64 and t["rlnImageSize"].dtype == np.int64
    assert t["_stack_index"].dtype == np.int64 and (t["_stack_index"] >= 0).all()
    assert all(Path(p).is_absolute() for p in t["_stack_path"])


@pytest.mark.parametrize("name", STAR_FILES)
def test_every_real_star_file_parses(data_dir: Path, name: str) -> None:
    path = data_dir / name
    exp = EXPECTED.get(name, {})
    if exp.get("not_particles"):
        with pytest.raises(InputError, match="missing required column.*rlnImageName") as exc:
            read_particles(path)
        assert str(path) in str(exc.value)
        return
    ps = _read(path, exp)
    assert len(ps) == exp.get("n", len(ps)) and len(ps) > 0
    check_ctf_units(ps)
    if exp.get("psize"):
        assert ps.pixel_size_A == pytest.approx(exp["psize"], rel=1e-6)
    if exp.get("box"):
        assert ps.box == exp["box"]
    if exp.get("images"):
        assert ps.table["rlnImageSize"].eq(exp["box"]).all()
        imgs = ps.images(np.arange(len(ps)))
        assert imgs.dtype == np.float32 and imgs.shape == (len(ps), exp["box"], exp["box"])
        assert np.isfinite(imgs).all()
    else:
        # metadata only: reading with image checks, or loading an image, names the missing stack
        stack = ps.table["rlnImageName"].iloc[0].split("@")[-1]
        with pytest.raises(InputError, match="not found") as exc:
            read_particles(path, defaults=exp.get("defaults"))
        assert str(path) in str(exc.value) and stack in str(exc.value) and "row 0" in str(exc.value)
        with pytest.raises(InputError, match="not found") as exc:
            ps.images([0])
        assert Path(stack).name in str(exc.value)


@pytest.mark.parametrize("name", PARTICLE_STAR_FILES)
def test_write_read_round_trip_is_lossless(data_dir: Path, tmp_path: Path, name: str) -> None:
    exp = EXPECTED.get(name, {})
    ps = _read(data_dir / name, exp)
    out = tmp_path / "rt.star"
    for optics in (None, ps.optics):
        write_star(out, ps.table, optics=optics)
        back = read_particles(
            out, project_dir=(data_dir / name).parent, check_images=exp.get("images", False)
        )
        for col in ps.table.columns:
            assert col in back.table.columns, col
            assert back.table[col].dtype == ps.table[col].dtype, col
        pd.testing.assert_frame_equal(back.table[ps.table.columns], ps.table, check_exact=True)
        assert back.box == ps.box if exp.get("box") else True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.star"]


def test_written_star_is_relion31(data_dir: Path, tmp_path: Path) -> None:
    ps = read_particles(data_dir / "aspire/sample_particles_relion30.star")
    out = tmp_path / "p.star"
    write_star(out, ps.table)
    text = out.read_text()
    assert "# version 30001\n\ndata_optics" in text and "# version 30001\n\ndata_particles" in text
    blocks = starfile.read(out, always_dict=True)
    assert list(blocks) == ["optics", "particles"]
    optics, particles = blocks["optics"], blocks["particles"]
    assert list(optics.columns[:8]) == [
        "rlnOpticsGroup",
        "rlnOpticsGroupName",
        "rlnAmplitudeContrast",
        "rlnSphericalAberration",
        "rlnVoltage",
        "rlnImagePixelSize",
        "rlnImageSize",
        "rlnImageDimensionality",
    ]
    # sample_particles_relion30.star has 300 kV and 200 kV particles -> two optics groups
    assert sorted(optics["rlnVoltage"]) == [200.0, 300.0]
    assert (optics["rlnImageDimensionality"] == 2).all()
    assert (optics["rlnImageSize"] == 200).all()
    for col in (
        "rlnVoltage",
        "rlnImagePixelSize",
        "rlnImageSize",
        "_stack_path",
        "_stack_index",
        "_source_row",
    ):
        assert col not in particles.columns
    assert "rlnOpticsGroup" in particles.columns and "rlnOriginXAngst" in particles.columns
    assert "rlnOriginX" not in particles.columns and "rlnMagnification" not in particles.columns


def test_relion30_conversions(data_dir: Path) -> None:
    raw = starfile.read(data_dir / "aspire/starfile_historic_3800particles.star")
    ps = read_particles(
        data_dir / "aspire/starfile_historic_3800particles.star", check_images=False
    )
    psize = 5.0 * 1e4 / 37369.207031
    np.testing.assert_allclose(ps.table["rlnImagePixelSize"], psize)
    np.testing.assert_allclose(ps.table["rlnOriginXAngst"], raw["rlnOriginX"] * psize)
    np.testing.assert_allclose(ps.table["rlnOriginYAngst"], raw["rlnOriginY"] * psize)
    assert (ps.table["rlnImageSize"] == 0).all()  # unknown: stacks not shipped
    with pytest.raises(
        InputError, match=r"row 0 .*box size unknown.*stack_0500_cor_DW.mrcs.*not found"
    ):
        _ = ps.box
    assert (ps.table["rlnOpticsGroup"] == 1).all()
    assert (ps.table["rlnImageName"] == raw["rlnImageName"]).all()  # as in the file
    assert ps.table["_stack_index"].iloc[0] == 88  # 000089@... is 1-based
    assert ps.optics is None


def test_relion30_voltage_per_particle_makes_optics_groups(data_dir: Path) -> None:
    ps = read_particles(data_dir / "aspire/sample_particles_relion30.star")
    groups = ps.table.groupby("rlnOpticsGroup")["rlnVoltage"].unique()
    assert sorted(float(v[0]) for v in groups) == [200.0, 300.0]
    assert all(len(v) == 1 for v in groups)


def test_block_order_does_not_matter(data_dir: Path) -> None:
    a = read_particles(data_dir / "cryodrgn/relion31.star")
    b = read_particles(data_dir / "cryodrgn/relion31.v2.star")
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(a.images([0, 4]), b.images([0, 4]))


def test_read_star_merges_every_optics_column(data_dir: Path) -> None:
    content = read_star(data_dir / "cryodrgn/relion31.6opticsgroups.star")
    assert not content.relion30 and len(content.optics) == 6
    t = content.particles
    assert {"rlnBeamTiltX", "rlnOddZernike", "rlnMagMat00", "rlnImagePixelSize"} <= set(t.columns)
    by_group = content.optics.set_index("rlnOpticsGroup")
    for _, row in t.iloc[:20].iterrows():
        assert row["rlnBeamTiltX"] == by_group.loc[row["rlnOpticsGroup"], "rlnBeamTiltX"]


def test_mixed_pixel_sizes_between_optics_groups(data_dir: Path) -> None:
    ps = read_particles(data_dir / "cryodrgn/relion31.6opticsgroups.star", check_images=False)
    assert ps.box == 196
    with pytest.raises(
        InputError,
        match=r"mixed pixel sizes: optics group \d has 1.2[45] Å, optics group \d has 1.2[45] Å",
    ) as exc:
        _ = ps.pixel_size_A
    assert str(data_dir / "cryodrgn/relion31.6opticsgroups.star") in str(exc.value)


def test_trpv1_star_repointed_to_shipped_stack(data_dir: Path, tmp_path: Path) -> None:
    """The shipped STAR names batch_0_restacked.mrc; the same images ship as trpv1_small_stack.mrcs."""
    text = (data_dir / "cryojax_trpv1/trpv1_small_stack.star").read_text()
    star = tmp_path / "trpv1.star"
    star.write_text(text.replace("./batch_0_restacked.mrc", "trpv1_small_stack.mrcs"))
    ps = read_particles(star, project_dir=data_dir / "cryojax_trpv1")
    assert len(ps) == 10 and ps.box == 48 and ps.pixel_size_A == pytest.approx(4.88)
    assert (ps.table["rlnOpticsGroup"] == 7).all()
    check_ctf_units(ps)
    imgs = ps.images(range(10))
    assert imgs.shape == (10, 48, 48) and np.isfinite(imgs).all()


def test_pfcrt_needs_amplitude_contrast(data_dir: Path) -> None:
    path = data_dir / "cryodrgn/FinalRefinement-OriginalParticles-PfCRT.star"
    with pytest.raises(InputError, match="missing required column.*rlnAmplitudeContrast") as exc:
        read_particles(path, check_images=False)
    assert str(path) in str(exc.value)


# ----------------------------------------------------------------------------- bad input


def test_missing_required_column(
    tmp_path: Path, make_star: Callable[..., Path], make_stack: Callable[..., Any]
) -> None:
    make_stack(tmp_path / "s.mrcs")
    star = make_star(tmp_path / "p.star", ["1@s.mrcs", "2@s.mrcs"], drop=["rlnDefocusV"])
    with pytest.raises(InputError, match="missing required column.*rlnDefocusV") as exc:
        read_particles(star)
    assert str(star) in str(exc.value)
    star = make_star(tmp_path / "q.star", ["1@s.mrcs"], drop=["rlnVoltage"])
    with pytest.raises(InputError, match="rlnVoltage.*data_optics or data_particles"):
        read_particles(star)


def test_non_numeric_defocus(
    tmp_path: Path, make_star: Callable[..., Path], make_stack: Callable[..., Any]
) -> None:
    make_stack(tmp_path / "s.mrcs")
    star = make_star(
        tmp_path / "p.star", ["1@s.mrcs", "2@s.mrcs", "3@s.mrcs"], defocus=["15000", "16000", "abc"]
    )
    with pytest.raises(
        InputError,
        match=r"row 2 \(0-based data row\): rlnDefocusU is not a finite number \('abc'\)",
    ) as exc:
        read_particles(star)
    assert str(star) in str(exc.value)


def test_bad_image_name(
    tmp_path: Path, make_star: Callable[..., Path], make_stack: Callable[..., Any]
) -> None:
    make_stack(tmp_path / "s.mrcs")
    star = make_star(tmp_path / "p.star", ["1@s.mrcs", "x@s.mrcs"])
    with pytest.raises(InputError, match=r"row 1 .*cannot parse rlnImageName 'x@s.mrcs'"):
        read_particles(star)
    star = make_star(tmp_path / "q.star", ["0@s.mrcs"])
    with pytest.raises(InputError, match=r"row 0 .*1-based"):
        read_particles(star)


def test_unknown_optics_group(
    tmp_path: Path, make_star: Callable[..., Path], make_stack: Callable[..., Any]
) -> None:
    make_stack(tmp_path / "s.mrcs")
    star = make_star(tmp_path / "p.star", ["1@s.mrcs", "2@s.mrcs"])
    lines = star.read_text().splitlines()
    lines[-1] = lines[-1].rsplit(" ", 1)[0] + " 3"  # last particle -> optics group 3
    star.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"row 1 .*rlnOpticsGroup 3 is not defined in data_optics"):
        read_particles(star)


def test_garbage_star_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.star"
    bad.write_text("this is not a star file\n")
    with pytest.raises(InputError) as exc:
        read_particles(bad)
    assert str(bad) in str(exc.value)
    with pytest.raises(InputError, match="file not found"):
        read_particles(tmp_path / "missing.star")
    with pytest.raises(InputError, match="unsupported particle file type"):
        read_particles(tmp_path / "x.txt")


def test_write_star_rejects_inconsistent_optics_group(data_dir: Path, tmp_path: Path) -> None:
    ps = read_particles(data_dir / "cryodrgn/relion31.star")
    t = ps.table.copy()
    t.loc[2, "rlnVoltage"] = 200.0
    with pytest.raises(InputError, match="optics group 1 has several values of rlnVoltage"):
        write_star(tmp_path / "x.star", t)
    assert not list(tmp_path.iterdir())


def test_write_star_builds_names_and_groups(
    tmp_path: Path, make_star: Callable[..., Path], make_stack: Callable[..., Any]
) -> None:
    make_stack(tmp_path / "s.mrcs")
    star = make_star(tmp_path / "p.star", ["1@s.mrcs", "2@s.mrcs", "3@s.mrcs"], optics=False)
    ps = read_particles(star)
    t = ps.table.copy()
    t.loc[2, "rlnOpticsGroup"] = 4
    out = tmp_path / "o.star"
    write_star(out, t)
    optics = starfile.read(out, always_dict=True)["optics"]
    assert list(optics["rlnOpticsGroup"]) == [1, 4]
    assert list(optics["rlnOpticsGroupName"]) == ["opticsGroup1", "opticsGroup4"]
    back = read_particles(out)
    pd.testing.assert_frame_equal(back.table[t.columns], t)


def test_write_subset_with_given_optics(data_dir: Path, tmp_path: Path) -> None:
    ps = read_particles(data_dir / "cryodrgn/relion31.6opticsgroups.star", check_images=False)
    sub = ps.subset(np.flatnonzero(ps.table["rlnOpticsGroup"].isin([1, 2]).to_numpy()))
    t = sub.table.copy()
    t.loc[0, "rlnMicrographName"] = "with space/mic 1.mrc"
    optics = ps.optics.copy()
    optics["myOpticsNote"] = [f"note{i}" for i in range(len(optics))]
    t["myOpticsNote"] = [
        f"particle{i}" for i in range(len(t))
    ]  # varies within a group: stays per particle
    out = tmp_path / "sub.star"
    write_star(out, t, optics=optics)
    blocks = starfile.read(out, always_dict=True)
    assert len(blocks["optics"]) == 6  # every group of the given optics table is kept
    assert "myOpticsNote" in blocks["particles"].columns
    assert (
        "rlnBeamTiltX" in blocks["optics"].columns
        and "rlnBeamTiltX" not in blocks["particles"].columns
    )
    back = read_particles(out, check_images=False, project_dir=data_dir / "cryodrgn")
    cols = [c for c in t.columns if c != "_source_row"]  # rows are renumbered in the new file
    pd.testing.assert_frame_equal(back.table[cols], t[cols], check_exact=True)
