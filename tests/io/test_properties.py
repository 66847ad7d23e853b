"""Property-based tests (hypothesis) of the STAR and CryoSPARC .cs readers and writers.

* Any valid particle table survives write -> read exactly: every float bit for bit, every integer
  and every string (also strings that look like numbers), any number of optics groups.
* Any valid .cs dataset survives read -> write -> read: every field bit for bit.
* Invalid input fails with an :class:`InputError` naming the file (and the row, for one bad value)
  and never with another exception: a missing required column or field, a value that is not a
  number or is absurd, truncated or arbitrary bytes.
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryosparc.dataset import Dataset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cryoclass.io import InputError, read_particles, write_cs, write_star
from cryoclass.io.columns import REQUIRED_COLUMNS
from cryoclass.io.cs import REQUIRED_FIELDS, read_cs_table

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_FIRST = string.ascii_letters
_REST = string.ascii_letters + string.digits + "_-."
#: Text values as RELION writes them: no white space or quotes, not starting like a label.
words = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(_REST, max_size=12))
numeric_words = st.integers(0, 10**6).map(str)
stack_names = st.lists(words, min_size=1, max_size=3).map(lambda p: "/".join(p) + ".mrcs")


def finite(
    lo: float, hi: float, *, exclude_min: bool = False, exclude_max: bool = False, width: int = 64
) -> st.SearchStrategy[float]:
    return st.floats(
        lo,
        hi,
        allow_nan=False,
        allow_infinity=False,
        exclude_min=exclude_min,
        exclude_max=exclude_max,
        width=width,
    )


@st.composite
def particle_tables(draw, width: int = 64) -> pd.DataFrame:
    """A valid canonical-style particle table: 1-25 particles, 1-3 optics groups, CTF values in
    their plausible ranges (any float there), extra float, int and text columns."""
    n = draw(st.integers(1, 25))
    n_groups = draw(st.integers(1, 3))
    groups = draw(st.lists(st.integers(1, n_groups), min_size=n, max_size=n))
    optics = {
        g: dict(
            rlnVoltage=draw(finite(0, 1000, exclude_min=True, width=width)),
            rlnSphericalAberration=draw(finite(0, 20, width=width)),
            rlnAmplitudeContrast=draw(finite(0, 1, exclude_max=True, width=width)),
            rlnImagePixelSize=draw(finite(0.0625, 1000, width=width)),
            rlnImageSize=draw(st.integers(2, 1024)),
        )
        for g in range(1, n_groups + 1)
    }
    stacks = draw(st.lists(stack_names, min_size=1, max_size=4, unique=True))
    names = [f"{draw(st.integers(1, 99999)):06d}@{draw(st.sampled_from(stacks))}" for _ in range(n)]
    assume(len(set(names)) == n)
    col = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    t = pd.DataFrame(
        {
            "rlnImageName": names,
            "rlnMicrographName": col(st.one_of(words, numeric_words)),
            "rlnCoordinateX": col(finite(-1e6, 1e6, width=width)),
            "rlnDefocusU": col(finite(0, 200_000, exclude_min=True, width=width)),
            "rlnDefocusV": col(finite(0, 200_000, exclude_min=True, width=width)),
            "rlnDefocusAngle": col(finite(-360, 360, width=width)),
            "rlnPhaseShift": col(finite(-180, 180, width=width)),
            "rlnCtfBfactor": col(finite(-1e4, 1e4, width=width)),
            "rlnAnglePsi": col(finite(-180, 180, width=width)),
            "rlnClassNumber": col(st.integers(1, 500)),
            "rlnOpticsGroup": groups,
        }
    )
    for c in (
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
        "rlnImageSize",
    ):
        t[c] = [optics[g][c] for g in groups]
    return t


@contextmanager
def _tmp() -> Iterator[Path]:
    """A fresh folder per example (hypothesis reruns a test many times in one tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="cryoclass-prop-") as d:
        yield Path(d)


