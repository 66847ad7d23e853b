"""`cryoclass demo`: simulate a small membrane-protein data set and classify it."""

from __future__ import annotations

from pathlib import Path

import typer

from cryoclass.cli.progress import console, iteration_progress


def command(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder"),
    n: int = typer.Option(2000, help="Particles to simulate"),
    classes: int = typer.Option(10, "--classes", "-K", help="Number of classes"),
    seed: int = typer.Option(0, help="Random seed"),
) -> None:
    """Simulate a small data set (built-in phantom) and classify it; writes a gallery."""
    from cryoclass.demo import run_demo

    with iteration_progress("demo") as cb:
        summary = run_demo(out, n_particles=n, n_classes=classes, seed=seed, progress=cb)
    for k, v in summary.items():
        console.print(f"{k:22s} {v}")
