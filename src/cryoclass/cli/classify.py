"""`cryoclass classify PARTICLES --classes K --out DIR [options]`.

Exit codes: 0 done; 2 bad input (the message names the file, the row and the problem); 3 an
output could not be written (disk full, permissions: the previous outputs are intact).
"""

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from cryoclass.cli.options import (
    check_cluster_options,
    cluster_option,
    dashboard_option,
    fail,
    job_option,
    scheduler_option,
    with_config_options,
)
from cryoclass.cli.progress import console, iteration_progress
from cryoclass.config import Config
from cryoclass.io import InputError, OutputError
from cryoclass.job_options import EXIT_INPUT, EXIT_OUTPUT


@with_config_options
def command(
    particles: Path = typer.Argument(..., help="Particles: RELION .star or CryoSPARC .cs"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder"),
    project_dir: Optional[Path] = typer.Option(
        None, help="Folder that image paths are relative to (default: the particle file's folder)"
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the interrupted run in --out "
        "from its last checkpoint (same settings and particles)",
    ),
    init_classes: Optional[Path] = typer.Option(
        None,
        "--init-classes",
        help="Start from these "
        "class averages instead of random subsets: an "
        ".mrcs stack, or a RELION Class2D run_itNNN_*.star "
        "/ job folder (K must match)",
    ),
    cluster: Optional[str] = cluster_option(),
    scheduler: Optional[str] = scheduler_option(),
    dashboard: bool = dashboard_option(),
    dashboard_port: int = job_option("dashboard_port"),
    config: Config = None,  # assembled from the options below by with_config_options
) -> None:
    """Batch 2D classification (CryoSPARC-style online EM, then full iterations)."""
    from cryoclass.jobs.classify import classify

    check_cluster_options(cluster, scheduler)
    if project_dir is not None and not project_dir.is_dir():
        fail(f"--project-dir {project_dir}: no such folder (image paths are looked up there)")
    board = None
    if dashboard:  # imported only when asked for: the web stack costs seconds of start-up
        from cryoclass.dashboard.launch import start_dashboard

        board = start_dashboard(out, dashboard_port, say=console.print)
    try:
        initial = _initial_classes(init_classes, project_dir) if init_classes else None
        with iteration_progress("2D classification") as cb:
            paths = classify(
                particles,
                config,
                out,
                project_dir=project_dir,
                progress=cb,
                resume=resume,
                initial_classes=initial,
                cluster=cluster,
                scheduler=scheduler,
            ).paths
    except InputError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INPUT) from None
    except OSError as err:  # OutputError (disk full ...) or a system error while reading
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_OUTPUT if isinstance(err, OutputError) else EXIT_INPUT) from None
    for name, p in paths.items():
        console.print(f"{name:15s} {p}", soft_wrap=True)
    if "rejects" in paths:
        console.print(set_aside_line(paths["rejects"]), soft_wrap=True, highlight=False)
    if board is not None:
        from cryoclass.dashboard.launch import linger

        linger(board, say=console.print)


def set_aside_line(rejects_csv: Path) -> str:
    """'N particles set aside (counts by reason), listed in rejects.csv'."""
    from cryoclass.io import read_rejects
    from cryoclass.io.rejects import count_reasons

    rejects = read_rejects(rejects_csv)
    if not rejects:
        return "0 particles set aside"
    why = ", ".join(f"{n} {kind}" for kind, n in count_reasons(rejects))
    return f"{len(rejects)} particles set aside ({why}), listed in {rejects_csv}"


def _initial_classes(path: Path, project_dir: Optional[Path]):
    """(K, D, D) class averages from an .mrcs stack or a RELION Class2D output."""
    from cryoclass.io.relion_class2d import read_class_averages

    return read_class_averages(path, project_dir=project_dir)
