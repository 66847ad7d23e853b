"""`cryoclass classify PARTICLES --classes K --out DIR [options]`."""

from __future__ import annotations

from pathlib import Path

import typer

from cryoclass.cli.options import with_config_options
from cryoclass.cli.progress import console, iteration_progress
from cryoclass.config import Config
from cryoclass.io import InputError


@with_config_options
def command(
    particles: Path = typer.Argument(..., help="Particles: RELION .star or CryoSPARC .cs"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder"),
    project_dir: Path | None = typer.Option(None, help="Folder that image paths are relative "
                                            "to (default: the particle file's folder)"),
    config: Config = None,  # assembled from the options below by with_config_options
) -> None:
    """Batch 2D classification (CryoSPARC-style online EM, then full iterations)."""
    from cryoclass.jobs.classify import classify

    try:
        with iteration_progress("2D classification") as cb:
            _, paths = classify(particles, config, out, project_dir=project_dir, progress=cb)
    except InputError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    for name, p in paths.items():
        console.print(f"{name:15s} {p}")
