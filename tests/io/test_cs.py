"""CryoSPARC .cs files: every real file parses, unit conversions, lossless round trips, bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryosparc.dataset import Dataset

from cryoclass.io import InputError, read_particles, write_cs

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"

EXPECTED: dict[str, dict[str, Any]] = {
    "cryodrgn/empiar_10076_7.cs": dict(n=7, images=True, box=320, psize=1.31, kv=300.0),
    "cryodrgn/cryosparc_J2_particles_exported.cs": dict(
        n=22, images=False, box=300, psize=1.345, kv=300.0
    ),
    "cryodrgn/cryosparc_P12_J24_001_particles.cs": dict(
        n=2019, images=False, box=180, psize=2.95, kv=200.0
    ),
}

CANONICAL = [
    "rlnImageName",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnPhaseShift",
    "rlnCtfBfactor",
    "rlnOpticsGroup",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnImagePixelSize",
    "rlnImageSize",
]


def _found() -> list[str]:
    if not DATA_DIR.is_dir():
        return ["<no data>"]
    return sorted(str(p.relative_to(DATA_DIR)) for p in DATA_DIR.glob("*/*.cs"))


CS_FILES = _found()


@pytest.mark.parametrize("name", CS_FILES)
def test_every_real_cs_file_parses(data_dir: Path, name: str) -> None:
    path = data_dir / name
    exp = EXPECTED.get(name, {})
    ps = read_particles(path, check_images=exp.get("images", False))
    t = ps.table
    assert len(ps) == exp.get("n", len(ps)) and len(ps) > 0
    for col in CANONICAL:
        assert col in t.columns, col
    assert (
        t["rlnDefocusU"].between(1_000, 60_000).all()
        and t["rlnDefocusV"].between(1_000, 60_000).all()
    )
    assert t["rlnDefocusAngle"].between(-180, 180).all()  # degrees, not radians
    assert t["rlnVoltage"].between(100, 300).all()
    assert t["rlnSphericalAberration"].between(0, 10).all()
    assert t["rlnAmplitudeContrast"].between(0, 0.5).all()
    assert t["rlnImagePixelSize"].between(0.3, 10).all()
    assert t["_cs_uid"].dtype == np.uint64 and t["_cs_uid"].is_unique
    if "kv" in exp:
        assert (t["rlnVoltage"] == exp["kv"]).all()
        assert ps.pixel_size_A == pytest.approx(exp["psize"], rel=1e-5)
        assert ps.box == exp["box"]
    if exp.get("images"):
        imgs = ps.images(range(len(ps)))
        assert imgs.dtype == np.float32 and imgs.shape == (len(ps), exp["box"], exp["box"])
        assert np.isfinite(imgs).all()
    else:
        with pytest.raises(InputError, match="not found") as exc:
            read_particles(path)
        assert str(path) in str(exc.value) and "row 0" in str(exc.value)
        with pytest.raises(InputError, match="not found") as exc:
            ps.images([0])
        stack = t["rlnImageName"].iloc[0].split("@", 1)[1]
        assert Path(stack).name in str(exc.value)


def test_cs_matches_star_of_same_particles(data_dir: Path) -> None:
    cs = read_particles(data_dir / "cryodrgn/empiar_10076_7.cs")
    st = read_particles(data_dir / "cryodrgn/empiar_10076_7.star")
    for col in (
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
    ):
        np.testing.assert_allclose(cs.table[col], st.table[col], rtol=1e-5, err_msg=col)
    assert (cs.table["rlnImageSize"] == st.table["rlnImageSize"]).all()
    assert (cs.table["_stack_path"] == st.table["_stack_path"]).all()
    np.testing.assert_array_equal(cs.images(range(7)), st.images(range(7)))


def test_alignments2d_conversion(data_dir: Path) -> None:
    path = data_dir / "cryodrgn/cryosparc_J2_particles_exported.cs"
    raw = Dataset.load(path)
    t = read_particles(path, check_images=False).table
    np.testing.assert_array_equal(t["rlnClassNumber"], np.asarray(raw["alignments2D/class"]) + 1)
    np.testing.assert_allclose(
        t["rlnAnglePsi"], np.degrees(np.asarray(raw["alignments2D/pose"], np.float64))
    )
    shift = np.asarray(raw["alignments2D/shift"], np.float64)
    # float32 psize read as its shortest decimal (1.3450001), not 1.3450001478...
    psize = np.asarray(raw["alignments2D/psize_A"]).astype(str).astype(np.float64)
    assert (psize == 1.3450001).all()
    np.testing.assert_allclose(t["rlnOriginXAngst"], shift[:, 0] * psize)
    np.testing.assert_allclose(t["rlnOriginYAngst"], shift[:, 1] * psize)
    np.testing.assert_allclose(
        t["rlnMaxValueProbDistribution"], np.asarray(raw["alignments2D/class_posterior"])
    )
    np.testing.assert_allclose(
        t["rlnDefocusAngle"], np.degrees(np.asarray(raw["ctf/df_angle_rad"], np.float64))
    )
    # '>' prefix stripped, 0-based blob/idx -> 1-based RELION index
    assert (
        t["rlnImageName"].iloc[1]
        == "000002@J1/imported/000090334788266266069_18jam15b_0345_ali_DW.mrcs"
    )
    assert (t["_stack_index"] == np.asarray(raw["blob/idx"])).all()


@pytest.mark.parametrize("name", CS_FILES)
def test_cs_write_read_round_trip_is_lossless(data_dir: Path, tmp_path: Path, name: str) -> None:
    src = data_dir / name
    ps = read_particles(src, check_images=False)
    out = tmp_path / "rt.cs"
    write_cs(out, ps.table)
    back = read_particles(out, project_dir=src.parent, check_images=False)
    pd.testing.assert_frame_equal(back.table[ps.table.columns], ps.table, check_exact=True)
    assert [p.name for p in tmp_path.iterdir()] == ["rt.cs"]
    raw, new = Dataset.load(src), Dataset.load(out)
    for field in (
        "uid",
        "blob/idx",
        "blob/psize_A",
        "ctf/df1_A",
        "ctf/df2_A",
        "ctf/df_angle_rad",
        "ctf/accel_kv",
        "ctf/cs_mm",
        "ctf/amp_contrast",
        "alignments2D/class",
        "alignments2D/pose",
        "alignments2D/shift",
    ):
        if field in raw.fields():
            np.testing.assert_array_equal(
                np.asarray(new[field]), np.asarray(raw[field]), err_msg=field
            )


def test_star_table_to_cs_and_back(data_dir: Path, tmp_path: Path) -> None:
    st = read_particles(data_dir / "cryodrgn/relion31.star")
    out = tmp_path / "from_star.cs"
    write_cs(out, st.table, extra_fields={"blob/sign": np.full(len(st), -1.0, np.float32)})
    assert "blob/sign" in Dataset.load(out).fields()
    back = read_particles(out, project_dir=data_dir / "cryodrgn")
    for col in CANONICAL + [
        "rlnClassNumber",
        "rlnAnglePsi",
        "rlnOriginXAngst",
        "rlnOriginYAngst",
        "rlnMaxValueProbDistribution",
    ]:
        a, b = back.table[col], st.table[col]
        if a.dtype == np.float64:
            np.testing.assert_allclose(
                a, b, rtol=1e-6, atol=1e-4, err_msg=col
            )  # .cs stores float32
        else:
            assert (a == b).all(), col
        assert a.dtype == b.dtype, col
    np.testing.assert_array_equal(back.images([0, 3]), st.images([0, 3]))


def test_location_fields(tmp_path: Path, make_stack: Callable[..., Any]) -> None:
    make_stack(tmp_path / "parts.mrcs", n=3, box=16)
    n = 3
    d = Dataset.allocate(
        n,
        [
            ("blob/path", "O"),
            ("blob/idx", "<u4"),
            ("blob/shape", "<u4", (2,)),
            ("blob/psize_A", "<f4"),
            ("ctf/accel_kv", "<f4"),
            ("ctf/cs_mm", "<f4"),
            ("ctf/amp_contrast", "<f4"),
            ("ctf/df1_A", "<f4"),
            ("ctf/df2_A", "<f4"),
            ("ctf/df_angle_rad", "<f4"),
            ("ctf/phase_shift_rad", "<f4"),
            ("location/micrograph_path", "O"),
            ("location/center_x_frac", "<f4"),
            ("location/center_y_frac", "<f4"),
            ("location/micrograph_shape", "<u4", (2,)),
        ],
    )
    d["blob/path"] = ">parts.mrcs"
    d["blob/idx"] = np.arange(n, dtype=np.uint32)
    d["blob/shape"] = np.array([[16, 16]] * n, np.uint32)
    d["blob/psize_A"] = 1.5
    d["ctf/accel_kv"], d["ctf/cs_mm"], d["ctf/amp_contrast"] = 300, 2.7, 0.07
    d["ctf/df1_A"], d["ctf/df2_A"], d["ctf/df_angle_rad"] = 12000, 11000, np.pi / 4
    d["ctf/phase_shift_rad"] = np.pi / 2
    d["location/micrograph_path"] = ">J3/motioncorrected/mic_001.mrc"
    d["location/center_x_frac"] = np.array([0.25, 0.5, 0.75], np.float32)
    d["location/center_y_frac"] = np.array([0.1, 0.2, 0.3], np.float32)
    d["location/micrograph_shape"] = np.array([[3000, 4000]] * n, np.uint32)  # [ny, nx]
    src = tmp_path / "J9" / "particles.cs"
    src.parent.mkdir()
    d.save(src)
    ps = read_particles(
        src
    )  # stack path is relative to the project folder (the .cs folder's parent)
    t = ps.table
    np.testing.assert_allclose(
        t["rlnCoordinateX"], np.float32([0.25, 0.5, 0.75]).astype(np.float64) * 4000
    )
    np.testing.assert_allclose(
        t["rlnCoordinateY"], np.float32([0.1, 0.2, 0.3]).astype(np.float64) * 3000
    )
    assert (t["rlnMicrographName"] == "J3/motioncorrected/mic_001.mrc").all()
    assert t["rlnDefocusAngle"].iloc[0] == pytest.approx(45.0) and t["rlnPhaseShift"].iloc[
        0
    ] == pytest.approx(90.0)
    assert (t["rlnCtfBfactor"] == 0).all() and (t["rlnOpticsGroup"] == 1).all()
    out = tmp_path / "J9" / "again.cs"
    write_cs(out, t)
    back = read_particles(out)
    pd.testing.assert_frame_equal(back.table[t.columns], t, check_exact=True)
    new = Dataset.load(out)
    np.testing.assert_array_equal(
        np.asarray(new["location/center_x_frac"]), np.asarray(d["location/center_x_frac"])
    )
    np.testing.assert_array_equal(
        np.asarray(new["location/micrograph_shape"]), np.asarray(d["location/micrograph_shape"])
    )


# ----------------------------------------------------------------------------- bad input


def _minimal_cs(
    path: Path,
    stack: str,
    idx: list[int],
    drop: tuple[str, ...] = (),
    shape: tuple[int, int] = (16, 16),
) -> Path:
    fields = {
        "blob/path": np.array([stack] * len(idx), dtype=object),
        "blob/idx": np.array(idx, np.uint32),
        "blob/shape": np.array([shape] * len(idx), np.uint32),
        "blob/psize_A": np.full(len(idx), 1.5, np.float32),
        "ctf/accel_kv": np.full(len(idx), 300, np.float32),
        "ctf/cs_mm": np.full(len(idx), 2.7, np.float32),
        "ctf/amp_contrast": np.full(len(idx), 0.1, np.float32),
        "ctf/df1_A": np.full(len(idx), 15000, np.float32),
        "ctf/df2_A": np.full(len(idx), 14000, np.float32),
        "ctf/df_angle_rad": np.full(len(idx), 0.5, np.float32),
    }
    Dataset([(k, v) for k, v in fields.items() if k not in drop]).save(path)
    return path


def test_cs_missing_field(tmp_path: Path, make_stack: Callable[..., Any]) -> None:
    make_stack(tmp_path / "s.mrcs", n=3, box=16)
    path = _minimal_cs(tmp_path / "p.cs", "s.mrcs", [0, 1], drop=("ctf/df2_A",))
    with pytest.raises(InputError, match=r"missing required field\(s\) ctf/df2_A") as exc:
        read_particles(path)
    assert str(path) in str(exc.value)


def test_cs_index_out_of_range(tmp_path: Path, make_stack: Callable[..., Any]) -> None:
    make_stack(tmp_path / "s.mrcs", n=3, box=16)
    path = _minimal_cs(tmp_path / "p.cs", "s.mrcs", [0, 2, 3])
    with pytest.raises(
        InputError,
        match=r"row 2 \(0-based data row\): blob/idx 3 \(0-based\) out of range, stack s.mrcs holds 3 images",
    ) as exc:
        read_particles(path)
    assert str(path) in str(exc.value)


def test_cs_non_square_shape(tmp_path: Path, make_stack: Callable[..., Any]) -> None:
    make_stack(tmp_path / "s.mrcs", n=3, box=16)
    path = _minimal_cs(tmp_path / "p.cs", "s.mrcs", [0, 1], shape=(16, 20))
    with pytest.raises(InputError, match=r"row 0 .*non-square"):
        read_particles(path)


def test_cs_box_disagrees_with_stack(tmp_path: Path, make_stack: Callable[..., Any]) -> None:
    make_stack(tmp_path / "s.mrcs", n=3, box=16)
    path = _minimal_cs(tmp_path / "p.cs", "s.mrcs", [0, 1], shape=(32, 32))
    with pytest.raises(
        InputError, match=r"rlnImageSize 32 px .* does not match stack s.mrcs, which holds 16x16 px"
    ):
        read_particles(path)


def test_not_a_cs_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cs"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="cannot read CryoSPARC .cs file") as exc:
        read_particles(bad)
    assert str(bad) in str(exc.value)
