"""`cryoclass select JOB_DIR [--classes 1,3] [--min-count N] [--max-res-A X] [--saved]`: export
the particles of the chosen classes as a RELION STAR and a CryoSPARC .cs.

Classes chosen: those listed with --classes plus those marked good in the dashboard (--saved);
the thresholds (--min-count / --max-res-A) keep those of them that pass, or, given alone, choose
every class that passes; --exclude removes classes.
"""

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from cryoclass.cli.progress import console
from cryoclass.io import InputError
from cryoclass.job_options import EXIT_INPUT


def parse_classes(text: Optional[str]) -> list[int]:
    """'1,3,5-7' -> [1, 3, 5, 6, 7] (1-based class numbers)."""
    if not text:
        return []
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise typer.BadParameter(f"the range {part} is reversed: write {hi}-{lo}")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise typer.BadParameter(f"expected class numbers like 1,3,5-7, got {text!r}") from None
    if any(c < 1 for c in out):
        raise typer.BadParameter("class numbers start at 1")
    return out


def command(
    job_dir: Path = typer.Argument(..., help="Output folder of a classify or stream job"),
    classes: Optional[str] = typer.Option(None, "--classes", help="Classes to keep, e.g. 1,3,5-7"),
    exclude: Optional[str] = typer.Option(None, "--exclude", help="Classes to leave out"),
    min_count: Optional[int] = typer.Option(
        None, "--min-count", min=0, help="Keep classes with at least this many particles"
    ),
    max_res_A: Optional[float] = typer.Option(
        None,
        "--max-res-A",
        min=0.0,
        help="Keep classes with an estimated resolution of this many Å or better",
    ),
    saved: bool = typer.Option(
        False,
        "--saved",
        help="Keep the classes marked good in the dashboard (followed onto the current classes)",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Output STAR path (the .cs goes beside it); default JOB_DIR/selected_particles.star",
    ),
    no_cs: bool = typer.Option(False, "--no-cs", help="Write only the STAR file"),
) -> None:
    """Select 2D classes and export their particles (STAR and .cs)."""
    from cryoclass.outputs.selection import (
        OutputsChanging,
        auto_select,
        export_selection,
        load_selection,
        read_job_classes,
    )

    listed, dropped = parse_classes(classes), set(parse_classes(exclude))
    thresholds = min_count is not None or max_res_A is not None
    if not (listed or thresholds or saved):
        raise typer.BadParameter("choose classes: --classes, --min-count, --max-res-A or --saved")
    try:
        job = read_job_classes(job_dir, images=saved)
        chosen = set(listed)
        if saved:
            marks = load_selection(job_dir, job)
            if marks is None:
                raise InputError(
                    "no saved selection (mark classes in the dashboard first)",
                    file=job_dir / "selection",
                )
            chosen |= set(marks[0])
        if thresholds:
            passing = set(auto_select(job, min_count or 0, max_res_A))
            chosen = (chosen & passing) if (listed or saved) else passing
        chosen -= dropped
        if not chosen:
            console.print("[red]error:[/red] no class selected", highlight=False)
            raise typer.Exit(EXIT_INPUT)
        star = out if out is not None else None
        cs = out.with_suffix(".cs") if out is not None else None
        res = export_selection(job_dir, chosen, star, cs, with_cs=not no_cs)
    except (InputError, OutputsChanging, ValueError, OSError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INPUT) from None
    total = int(job.counts.sum())
    console.print(
        f"selected {len(res.classes)} of {job.counts.size} classes "
        f"({','.join(map(str, res.classes))}): {res.n_particles} of {total} particles",
        highlight=False,
    )
    console.print(f"star {res.star}", soft_wrap=True, highlight=False)
    if res.cs is not None:
        console.print(f"cs   {res.cs}", soft_wrap=True, highlight=False)