# --------------------------------------------------------------------------- STAR
@SETTINGS
@given(table=particle_tables())
def test_star_round_trip_is_lossless(table: pd.DataFrame) -> None:
    with _tmp() as folder:
        write_star(folder / "p.star", table)
        back = read_particles(folder / "p.star", check_images=False).table
        pd.testing.assert_frame_equal(
            back[table.columns], table, check_exact=True, check_dtype=False
        )
        for c in table.columns:  # dtypes as read: text stays text, numbers come back as numbers
            if c in ("rlnImageName", "rlnMicrographName"):
                assert back[c].map(type).eq(str).all(), c
            else:
                assert pd.api.types.is_numeric_dtype(back[c]), c
        write_star(folder / "again.star", back)  # and the canonical table round-trips too
        again = read_particles(folder / "again.star", check_images=False).table
        cols = [c for c in back.columns if c != "_stack_path"]
        pd.testing.assert_frame_equal(again[cols], back[cols], check_exact=True)


def _star_text(table: pd.DataFrame) -> str:
    """The table as a RELION 3.0-style single block, every value as text."""
    lines = ["data_", "", "loop_"] + [f"_{c} #{i + 1}" for i, c in enumerate(table.columns)]
    lines += ["  ".join(map(str, row)) for row in table.astype(object).itertuples(index=False)]
    return "\n".join(lines) + "\n"


@SETTINGS
@given(table=particle_tables(), data=st.data())
def test_star_missing_required_column_is_named(table: pd.DataFrame, data) -> None:
    missing = data.draw(st.sampled_from(REQUIRED_COLUMNS))
    with _tmp() as folder:
        (folder / "p.star").write_text(_star_text(table.drop(columns=[missing])))
        with pytest.raises(InputError) as exc:
            read_particles(folder / "p.star", check_images=False)
        assert str(folder / "p.star") in str(exc.value)
        assert f"missing required column(s) {missing}" in str(exc.value)


BAD_VALUES = {
    "rlnDefocusU": st.one_of(finite(-1e5, 0), st.sampled_from(["abc", "nan", "inf", "1e400"])),
    "rlnDefocusV": st.sampled_from(["-1", "0", "x1", "--"]),
    "rlnDefocusAngle": st.sampled_from(["nan", "deg", "inf"]),
    "rlnVoltage": st.one_of(finite(-1e3, 0), finite(1000, 1e9, exclude_min=True)),
    "rlnSphericalAberration": finite(-100, 0, exclude_max=True),
    "rlnAmplitudeContrast": st.one_of(finite(1, 10), finite(-1, 0, exclude_max=True)),
}


@SETTINGS
@given(table=particle_tables(), data=st.data())
def test_star_bad_value_names_file_row_and_column(table: pd.DataFrame, data) -> None:
    col = data.draw(st.sampled_from(sorted(BAD_VALUES)))
    row = data.draw(st.integers(0, len(table) - 1))
    bad = table.astype(object)
    bad.loc[row, col] = data.draw(BAD_VALUES[col])
    with _tmp() as folder:
        (folder / "p.star").write_text(_star_text(bad))
        with pytest.raises(InputError) as exc:
            read_particles(folder / "p.star", check_images=False)
        msg = str(exc.value)
        assert msg.startswith(f"{folder / 'p.star'}, row {row} (0-based data row): {col} "), msg
        # the same file, with bad particles set aside: exactly that row goes, with the same reason
        ps = read_particles(folder / "p.star", check_images=False, on_bad="reject")
        assert [r.row for r in ps.rejects] == [row] and len(ps) == len(table) - 1
        assert msg.endswith(ps.rejects[0].reason)


@settings(max_examples=60, deadline=None)
@given(blob=st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode)))
def test_arbitrary_bytes_fail_with_input_error_only(blob: bytes) -> None:
    with _tmp() as folder:
        for name in ("p.star", "p.cs"):
            (folder / name).write_bytes(blob)
            with pytest.raises(InputError) as exc:
                read_particles(folder / name, check_images=False)
            assert str(folder / name) in str(exc.value)


@SETTINGS
@given(table=particle_tables(), cut=st.floats(0.05, 0.95))
def test_truncated_star_reads_or_fails_cleanly(table: pd.DataFrame, cut: float) -> None:
    """A STAR file cut anywhere (a copy in progress) gives a clear error or fewer whole rows."""
    with _tmp() as folder:
        write_star(folder / "full.star", table)
        data = (folder / "full.star").read_bytes()
        (folder / "p.star").write_bytes(data[: int(len(data) * cut)])
        try:
            ps = read_particles(folder / "p.star", check_images=False, on_bad="reject")
        except InputError as err:
            assert str(folder / "p.star") in str(err)
            return
        whole = len(ps) + len(ps.rejects)
        assert whole <= len(table)
        kept = ps.table["_source_row"].to_numpy()
        pd.testing.assert_series_equal(
            ps.table["rlnImageName"],
            table["rlnImageName"].iloc[kept].reset_index(drop=True),
            check_names=False,
        )


