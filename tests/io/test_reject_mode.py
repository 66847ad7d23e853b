"""``read_particles(..., on_bad="reject")`` on real files from ../shared/data and on damaged
copies of them: per-particle problems set those particles aside with file, row and reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoclass.io import InputError, read_particles, write_stack


def test_real_duplicates_are_set_aside(data_dir: Path) -> None:
    """cryoDRGN's relion5.star lists two images twice (1@ and 4@toy_images_a.mrcs)."""
    path = data_dir / "cryodrgn/relion5.star"
    ps = read_particles(path, check_images=False, on_bad="reject")
    assert len(ps) == 15 and [r.row for r in ps.rejects] == [11, 14]
    assert ps.rejects[0].source == str(path) and ps.rejects[0].image_name == "1@toy_images_a.mrcs"
    assert ps.rejects[0].reason == (
        "duplicate particle: image 1@toy_images_a.mrcs is also row 0 "
        "(0-based data row); the first one is kept"
    )
    keys = ps.table["_stack_path"] + "@" + ps.table["_stack_index"].astype(str)
    assert keys.is_unique
    assert len(read_particles(path, check_images=False)) == 17  # raise mode: metadata as is


def test_real_metadata_without_stacks_sets_every_particle_aside(data_dir: Path) -> None:
    path = data_dir / "cryodrgn/relion31.6opticsgroups.star"
    ps = read_particles(path, on_bad="reject")
    assert len(ps) == 0 and len(ps.rejects) == 139
    assert all("not found (looked for: " in r.reason for r in ps.rejects)
    assert [r.row for r in ps.rejects] == list(range(139))


def test_damaged_copy_of_real_particles(data_dir: Path, tmp_path: Path) -> None:
    """empiar_10076_7 with one absurd defocus, one index beyond the stack and a NaN image."""
    src = data_dir / "cryodrgn/empiar_10076_7.star"
    text = src.read_text().splitlines()
    rows = [i for i, line in enumerate(text) if "@" in line]
    fields = text[rows[2]].split()
    labels = [line for line in text if line.startswith("_rln")]
    defocus_col = next(i for i, label in enumerate(labels) if label.startswith("_rlnDefocusU"))
    fields[defocus_col] = "-9000.0"
    text[rows[2]] = " ".join(fields)
    text[rows[4]] = text[rows[4]].replace(text[rows[4]].split()[0].split("@")[0] + "@", "8@", 1)
    imgs = read_particles(src).images(np.arange(7))
    imgs[5] = np.nan
    write_stack(tmp_path / "empiar_10076_7.mrc", imgs, 1.31)
    (tmp_path / "p.star").write_text("\n".join(text) + "\n")
    ps = read_particles(tmp_path / "p.star", on_bad="reject").scan_images()
    got = {r.row: r.reason for r in ps.rejects}
    assert set(got) == {2, 4, 5}, got
    assert got[2].startswith("rlnDefocusU -9000 Å is not a plausible defocus")
    assert got[4] == "image index 8 (1-based) out of range, stack empiar_10076_7.mrc holds 7 images"
    assert got[5].endswith("has NaN/Inf pixels")
    assert len(ps) == 4
    with pytest.raises(InputError, match=r"row 4 \(0-based data row\): image index 8"):
        read_particles(tmp_path / "p.star")  # raise mode: the first problem found (stacks first)
