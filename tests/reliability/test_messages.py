"""Every problem named in one line, no traceback, exit codes as the README says (issue 19,
items 5-14): impossible resolution parameters, a 0-row .cs, set-aside counts printed by batch,
pixel size <= 0, defocus in the wrong unit, select --out onto the job's own files, a folder that
cannot be written (exit 3), and the smaller messages of item 14."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from cryosparc.dataset import Dataset

from cryoclass.io import read_particles, write_cs

from .projects import FAST, Project, one_line, run_cli
from .streams import STREAM


def classify(path: Path, out: Path, *extra: str, code: int = 0) -> str:
    r = run_cli("classify", str(path), "--out", str(out), *FAST, *extra)
    assert r.exit_code == code, r.output
    return one_line(r.output)


# ------------------------------------------------------------------ 5: resolution parameters
@pytest.mark.parametrize(
    "extra,flag,value",
    [
        (["--max-res-A", "100"], "--max-res-A", "100"),
        (["--init-res-A", "200"], "--init-res-A", "200"),
    ],
)
def test_resolution_coarser_than_the_box_is_one_line(
    project: Project, tmp_path: Path, extra: list[str], flag: str, value: str
) -> None:
    said = classify(project.write(), tmp_path / "out", *extra, code=2)
    assert (
        f"error: {project.folder / 'particles.star'}: {flag} {value} Å is coarser than "
        "these images allow: it must lie between 4 Å (Nyquist, 2 x 2 Å/px) and 32 Å" in said
    )


def test_fine_pixels_in_a_small_box_name_init_res(project: Project, tmp_path: Path) -> None:
    project.optics[0]["rlnImagePixelSize"] = "0.5"  # box 16 x 0.5 Å = 8 Å < init_res 25 Å
    said = classify(project.write(), tmp_path / "out", "--max-res-A", "2", code=2)
    assert (
        "--init-res-A 25 Å is coarser than these images allow: it must lie between 1 Å" in said
        and "and 8 Å" in said
    )
    r = run_cli(
        "stream",
        str(project.folder),
        "--out",
        str(tmp_path / "s"),
        *STREAM,
        "--max-res-A",
        "2",
        "--idle-timeout",
        "1",
    )
    assert r.exit_code == 2 and "--init-res-A 25 Å is coarser" in one_line(r.output), r.output


# ------------------------------------------------------------------ 6: a .cs with no rows
def test_cs_with_no_rows(project: Project, tmp_path: Path) -> None:
    ps = read_particles(project.write())
    write_cs(tmp_path / "p.cs", ps.table.iloc[:0])
    assert (
        len(Dataset.load(tmp_path / "p.cs")) == 0
        and "blob/shape" in Dataset.load(tmp_path / "p.cs").fields()
    )
    said = classify(tmp_path / "p.cs", tmp_path / "out", code=2)
    assert f"error: {tmp_path / 'p.cs'}: no particles" in said


# ------------------------------------------------------------------ 7: batch says what it set aside
def test_batch_prints_particles_set_aside_by_reason(project: Project, tmp_path: Path) -> None:
    for r in project.rows[:3]:
        r["rlnDefocusU"] = "-5"
    project.rows[5]["rlnDefocusV"] = "n/a"
    said = classify(project.write(), tmp_path / "out")
    assert (
        "4 particles set aside (3 rlnDefocusU is not a plausible defocus, 1 rlnDefocusV is "
        f"not a finite number), listed in {tmp_path / 'out' / 'rejects.csv'}" in said
    ), said
    said = classify(
        Project(project.folder, rows=project.rows[6:]).write("ok.star"), tmp_path / "out2"
    )
    assert "0 particles set aside" in said


# ------------------------------------------------------------------ 8: pixel size <= 0
def test_pixel_size_zero_is_set_aside_not_replaced(project: Project, tmp_path: Path) -> None:
    project.optics.append(
        dict(project.optics[0], rlnOpticsGroup="2", rlnOpticsGroupName="g2", rlnImagePixelSize="0")
    )
    for r in project.rows[:4]:
        r["rlnOpticsGroup"] = "2"
    classify(project.write(), tmp_path / "out")
    rows = (tmp_path / "out" / "rejects.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(
        "rlnImagePixelSize 0 Å (optics group 2) is not a plausible pixel size" in r for r in rows
    )
    ps = read_particles(project.write(), on_bad="reject")
    cs = project.folder / "p.cs"
    t = ps.table.copy()
    t.loc[:1, "rlnImagePixelSize"] = 0.0
    write_cs(cs, t)
    classify(cs, tmp_path / "out_cs")
    rows = (tmp_path / "out_cs" / "rejects.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all("rlnImagePixelSize 0 Å" in r for r in rows)


# ------------------------------------------------------------------ 9: defocus unit
@pytest.mark.parametrize("scale,unit", [(1e-4, "µm"), (0.04, "nm")])
def test_defocus_in_another_unit_is_warned(
    project: Project, tmp_path: Path, scale: float, unit: str
) -> None:
    for r in project.rows:
        r["rlnDefocusU"] = f"{float(r['rlnDefocusU']) * scale:.5g}"
    said = classify(project.write(), tmp_path / "out")
    assert (
        f"warning: {project.folder / 'particles.star'}: rlnDefocusU of 40 of 40 rows "
        "(0-based data rows 0, 1, 2, 3, 4, ...) lies outside 1,000-100,000 Å" in said
    ), said
    assert f"it looks like {unit}" in said


def test_usual_defocus_is_not_warned(project: Project, tmp_path: Path) -> None:
    assert "warning" not in classify(project.write(), tmp_path / "out")


# ------------------------------------------------------------------ 10: select --out
@pytest.mark.parametrize("name", ["particles.star", "model.star", "particles"])
def test_select_refuses_to_overwrite_the_jobs_outputs(
    project: Project, tmp_path: Path, name: str
) -> None:
    job = tmp_path / "job"
    classify(project.write(), job)
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    target = job / name  # 'particles' -> particles.cs beside it
    r = run_cli("select", str(job), "--classes", "1", "--out", str(target))
    assert r.exit_code == 2, r.output
    assert "is one of the job's own files" in one_line(r.output)
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()} == before
    r = run_cli("select", str(job), "--classes", "1", "--out", str(job / "mine.star"))
    assert r.exit_code == 0 and (job / "mine.star").exists(), r.output


# ------------------------------------------------------------------ 13: unwritable output: exit 3
@pytest.mark.parametrize("command", ["classify", "stream"])
def test_unwritable_output_folder_exits_3(
    project: Project, tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    star = project.write()
    out = tmp_path / "readonly"
    out.mkdir()
    real = os.open

    def refuse(path, *args, **kwargs):  # chmod does not stop root: the refusal is simulated
        if str(path).startswith(str(out)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    args = [str(star)] if command == "classify" else [str(project.folder)]
    r = run_cli(
        command,
        *args,
        "--out",
        str(out),
        *(FAST if command == "classify" else STREAM),
        *([] if command == "classify" else ["--idle-timeout", "0"]),
    )
    assert r.exit_code == 3, r.output
    assert "cannot write (Permission denied" in one_line(r.output)


# ------------------------------------------------------------------ 14: the smaller ones
def test_more_classes_than_particles_and_nyquist_are_said(project: Project, tmp_path: Path) -> None:
    said = classify(project.write(), tmp_path / "out", "-K", "50", "--max-res-A", "1")
    assert "warning: 50 classes for 40 particles: at least 10 classes will stay empty" in said
    assert (
        "warning: --max-res-A 1 Å is finer than these images hold (box 16 px at 2 Å/px): "
        "using 4.57 Å" in said
    )
    assert said.count("is finer than") == 1


def test_config_errors_name_the_options(project: Project, tmp_path: Path) -> None:
    said = classify(
        project.write(), tmp_path / "out", "--min-res-A", "6", "--max-res-A", "8", code=2
    )
    assert "error: --min-res-A (6 Å) must be larger than --max-res-A (8 Å)" in said
    assert "pydantic" not in said and "validation error" not in said


def test_reversed_class_range(project: Project, tmp_path: Path) -> None:
    job = tmp_path / "job"
    classify(project.write(), job)
    r = run_cli("select", str(job), "--classes", "5-2")
    assert r.exit_code == 2 and "the range 5-2 is reversed: write 2-5" in one_line(r.output)


def test_cut_short_last_row(project: Project, tmp_path: Path) -> None:
    path = project.write()
    text = path.read_text()
    path.write_text(text[: text.rstrip().rfind("  ")] + "\n")  # the last value is lost
    said = classify(path, tmp_path / "out", code=2)
    assert (
        "row 39 (0-based data row): incomplete row: 7 of 8 values, rlnOpticsGroup missing "
        "(is the file cut short?)" in said
    ), said


def test_negative_poll_and_idle_timeout_refused(tmp_path: Path) -> None:
    for flag in ("--poll", "--idle-timeout"):
        r = run_cli("stream", str(tmp_path), "--out", str(tmp_path / "o"), *FAST, flag, "-1")
        assert r.exit_code == 2 and flag in one_line(r.output), r.output


def test_help_says_what_the_tool_does_and_version() -> None:
    from cryoclass import __version__

    r = run_cli("--help")
    said = one_line(r.output)
    assert r.exit_code == 0 and "2D classification of cryo-EM particle images" in said
    assert "thin module" not in said and "--version" in said
    r = run_cli("--version")
    assert r.exit_code == 0 and r.output.strip() == f"cryoclass {__version__}"


# ------------------------------------------------------------------ more bad inputs a user tried
def test_more_bad_inputs_of_a_new_user(project: Project, tmp_path: Path) -> None:
    import torch

    star = project.write()
    (tmp_path / "afile").write_text("")
    said = classify(star, tmp_path / "afile", code=3)
    assert "afile: cannot write (it is a file, not a folder: choose another --out)" in said
    if not torch.cuda.is_available():
        said = classify(star, tmp_path / "o1", "--device", "cuda", code=2)
        assert "error: --device cuda: no CUDA GPU is available here" in said
    said = classify(star, tmp_path / "o2", "--project-dir", str(tmp_path / "nope"), code=2)
    assert "--project-dir" in said and "no such folder" in said
    said = classify(star, tmp_path / "o3", "--mask-diameter-A", "500", "--resume")
    assert "warning: --mask-diameter-A 500 Å is larger than the box (32 Å): using 28 Å" in said
    assert "warning: --resume: " in said and "holds no interrupted run" in said
    for out in (project.folder, project.folder.parent):
        r = run_cli(
            "stream", str(project.folder), "--out", str(out), *STREAM, "--idle-timeout", "0"
        )
        assert r.exit_code == 2 and "is (or holds) the watched folder" in one_line(r.output)


def test_stack_replaced_by_another_box_after_ingestion(tmp_path: Path) -> None:
    import shutil

    from cryoclass.config import Config
    from cryoclass.stream import FolderWatcher, Stream

    from .streams import add_micrograph

    watch = tmp_path / "w"
    add_micrograph(watch, "mic_a", seed=1)
    add_micrograph(watch, "mic_b", seed=2)
    cfg = Config(
        n_classes=2,
        n_online_em_iters=1,
        n_full_iters=1,
        batch_size_per_class=5,
        max_res_A=8,
        device="cpu",
        remove_duplicates=False,
    )
    fw = FolderWatcher(watch)
    with Stream(cfg, tmp_path / "out") as s:
        for _ in range(2):
            s.ingest(fw.poll(s.known).ready)
            s.update()
        assert s.n_ingested == 40
        other = tmp_path / "other"
        add_micrograph(other, "mic_a", seed=5, box=24)
        shutil.copy(other / "Extract" / "mic_a.mrcs", watch / "Extract" / "mic_a.mrcs")
        s.finish()
        assert s.n_processed == 20 and len(s.rejects) == 20
        assert "stack now holds 24 px images, the stream's are 16 px" in s.rejects[0].reason
