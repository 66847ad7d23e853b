"""ParticleSet: lazy images, batches, subsets, scanning for bad images, path resolution, bad input."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pytest

from cryoclass.io import InputError, ParticleSet, Reject, read_particles, write_stack, write_star

MakeStar = Callable[..., Path]
MakeStack = Callable[..., Any]


@pytest.fixture
def two_stacks(
    tmp_path: Path, make_star: MakeStar, make_stack: MakeStack
) -> tuple[ParticleSet, np.ndarray, np.ndarray]:
    (tmp_path / "mics").mkdir()
    a = make_stack(tmp_path / "mics" / "a.mrcs", n=4, box=16, seed=1)
    b = make_stack(tmp_path / "mics" / "b.mrcs", n=3, box=16, seed=2)
    names = [f"{i}@mics/a.mrcs" for i in (1, 2, 3, 4)] + [f"{i}@mics/b.mrcs" for i in (3, 2, 1)]
    star = make_star(tmp_path / "p.star", names, box=16)
    return read_particles(star), a, b


def test_images_in_requested_order(two_stacks: tuple[ParticleSet, np.ndarray, np.ndarray]) -> None:
    ps, a, b = two_stacks
    assert len(ps) == 7 and ps.box == 16 and ps.pixel_size_A == pytest.approx(1.5)
    expected_all = np.concatenate([a, b[::-1]])
    np.testing.assert_array_equal(ps.images(np.arange(7)), expected_all)
    idx = [6, 0, 4, 0, 2]
    imgs = ps.images(idx)
    assert imgs.dtype == np.float32 and imgs.shape == (5, 16, 16)
    np.testing.assert_array_equal(imgs, expected_all[idx])
    assert ps.images([]).shape == (0, 16, 16)
    with pytest.raises(IndexError):
        ps.images([7])


def test_iter_batches_and_subset(two_stacks: tuple[ParticleSet, np.ndarray, np.ndarray]) -> None:
    ps, a, b = two_stacks
    seen = []
    for idx, imgs in ps.iter_batches(3):
        assert imgs.shape == (len(idx), 16, 16)
        np.testing.assert_array_equal(imgs, ps.images(idx))
        seen += list(idx)
    assert seen == list(range(7))
    got = [list(i) for i, _ in ps.iter_batches(2, indices=[5, 1, 3])]
    assert got == [[5, 1], [3]]
    ps.rejects.append(Reject("x.star", 9, "1@x.mrcs", "test"))
    sub = ps.subset([5, 1])
    assert len(sub) == 2 and list(sub.table.index) == [0, 1]
    assert list(sub.table["_source_row"]) == [5, 1]
    assert sub.rejects == ps.rejects and sub.rejects is not ps.rejects
    np.testing.assert_array_equal(sub.images([0, 1]), ps.images([5, 1]))
    mask = np.zeros(7, bool)
    mask[[0, 6]] = True
    assert list(ps.subset(mask).table["_source_row"]) == [0, 6]


def test_scan_images_rejects_nan_inf_and_constant(tmp_path: Path, make_star: MakeStar) -> None:
    data = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
    data[1, 3, 4] = np.nan
    data[3, 0, 0] = np.inf
    data[4] = 2.5  # constant
    write_stack(tmp_path / "s.mrcs", data, 1.5)
    star = make_star(tmp_path / "p.star", [f"{i}@s.mrcs" for i in range(1, 7)], box=16)
    ps = read_particles(star)
    calls: list[tuple[int, int]] = []
    clean = ps.scan_images(batch_size=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 6), (6, 6)]
    assert len(clean) == 3 and list(clean.table["_source_row"]) == [0, 2, 5]
    assert [r.row for r in clean.rejects] == [1, 3, 4]
    assert all(r.source == str(star) for r in clean.rejects)
    assert [r.image_name for r in clean.rejects] == ["2@s.mrcs", "4@s.mrcs", "5@s.mrcs"]
    stack = str((tmp_path / "s.mrcs").resolve())
    assert clean.rejects[0].reason == f"image 1 (0-based) of stack {stack} has NaN/Inf pixels"
    assert clean.rejects[1].reason == f"image 3 (0-based) of stack {stack} has NaN/Inf pixels"
    assert (
        clean.rejects[2].reason
        == f"image 4 (0-based) of stack {stack} is constant (std 0, every pixel 2.5)"
    )
    assert len(ps) == 6 and ps.rejects == []  # the input set is untouched
    imgs = clean.images(range(3))
    assert np.isfinite(imgs).all() and (imgs.reshape(3, -1).std(axis=1) > 0).all()


def test_project_dir_and_cwd_resolution(
    tmp_path: Path, make_star: MakeStar, make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "Extract").mkdir(parents=True)
    data = make_stack(project / "Extract" / "s.mrcs", n=2, box=16)
    (project / "Class2D").mkdir()
    star = make_star(
        project / "Class2D" / "p.star", ["1@Extract/s.mrcs", "2@Extract/s.mrcs"], box=16
    )
    with pytest.raises(InputError, match="not found"):
        read_particles(star)  # not next to the STAR, not in the cwd
    ps = read_particles(star, project_dir=project)
    assert ps.table["_stack_path"].iloc[0] == str((project / "Extract" / "s.mrcs").resolve())
    np.testing.assert_array_equal(ps.images([1, 0]), data[[1, 0]])
    monkeypatch.chdir(project)
    ps = read_particles(star)  # fallback: relative to the current directory
    np.testing.assert_array_equal(ps.images([0]), data[[0]])


def test_image_name_without_index_and_format_hint(tmp_path: Path, make_star: MakeStar) -> None:
    img = np.random.default_rng(3).normal(size=(16, 16)).astype(np.float32)
    with mrcfile.new(tmp_path / "single.mrc") as mrc:
        mrc.set_data(img)
    write_stack(tmp_path / "s.mrc", np.stack([img, 2 * img]), 1.5)
    star = make_star(tmp_path / "p.star", ["single.mrc", "2@s.mrc:mrcs"], box=16)
    ps = read_particles(star)
    assert list(ps.table["_stack_index"]) == [0, 1]
    np.testing.assert_array_equal(ps.images([0, 1]), np.stack([img, 2 * img]))


def test_relion30_pixel_size_from_stack_header(tmp_path: Path, make_star: MakeStar) -> None:
    write_stack(tmp_path / "s.mrcs", np.ones((2, 16, 16), np.float32), 2.25)
    star = make_star(
        tmp_path / "p.star",
        ["1@s.mrcs", "2@s.mrcs"],
        optics=False,
        drop=("rlnDetectorPixelSize", "rlnMagnification"),
    )
    ps = read_particles(star)
    assert ps.pixel_size_A == pytest.approx(2.25) and ps.box == 16
    write_stack(tmp_path / "s.mrcs", np.ones((2, 16, 16), np.float32), 1.0)
    with open(tmp_path / "s.mrcs", "r+b") as fh:  # voxel size 0 = unset
        fh.seek(40)
        fh.write(np.zeros(3, "<f4").tobytes())
    with pytest.raises(InputError, match=r"row 0 .*no pixel size") as exc:
        read_particles(star)
    assert str(star) in str(exc.value)


# ----------------------------------------------------------------------------- bad input


def test_image_index_out_of_range(
    tmp_path: Path, make_star: MakeStar, make_stack: MakeStack
) -> None:
    make_stack(tmp_path / "s.mrcs", n=10, box=16)
    star = make_star(tmp_path / "particles.star", ["1@s.mrcs", "10@s.mrcs", "11@s.mrcs"], box=16)
    with pytest.raises(InputError) as exc:
        read_particles(star)
    assert str(exc.value) == (
        f"{star}, row 2 (0-based data row): image index 11 (1-based) out of range, stack s.mrcs holds 10 images"
    )


def test_missing_stack(tmp_path: Path, make_star: MakeStar, make_stack: MakeStack) -> None:
    make_stack(tmp_path / "s.mrcs", n=2, box=16)
    star = make_star(tmp_path / "p.star", ["1@s.mrcs", "1@gone.mrcs"], box=16)
    with pytest.raises(
        InputError, match=r"row 1 \(0-based data row\): image stack gone.mrcs not found"
    ) as exc:
        read_particles(star)
    assert str(star) in str(exc.value) and str(tmp_path / "gone.mrcs") in str(exc.value)
    ps = read_particles(star, check_images=False)
    np.testing.assert_array_equal(ps.images([0]).shape, (1, 16, 16))
    with pytest.raises(InputError, match=r"row 1 .*gone.mrcs.*not found"):
        ps.images([0, 1])


def test_truncated_stack(tmp_path: Path, make_star: MakeStar, make_stack: MakeStack) -> None:
    make_stack(tmp_path / "s.mrcs", n=5, box=16)
    star = make_star(tmp_path / "p.star", ["1@s.mrcs", "5@s.mrcs"], box=16)
    read_particles(star)
    with open(tmp_path / "s.mrcs", "r+b") as fh:
        fh.truncate(1024 + 16 * 16 * 4 * 3)
    with pytest.raises(
        InputError, match=r"row 0 .*image stack s.mrcs: truncated MRC file.*3 complete images"
    ) as exc:
        read_particles(star)
    assert str(star) in str(exc.value)


def test_mixed_box_sizes_between_stacks(
    tmp_path: Path, make_star: MakeStar, make_stack: MakeStack
) -> None:
    make_stack(tmp_path / "a.mrcs", n=2, box=16)
    make_stack(tmp_path / "b.mrcs", n=2, box=24)
    star = make_star(tmp_path / "p.star", ["1@a.mrcs", "2@a.mrcs", "1@b.mrcs"], box=16)
    with pytest.raises(
        InputError,
        match=r"row 2 .*mixed box sizes: stack a.mrcs holds 16x16 px images \(row 0\) "
        r"but stack b.mrcs holds 24x24 px images",
    ) as exc:
        read_particles(star)
    assert str(star) in str(exc.value)
    ps = read_particles(star, check_images=False)  # caught again when loading images
    with pytest.raises(InputError, match="mixed box sizes"):
        ps.images([0, 2])


def test_mixed_box_sizes_between_optics_groups(
    tmp_path: Path, make_star: MakeStar, make_stack: MakeStack
) -> None:
    make_stack(tmp_path / "s.mrcs", n=2, box=16)
    ps = read_particles(make_star(tmp_path / "p.star", ["1@s.mrcs", "2@s.mrcs"], box=16))
    t = ps.table.copy()
    t.loc[1, ["rlnOpticsGroup", "rlnImageSize"]] = [2, 32]
    mixed = ParticleSet(table=t, source=ps.source)
    with pytest.raises(
        InputError,
        match=r"mixed box sizes: optics group 1 has 16 px images, optics group 2 has 32 px",
    ) as exc:
        _ = mixed.box
    assert str(ps.source) in str(exc.value)
    t.loc[1, ["rlnImageSize", "rlnImagePixelSize"]] = [16, 1.2]
    with pytest.raises(
        InputError, match=r"mixed pixel sizes: optics group 1 has 1.5 Å, optics group 2 has 1.2 Å"
    ):
        _ = ParticleSet(table=t, source=ps.source).pixel_size_A


def test_non_square_stack(tmp_path: Path, make_star: MakeStar) -> None:
    with mrcfile.new(tmp_path / "rect.mrcs") as mrc:
        mrc.set_data(np.zeros((2, 16, 20), np.float32))
    star = make_star(tmp_path / "p.star", ["1@rect.mrcs"], box=16)
    with pytest.raises(
        InputError, match=r"row 0 .*image stack rect.mrcs: non-square images \(20x16 px\)"
    ) as exc:
        read_particles(star)
    assert str(star) in str(exc.value)


def test_unsupported_mode_stack(tmp_path: Path, make_star: MakeStar) -> None:
    with mrcfile.new(tmp_path / "c.mrcs") as mrc:
        mrc.set_data(np.zeros((2, 16, 16), np.complex64))
    star = make_star(tmp_path / "p.star", ["1@c.mrcs"], box=16)
    with pytest.raises(InputError, match=r"row 0 .*c.mrcs: unsupported MRC mode 4"):
        read_particles(star)


def test_rlnimagesize_disagrees_with_stack(
    tmp_path: Path, make_star: MakeStar, make_stack: MakeStack
) -> None:
    make_stack(tmp_path / "s.mrcs", n=2, box=16)
    star = make_star(tmp_path / "p.star", ["1@s.mrcs"], box=32)
    with pytest.raises(
        InputError,
        match=r"row 0 .*rlnImageSize 32 px \(optics group 1\) does not match stack s.mrcs",
    ):
        read_particles(star)


def test_input_error_format_and_pickle() -> None:
    err = InputError("image index 205 out of range", file="particles.star", row=17)
    assert str(err) == "particles.star, row 17 (0-based data row): image index 205 out of range"
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.row == 17 and back.file == "particles.star"
    assert str(InputError("plain")) == "plain" and isinstance(err, ValueError)


def test_star_round_trip_after_scan(tmp_path: Path, make_star: MakeStar) -> None:
    data = np.random.default_rng(5).normal(size=(3, 16, 16)).astype(np.float32)
    data[1] = 0.0
    write_stack(tmp_path / "s.mrcs", data, 1.5)
    ps = read_particles(
        make_star(tmp_path / "p.star", ["1@s.mrcs", "2@s.mrcs", "3@s.mrcs"], box=16)
    ).scan_images()
    write_star(tmp_path / "clean.star", ps.table, optics=ps.optics)
    back = read_particles(tmp_path / "clean.star")
    assert list(back.table["rlnImageName"]) == ["1@s.mrcs", "3@s.mrcs"]
    np.testing.assert_array_equal(back.images([0, 1]), data[[0, 2]])


def test_unusable_images_is_the_one_check_of_batch_and_stream() -> None:
    """One check (io.validate) for ``scan_images`` and the stream's ingest: the same images,
    reasons with or without the constant's value; an empty batch has none."""
    from cryoclass.io.validate import unusable_images

    imgs = np.random.default_rng(0).random((5, 4, 4)).astype(np.float32)
    imgs[1, 0, 0], imgs[3], imgs[4, 1, 1] = np.nan, 2.5, -np.inf
    assert unusable_images(imgs) == [
        (1, "has NaN/Inf pixels"),
        (3, "is constant (std 0, every pixel 2.5)"),
        (4, "has NaN/Inf pixels"),
    ]
    assert [w for _, w in unusable_images(imgs, with_value=False)] == [
        "has NaN/Inf pixels",
        "is constant (std 0)",
        "has NaN/Inf pixels",
    ]
    assert unusable_images(imgs[:0]) == []
