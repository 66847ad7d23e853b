"""MRC stacks: real stacks, every supported mode, round trips and bad files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoclass.io import (
    InputError,
    open_stack,
    read_images,
    stack_pixel_size_A,
    stack_shape,
    write_stack,
)
from cryoclass.io import stacks as stacks_mod

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _found(patterns: tuple[str, ...]) -> list[str]:
    if not DATA_DIR.is_dir():
        return ["<no data>"]
    return sorted({str(p.relative_to(DATA_DIR)) for pat in patterns for p in DATA_DIR.glob(pat)})


# Particle stacks: every .mrcs, plus the .mrc files that STAR/.cs files use as stacks.
PARTICLE_STACKS = _found(("*/*.mrcs", "cryodrgn/empiar_10076_7.mrc"))
OTHER_MRC = [f for f in _found(("*/*.mrc", "*/*.map")) if f not in PARTICLE_STACKS]
EXPECTED_SHAPES = {
    "aspire/sample.mrcs": (17, 200, 200),
    "cryodrgn/ay19102021_L3_position6_ribo_it09_bin8_1.82A.mrcs": (220, 64, 64),
    "cryodrgn/empiar_10076_7.mrc": (7, 320, 320),
    "cryodrgn/relion31.mrcs": (5, 256, 256),
    "cryojax_trpv1/trpv1_small_stack.mrcs": (10, 48, 48),
}


def _permissive_data(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(path, permissive=True) as mrc:
            return np.array(mrc.data, dtype=np.float32).reshape(
                -1, mrc.data.shape[-2], mrc.data.shape[-1]
            )


@pytest.mark.parametrize("name", PARTICLE_STACKS)
def test_real_particle_stacks_open(data_dir: Path, name: str) -> None:
    path = data_dir / name
    arr = open_stack(path)
    n, d, d2 = arr.shape
    assert d == d2 and n >= 1
    if name in EXPECTED_SHAPES:
        assert arr.shape == EXPECTED_SHAPES[name]
    assert stack_shape(path) == arr.shape
    idx = np.arange(n)[::-1]
    imgs = read_images(path, idx)
    assert imgs.dtype == np.float32 and imgs.shape == (n, d, d)
    assert np.isfinite(imgs).all()
    np.testing.assert_array_equal(imgs, _permissive_data(path)[idx])


@pytest.mark.parametrize("name", OTHER_MRC)
def test_other_real_mrc_files_open_or_fail_cleanly(data_dir: Path, name: str) -> None:
    """Maps open as (n, D, D); the non-square micrograph gives a clear InputError."""
    path = data_dir / name
    try:
        arr = open_stack(path)
    except InputError as err:
        assert str(path) in str(err)
        assert "non-square" in str(err)
        return
    assert arr.ndim == 3 and arr.shape[1] == arr.shape[2]


def test_real_stack_pixel_size(data_dir: Path) -> None:
    assert stack_pixel_size_A(data_dir / "cryojax_trpv1/trpv1_small_stack.mrcs") == pytest.approx(
        4.88, abs=1e-4
    )
    assert stack_pixel_size_A(data_dir / "aspire/sample.mrcs") == 0.0  # unset in the header


@pytest.mark.parametrize(
    "dtype,mode",
    [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6), (np.float16, 12)],
)
def test_supported_modes_read_as_float32(tmp_path: Path, dtype: type, mode: int) -> None:
    rng = np.random.default_rng(mode)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=(4, 16, 16), endpoint=True).astype(dtype)
    else:
        data = rng.normal(size=(4, 16, 16)).astype(dtype)
    path = tmp_path / f"mode{mode}.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
    with mrcfile.open(path, header_only=True) as mrc:
        assert int(mrc.header.mode) == mode
    imgs = read_images(path, [3, 0, 3])
    assert imgs.dtype == np.float32 and imgs.shape == (3, 16, 16)
    np.testing.assert_array_equal(imgs, data[[3, 0, 3]].astype(np.float32))


@pytest.mark.parametrize("dtype,mode", [(np.float32, 2), (np.float16, 12)])
def test_write_stack_round_trip(tmp_path: Path, dtype: type, mode: int) -> None:
    data = np.random.default_rng(1).normal(size=(6, 24, 24)).astype(dtype)
    path = tmp_path / "out.mrcs"
    write_stack(path, data, 1.234, dtype=dtype)
    with mrcfile.open(path) as mrc:
        h = mrc.header
        assert int(h.mode) == mode
        assert int(h.ispg) == 0 and (int(h.nx), int(h.ny), int(h.nz), int(h.mz)) == (24, 24, 6, 1)
        assert mrc.voxel_size.x == pytest.approx(1.234, rel=1e-6)
        assert mrc.voxel_size.y == pytest.approx(1.234, rel=1e-6)
        assert float(h.dmin) == pytest.approx(float(data.min()), rel=1e-3)
        assert float(h.dmax) == pytest.approx(float(data.max()), rel=1e-3)
        assert float(h.dmean) == pytest.approx(float(data.astype(np.float64).mean()), abs=1e-3)
    assert mrcfile.validate(str(path), print_file=io.StringIO())
    np.testing.assert_array_equal(read_images(path, range(6)), data.astype(np.float32))
    assert stack_pixel_size_A(path) == pytest.approx(1.234, rel=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mrcs"]  # no temp files left


def test_single_2d_image_is_a_stack_of_one(tmp_path: Path) -> None:
    path = tmp_path / "one.mrc"
    img = np.arange(64, dtype=np.float32).reshape(8, 8)
    with mrcfile.new(path) as mrc:
        mrc.set_data(img)
    assert open_stack(path).shape == (1, 8, 8)
    np.testing.assert_array_equal(read_images(path, [0])[0], img)
    write_stack(tmp_path / "two.mrc", img, 2.0)
    assert stack_shape(tmp_path / "two.mrc") == (1, 8, 8)


def test_write_stack_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "s.mrcs"
    first = np.ones((2, 8, 8), np.float32)
    write_stack(path, first, 1.0)
    with pytest.raises(ValueError):
        write_stack(path, np.ones((8,), np.float32), 1.0)
    with pytest.raises(ValueError):
        write_stack(path, first, 0.0)
    np.testing.assert_array_equal(read_images(path, [0, 1]), first)
    second = np.full((3, 8, 8), 2.0, np.float32)
    write_stack(path, second, 1.0)  # replaces the file; the cache notices
    np.testing.assert_array_equal(read_images(path, [0, 1, 2]), second)
    assert [p.name for p in tmp_path.iterdir()] == ["s.mrcs"]


def test_missing_stack(tmp_path: Path) -> None:
    path = tmp_path / "nope.mrcs"
    with pytest.raises(InputError, match="not found") as exc:
        open_stack(path)
    assert str(path) in str(exc.value)


def test_index_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "s.mrcs"
    write_stack(path, np.zeros((5, 8, 8), np.float32), 1.0)
    with pytest.raises(
        InputError, match=r"image index 5 \(0-based\) out of range, the stack holds 5 images"
    ) as exc:
        read_images(path, [0, 5])
    assert str(path) in str(exc.value)
    with pytest.raises(InputError, match="out of range"):
        read_images(path, [-1])


def test_truncated_stack(tmp_path: Path) -> None:
    path = tmp_path / "t.mrcs"
    write_stack(path, np.ones((10, 16, 16), np.float32), 1.0)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 16 * 16 * 4 * 3 - 10)
    with pytest.raises(
        InputError, match=r"truncated MRC file: header declares 10 images.*6 complete images"
    ) as exc:
        open_stack(path)
    assert str(path) in str(exc.value)


def test_non_square_images(tmp_path: Path) -> None:
    path = tmp_path / "rect.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((3, 16, 24), np.float32))
    with pytest.raises(InputError, match=r"non-square images \(24x16 px\)") as exc:
        open_stack(path)
    assert str(path) in str(exc.value)


def test_unsupported_mode_complex(tmp_path: Path) -> None:
    path = tmp_path / "complex.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((2, 8, 8), np.complex64))
    with pytest.raises(InputError, match=r"unsupported MRC mode 4 \(complex float32\)") as exc:
        read_images(path, [0])
    assert str(path) in str(exc.value)


def test_not_an_mrc_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.mrcs"
    path.write_bytes(b"hello" * 10)
    with pytest.raises(InputError) as exc:
        open_stack(path)
    assert str(path) in str(exc.value)


def test_stack_without_map_id_opens(tmp_path: Path) -> None:
    """Old RELION stacks lack the 'MAP ' ID (like two shipped real stacks): still readable."""
    path = tmp_path / "old.mrcs"
    data = np.random.default_rng(2).normal(size=(3, 8, 8)).astype(np.float32)
    write_stack(path, data, 1.0)
    with open(path, "r+b") as fh:
        fh.seek(208)
        fh.write(b"\0" * 8)  # wipe map ID + machine stamp
    np.testing.assert_array_equal(read_images(path, [2, 1]), data[[2, 1]])


def test_lru_cache_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stacks_mod, "MAX_OPEN_STACKS", 3)
    arrays = []
    for i in range(8):
        path = tmp_path / f"s{i}.mrcs"
        write_stack(path, np.full((2, 4, 4), float(i), np.float32), 1.0)
        arrays.append(open_stack(path))
        assert len(stacks_mod._cache) <= 3
    assert [float(a[1, 0, 0]) for a in arrays] == [
        float(i) for i in range(8)
    ]  # evicted views stay valid
