"""``cryoclass simulate``: write a simulated particle data set with ground truth."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cryoclass.job_options import EXIT_INPUT, JOB

__all__ = ["command", "parse_per_mic"]


def parse_per_mic(text: str) -> int | tuple[int, int]:
    """``"200"`` -> 200 particles per micrograph; ``"100-300"`` -> a random count in [100, 300]."""
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-", 1))
            if not 1 <= lo <= hi:
                raise ValueError
            return lo, hi
        n = int(text)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise typer.BadParameter(
            f"expected N or MIN-MAX (positive integers), got {text!r}"
        ) from None


def command(
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Output folder (created).", file_okay=False)
    ] = None,
    stream_to: Annotated[
        Optional[Path],
        typer.Option(
            "--stream-to",
            file_okay=False,
            help="Instead of --out: act as a preprocessing pipeline "
            "writing into this folder at --rate particles/s, micrograph by micrograph (stack, then "
            f"STAR), then truth.csv and a {JOB.done_marker} marker; for `cryoclass stream`.",
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", min=0.001, help="With --stream-to: particles per second.")
    ] = 100.0,
    n: Annotated[int, typer.Option("--n", min=1, help="Number of particles.")] = 2000,
    box: Annotated[int, typer.Option("--box", min=16, help="Box size in pixels (even).")] = 64,
    apix: Annotated[float, typer.Option("--apix", min=0.1, help="Pixel size in Å.")] = 3.0,
    views: Annotated[int, typer.Option("--views", min=1, help="Number of distinct views.")] = 12,
    snr: Annotated[
        float,
        typer.Option(
            "--snr", help="Signal variance in the particle mask / noise variance ('inf': no noise)."
        ),
    ] = 0.05,
    membrane: Annotated[
        bool,
        typer.Option(
            "--membrane/--no-membrane",
            help="Add a detergent-micelle-like belt around the transmembrane region.",
        ),
    ] = False,
    belt_density: Annotated[
        float,
        typer.Option(
            "--belt-density",
            min=0.0,
            max=1.0,
            help="Belt density as a fraction of the protein peak.",
        ),
    ] = 0.4,
    map_path: Annotated[
        Optional[Path],
        typer.Option(
            "--map",
            exists=True,
            dir_okay=False,
            help="MRC map to project instead of the built-in "
            "phantom (resampled to --apix, cut to --box).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
    per_mic: Annotated[
        str,
        typer.Option(
            "--per-mic", help="Particles per micrograph: N, or MIN-MAX for a random count."
        ),
    ] = "100-300",
    invert_contrast: Annotated[
        bool,
        typer.Option(
            "--invert-contrast",
            help="Write protein black instead of white (to test contrast handling).",
        ),
    ] = False,
) -> None:
    """Simulate particles with known views, in-plane angles, shifts and CTFs.

    Writes RELION 3.1 STAR files and MRC stacks per micrograph (Movies/), particles.star, truth.csv, views.mrcs and sim_params.json into --out, plus preview PNGs. Image paths are relative to --out: run programs from there.
    """  # noqa: E501  (one line: typer's help keeps line breaks)
    from cryoclass.simulate import simulate_dataset

    console = Console(soft_wrap=True, highlight=False)
    if box % 2:
        raise typer.BadParameter("--box must be even", param_hint="--box")
    if not snr > 0:
        raise typer.BadParameter("--snr must be > 0 (or inf)", param_hint="--snr")
    per = parse_per_mic(per_mic)
    if (out is None) == (stream_to is None):
        raise typer.BadParameter(
            "give exactly one of --out and --stream-to", param_hint="--out / --stream-to"
        )
    if stream_to is not None:
        _stream(
            stream_to,
            rate,
            console,
            n_particles=n,
            box=box,
            pixel_size_A=apix,
            n_views=views,
            snr=snr,
            membrane=membrane,
            belt_density=belt_density,
            map_path=str(map_path) if map_path else None,
            particles_per_micrograph=per,
            seed=seed,
            invert_contrast=invert_contrast,
        )
        return
    with Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("particles"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("simulate", total=n)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            res = simulate_dataset(
                out,
                n_particles=n,
                box=box,
                pixel_size_A=apix,
                n_views=views,
                snr=snr,
                membrane=membrane,
                belt_density=belt_density,
                map_path=map_path,
                particles_per_micrograph=per,
                seed=seed,
                invert_contrast=invert_contrast,
                progress=progress,
            )
        except ValueError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(code=EXIT_INPUT) from None
    snr_text = "no noise" if math.isinf(res.snr_realised) else f"{res.snr_realised:.4f}"
    console.print(
        f"[green]Simulated {res.n_particles} particles[/green] in "
        f"{res.n_micrographs} micrographs, {res.n_views} views, box {box} px at "
        f"{apix} Å/px, SNR {snr_text} ({res.seconds:.1f} s)"
    )
    console.print(f"  particles : {res.particles_star}")
    console.print(f"  per mic   : {res.out_dir / 'Movies'}/mic_XXXX.star + .mrcs")
    console.print(f"  truth     : {res.truth_csv}, {res.views_mrcs}")
    console.print(f"  preview   : {res.preview_png}, {res.views_png}")
    console.print(f"  parameters: {res.params_json}")
    console.print(f"Image paths are relative to {res.out_dir}: run programs from there.")


def _stream(folder: Path, rate: float, console: Console, **params) -> None:
    """Write the data set into folder at rate particles/s (see cryoclass.simulate.feed)."""
    from cryoclass.simulate import SimulationConfig
    from cryoclass.simulate.feed import feed_simulation

    try:
        cfg = SimulationConfig(**params).validate()
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=EXIT_INPUT) from None

    def progress(done: int, total: int) -> None:
        console.print(f"wrote {done}/{total} particles")

    res = feed_simulation(folder, cfg, rate, progress=progress)
    console.print(
        f"[green]Streamed {res.n_particles} particles[/green] in {res.n_micrographs} "
        f"micrographs into {res.out_dir} ({res.seconds:.1f} s); {JOB.done_marker} written"
    )
