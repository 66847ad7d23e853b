"""Bad input through ``cryoclass classify``, end to end.

Per-particle problems (an image out of range, a missing, corrupt or half-written stack, NaN/Inf or
constant images, a wrong type or an absurd CTF value on a row, a particle listed twice): the job
finishes, every bad particle is in rejects.csv with its row and reason, every other particle is
classified, none is lost. Whole-file problems (missing column, unreadable or empty file, mixed
pixel or box sizes): exit code 2, one message naming the file and the problem, no traceback.
"""

from __future__ import annotations

import builtins
import csv
import errno
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import starfile
from cryosparc.dataset import Dataset

from cryoclass.io import write_cs, write_stack

from .projects import APIX, BOX, FAST, OPTICS, Project, one_line, run_cli

N = 40


def rejects_of(out: Path) -> dict[int, str]:
    """rejects.csv as {row: reason}; fails on a row listed twice."""
    with open(out / "rejects.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    got = {int(r["row"]): r["reason"] for r in rows}
    assert len(got) == len(rows), "a particle is listed twice in rejects.csv"
    return got


def classify_ok(project: Project, out: Path) -> tuple[dict[int, str], list[str]]:
    """Run the job (must succeed); return the rejects and the classified image names."""
    star = project.write()
    r = run_cli("classify", str(star), "--out", str(out), *FAST)
    assert r.exit_code == 0, r.output
    parts = starfile.read(out / "particles.star")["particles"]
    return rejects_of(out), list(parts["rlnImageName"])


# --------------------------------------------------------------------------- per particle
def _out_of_range(p: Project) -> dict[int, str]:
    p.rows[5]["rlnImageName"] = "000021@Extract/mic_a.mrcs"
    return {5: r"image index 21 \(1-based\) out of range, stack Extract/mic_a.mrcs holds 20 images"}


def _missing_stack(p: Project) -> dict[int, str]:
    for i in (20, 21, 22):
        p.rows[i]["rlnImageName"] = f"{i:06d}@Extract/gone.mrcs"
    return {
        i: r"image stack Extract/gone.mrcs not found \(looked for: .*gone.mrcs"
        for i in (20, 21, 22)
    }


def _stack_is_a_folder(p: Project) -> dict[int, str]:
    (p.folder / "Extract" / "folder.mrcs").mkdir()
    p.rows[3]["rlnImageName"] = "000001@Extract/folder.mrcs"
    return {3: r"image stack Extract/folder.mrcs not found"}


def _corrupt_stack(p: Project) -> dict[int, str]:
    path = p.folder / "Extract" / "mic_b.mrcs"
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    return {
        i: r"image stack Extract/mic_b.mrcs: (invalid MRC header|unsupported MRC mode|cannot read)"
        for i in range(20, 40)
    }


def _stack_being_written(p: Project) -> dict[int, str]:
    path = p.folder / "Extract" / "mic_b.mrcs"
    with open(path, "r+b") as fh:  # 7 and a half of its 20 images are on disk so far
        fh.truncate(1024 + int(7.5 * BOX * BOX * 4))
    return {
        i: r"image stack Extract/mic_b.mrcs: truncated MRC file: header declares 20 images.*"
        r"7 complete images; damaged, or still being written"
        for i in range(20, 40)
    }


def _bad_pixels(p: Project) -> dict[int, str]:
    path = p.folder / "Extract" / "mic_a.mrcs"
    imgs = np.random.default_rng(3).normal(size=(20, BOX, BOX)).astype(np.float32)
    imgs[3, 4, 5] = np.nan
    imgs[4, 0, 0] = np.inf
    imgs[5] = 0.25
    write_stack(path, imgs, APIX)
    return {
        3: r"image 3 \(0-based\) of stack .*mic_a.mrcs has NaN/Inf pixels",
        4: r"image 4 \(0-based\) of stack .*mic_a.mrcs has NaN/Inf pixels",
        5: r"is constant \(std 0, every pixel 0.25\)",
    }


def _negative_defocus(p: Project) -> dict[int, str]:
    p.rows[7]["rlnDefocusU"] = "-12000"
    return {7: r"rlnDefocusU -12000 Å is not a plausible defocus .*expected 0 < value <= 200000 Å"}


def _zero_voltage_group(p: Project) -> dict[int, str]:
    p.optics.append(
        dict(OPTICS, rlnOpticsGroup="2", rlnOpticsGroupName="opticsGroup2", rlnVoltage="0")
    )
    for i in range(30, 40):
        p.rows[i]["rlnOpticsGroup"] = "2"
    return {
        i: r"rlnVoltage 0 kV \(optics group 2\) is not a plausible acceleration voltage"
        for i in range(30, 40)
    }


def _wrong_types(p: Project) -> dict[int, str]:
    p.rows[9]["rlnDefocusV"] = "abc"
    p.rows[10]["rlnDefocusAngle"] = "nan"
    return {
        9: r"rlnDefocusV is not a finite number \('abc'\)",
        10: r"rlnDefocusAngle is not a finite number",
    }


def _duplicate(p: Project) -> dict[int, str]:
    p.rows.append(dict(p.rows[2]))
    return {
        N: r"duplicate particle: image 000003@Extract/mic_a.mrcs is also row 2 "
        r"\(0-based data row\); the first one is kept"
    }


def _bad_image_name(p: Project) -> dict[int, str]:
    p.rows[11]["rlnImageName"] = "x@Extract/mic_a.mrcs"
    return {11: r"cannot parse rlnImageName 'x@Extract/mic_a.mrcs'"}


PER_PARTICLE: dict[str, Callable[[Project], dict[int, str]]] = {
    "image index out of range": _out_of_range,
    "missing stack": _missing_stack,
    "stack path is a folder": _stack_is_a_folder,
    "corrupt stack": _corrupt_stack,
    "stack still being written": _stack_being_written,
    "NaN/Inf and constant images": _bad_pixels,
    "negative defocus": _negative_defocus,
    "zero voltage in one optics group": _zero_voltage_group,
    "wrong types": _wrong_types,
    "duplicated particle": _duplicate,
    "unparsable image name": _bad_image_name,
}


@pytest.mark.parametrize("case", list(PER_PARTICLE))
def test_bad_particles_are_set_aside_and_the_job_goes_on(
    case: str, project: Project, tmp_path: Path
) -> None:
    expected = PER_PARTICLE[case](project)
    names = [r["rlnImageName"] for r in project.rows]
    rejects, classified = classify_ok(project, tmp_path / "out")
    assert set(rejects) == set(expected), f"{case}: rejected rows {sorted(rejects)}"
    for row, pattern in expected.items():
        assert re.search(pattern, rejects[row]), (row, rejects[row])
    # nothing lost, nothing twice: classified + set aside = every row of the input
    kept = [n for i, n in enumerate(names) if i not in expected]
    assert sorted(classified) == sorted(kept)
    assert len(classified) + len(rejects) == len(names)


# --------------------------------------------------------------------------- whole file
def _fail(project_or_path: Project | Path, out: Path, *extra: str) -> str:
    path = project_or_path.write() if isinstance(project_or_path, Project) else project_or_path
    r = run_cli("classify", str(path), "--out", str(out), *FAST, *extra)
    assert r.exit_code == 2, r.output
    text = one_line(r.output)
    assert "error:" in text and "Traceback" not in text
    return text


def test_missing_particle_column(project: Project, tmp_path: Path) -> None:
    for r in project.rows:
        del r["rlnDefocusV"]
    msg = _fail(project, tmp_path / "out")
    assert f"{project.folder / 'particles.star'}: missing required column(s) rlnDefocusV" in msg


def test_missing_optics_column(project: Project, tmp_path: Path) -> None:
    del project.optics[0]["rlnVoltage"]
    msg = _fail(project, tmp_path / "out")
    assert (
        "particles.star: missing required column(s) rlnVoltage (looked in data_optics or "
        "data_particles)" in msg
    )


def test_unknown_optics_group(project: Project, tmp_path: Path) -> None:
    project.rows[4]["rlnOpticsGroup"] = "one"
    msg = _fail(project, tmp_path / "out")
    assert (
        "particles.star, row 4 (0-based data row): rlnOpticsGroup 'one' is not defined in "
        "data_optics" in msg
    )


@pytest.mark.parametrize("what", ["pixel", "box"])
def test_optics_groups_disagree(what: str, project: Project, tmp_path: Path) -> None:
    if what == "pixel":
        project.optics.append(dict(OPTICS, rlnOpticsGroup="2", rlnImagePixelSize="2.5"))
        expected = "mixed pixel sizes: optics group 1 has 2 Å, optics group 2 has 2.5 Å"
    else:
        project.add_stack("big.mrcs", 10, seed=4, box=24)
        project.optics.append(dict(OPTICS, rlnOpticsGroup="2", rlnImageSize="24"))
        expected = (
            "mixed box sizes: stack Extract/mic_a.mrcs holds 16x16 px images (row 0) but "
            "stack Extract/big.mrcs holds 24x24 px images"
        )
    for r in project.rows[30:]:
        r["rlnOpticsGroup"] = "2"
    msg = _fail(project, tmp_path / "out")
    assert expected in msg and "particles.star" in msg


def test_every_particle_bad(project: Project, tmp_path: Path) -> None:
    for name in ("mic_a.mrcs", "mic_b.mrcs"):
        write_stack(project.folder / "Extract" / name, np.zeros((20, BOX, BOX), np.float32), APIX)
    msg = _fail(project, tmp_path / "out")
    assert "no usable particles: all 40 were set aside (" in msg
    assert str(tmp_path / "out" / "rejects.csv") in msg
    assert len(rejects_of(tmp_path / "out")) == 40


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "folder",
        "empty",
        "header only",
        "garbage",
        "unreadable",
        "empty .cs",
        "bad extension",
    ],
)
def test_unusable_particle_file(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / (
        "p.cs" if case == "empty .cs" else "p.txt" if case == "bad extension" else "p.star"
    )
    expected = {
        "missing": "p.star: file not found",
        "folder": "p.star: is a folder, not a particle file",
        "empty": "p.star: empty file (0 bytes; still being written?)",
        "header only": "p.star: no particles: the particle table has no rows (empty input)",
        "garbage": "p.star: no data blocks found (not a STAR file?)",
        "unreadable": "p.star: cannot read file (Permission denied)",
        "empty .cs": "p.cs: no particles: the particle table has no rows (empty input)",
        "bad extension": "p.txt: unsupported particle file type '.txt' (expected .star or .cs)",
    }[case]
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "header only":
        path.write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n")
    elif case == "garbage":
        path.write_bytes(np.random.default_rng(1).bytes(3000))
    elif case == "unreadable":  # chmod 000 does not stop root, so the OS refusal is simulated
        path.write_text("data_particles\n")
        real_open = builtins.open

        def refuse(file, *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refuse)
    elif case == "empty .cs":
        write_cs(path, _empty_table())
        assert len(Dataset.load(path)) == 0
    elif case == "bad extension":
        path.write_text("x")
    msg = _fail(path, tmp_path / "out")
    assert expected in msg, msg


def _empty_table():
    import pandas as pd

    cols = [
        "rlnImageName",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
    ]
    return pd.DataFrame(
        {c: pd.Series([], dtype=str if c == "rlnImageName" else float) for c in cols}
    )


def test_cs_with_missing_field(project: Project, tmp_path: Path) -> None:
    from cryoclass.io import read_particles

    ps = read_particles(project.write())
    write_cs(tmp_path / "p.cs", ps.table)
    d = Dataset.load(tmp_path / "p.cs")
    d.drop_fields(["ctf/df2_A"])
    d.save(tmp_path / "p.cs")
    msg = _fail(tmp_path / "p.cs", tmp_path / "out")
    assert "p.cs: missing required field(s) ctf/df2_A in the .cs file" in msg


def test_real_process_exit_code_and_message(tmp_path: Path) -> None:
    """The installed entry point: exit code 2, the message on stderr, no traceback."""
    missing = tmp_path / "nope.star"
    cmd = [
        sys.executable,
        "-m",
        "cryoclass.cli",
        "classify",
        str(missing),
        "--out",
        str(tmp_path / "out"),
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="300")
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    assert f"error: {missing}: file not found" in one_line(r.stderr)