# --------------------------------------------------------------------------- CryoSPARC .cs
@st.composite
def cs_datasets(draw) -> Dataset:
    """A valid CryoSPARC particle dataset as cryosparc-tools stores it (float32 values)."""
    t = draw(particle_tables(width=32))
    n = len(t)
    f32 = lambda lo, hi: np.asarray(  # noqa: E731
        draw(
            st.lists(
                finite(lo, hi, width=32),
                min_size=n,
                max_size=n,
            )
        ),
        np.float32,
    )
    paths = t["rlnImageName"].str.split("@").str[1].to_numpy(dtype=object)
    fields = [
        (
            "uid",
            np.asarray(
                draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n, unique=True)),
                np.uint64,
            ),
        ),
        ("blob/path", paths),
        (
            "blob/idx",
            np.asarray(draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n)), np.uint32),
        ),
        ("blob/shape", np.repeat(t["rlnImageSize"].to_numpy(np.uint32)[:, None], 2, axis=1)),
        ("blob/psize_A", t["rlnImagePixelSize"].to_numpy(np.float32)),
        ("ctf/accel_kv", t["rlnVoltage"].to_numpy(np.float32)),
        ("ctf/cs_mm", t["rlnSphericalAberration"].to_numpy(np.float32)),
        ("ctf/amp_contrast", t["rlnAmplitudeContrast"].to_numpy(np.float32)),
        ("ctf/df1_A", t["rlnDefocusU"].to_numpy(np.float32)),
        ("ctf/df2_A", t["rlnDefocusV"].to_numpy(np.float32)),
        ("ctf/df_angle_rad", f32(-6.25, 6.25)),
        ("ctf/phase_shift_rad", f32(-3.25, 3.25)),
        ("ctf/bfactor", f32(-1e4, 1e4)),
        ("ctf/exp_group_id", (t["rlnOpticsGroup"].to_numpy() - 1).astype(np.uint32)),
        ("alignments2D/class", (t["rlnClassNumber"].to_numpy() - 1).astype(np.uint32)),
        ("alignments2D/pose", f32(-3.25, 3.25)),
        ("alignments2D/shift", np.stack([f32(-50, 50), f32(-50, 50)], axis=1)),
        ("alignments2D/psize_A", t["rlnImagePixelSize"].to_numpy(np.float32)),
    ]
    return Dataset(fields)


@SETTINGS
@given(dset=cs_datasets())
def test_cs_round_trip_is_lossless(dset: Dataset) -> None:
    with _tmp() as folder:
        dset.save(folder / "in.cs")
        table = read_particles(folder / "in.cs", check_images=False).table
        write_cs(folder / "out.cs", table)
        back = Dataset.load(folder / "out.cs")
        for f in dset.fields():
            a, b = np.asarray(dset[f]), np.asarray(back[f])
            if a.dtype == object:
                assert list(a) == list(b), f
            else:
                np.testing.assert_array_equal(b, a, err_msg=f)
                assert b.dtype == a.dtype, f
        again = read_particles(folder / "out.cs", check_images=False).table
        pd.testing.assert_frame_equal(again[table.columns], table, check_exact=True)


@SETTINGS
@given(dset=cs_datasets(), data=st.data())
def test_cs_missing_field_is_named(dset: Dataset, data) -> None:
    field = data.draw(st.sampled_from(REQUIRED_FIELDS))
    with _tmp() as folder:
        dset.drop_fields([field])
        dset.save(folder / "p.cs")
        with pytest.raises(InputError) as exc:
            read_cs_table(folder / "p.cs")
        assert (
            str(exc.value)
            == f"{folder / 'p.cs'}: missing required field(s) {field} in the .cs file"
        )


@SETTINGS
@given(dset=cs_datasets(), cut=st.floats(0.0, 0.99))
def test_truncated_cs_fails_cleanly(dset: Dataset, cut: float) -> None:
    with _tmp() as folder:
        dset.save(folder / "full.cs")
        data = (folder / "full.cs").read_bytes()
        (folder / "p.cs").write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(InputError) as exc:
            read_particles(folder / "p.cs", check_images=False)
        assert str(folder / "p.cs") in str(exc.value)
