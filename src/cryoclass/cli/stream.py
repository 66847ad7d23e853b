"""`cryoclass stream WATCH_DIR --out DIR [options]`: streaming 2D classification of a folder.

(No ``from __future__ import annotations`` here: typer must see real types through
``with_config_options``.)
"""

from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
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
from cryoclass.cli.progress import console
from cryoclass.config import Config, describe_errors
from cryoclass.io import InputError, OutputError
from cryoclass.job_options import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OUTPUT, EXIT_TERMINATED


def summary_lines(summary, out: Path) -> list[str]:
    """The end-of-stream report: every particle found is classified, set aside or waiting."""
    s = summary
    lines = [
        f"stream ended ({s.reason}): {s.n_ingested} particles ingested, {s.n_classified} "
        f"classified, {s.n_rejected} set aside, {s.n_waiting} still waiting (found "
        f"{s.n_found} = classified + set aside + still waiting); {s.n_updates} updates in "
        f"{s.seconds:.1f} s; outputs in {out}"
    ]
    if s.n_rejected:
        why = ", ".join(f"{n} {k}" for k, n in s.reasons)
        lines.append(f"{s.n_rejected} particles set aside ({why}), listed in {out / 'rejects.csv'}")
    if s.n_files_set_aside:
        lines.append(
            f"{s.n_files_set_aside} STAR file(s) could not be read and were set aside "
            f"(listed in {out / 'rejects.csv'}; their particles are not counted)"
        )
    if s.n_files_waiting:
        lines.append(
            f"{s.n_files_waiting} STAR file(s) not readable yet (their particles are not counted)"
        )
    if s.stopped:
        lines.append(
            "stopped: run the same command to resume; particles still waiting are picked up then"
        )
    return lines


def _print_update(stream, rep) -> None:
    eng = stream.engine
    res = eng.res_A(eng.state.r_work) if eng is not None and eng.state is not None else 0.0
    console.print(
        f"update {stream.n_updates:4d} {rep.phase:7s} new={rep.n_new:6d} "
        f"revisited={rep.n_revisited:6d} T={rep.temperature:6.2f} res={res:5.1f} Å "
        f"ingested={stream.n_ingested:7d} classified={stream.n_processed:7d} "
        f"{sum(rep.seconds.values()):6.2f} s"
    )


@with_config_options
def command(
    watch_dir: Path = typer.Argument(
        ..., help="Folder the preprocessing pipeline writes particle STAR files and stacks into"
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (resumed if it holds a stream checkpoint)"
    ),
    policy: Optional[str] = typer.Option(
        None, "--policy", help="Streaming schedule, online or live (same as --stream-policy)"
    ),
    idle_timeout: Optional[float] = typer.Option(
        None,
        "--idle-timeout",
        min=0,
        help="End when no new particle was found for this many seconds",
    ),
    poll: float = job_option("poll_s"),
    done_marker: str = job_option("done_marker"),
    pattern: str = job_option("pattern"),
    write_every: float = typer.Option(
        0.0,
        "--write-every",
        help="Rewrite outputs at most every this many seconds (0: after every update)",
    ),
    cluster: Optional[str] = cluster_option(),
    scheduler: Optional[str] = scheduler_option(),
    dashboard: bool = dashboard_option(),
    dashboard_port: int = job_option("dashboard_port"),
    config: Config = None,  # assembled from the options below by with_config_options
) -> None:
    """Streaming 2D classification: keep class averages up to date while particles arrive."""
    from cryoclass.jobs.stream import watch

    check_cluster_options(cluster, scheduler)
    if policy is not None:
        try:
            config = Config(**{**config.model_dump(), "stream_policy": policy})
        except ValidationError as err:
            fail(describe_errors(err).replace("--stream-policy", "--policy"))
    board = None
    if dashboard:  # imported only when asked for: the web stack costs seconds of start-up
        from cryoclass.dashboard.launch import start_dashboard

        board = start_dashboard(out, dashboard_port, watch_dir, pattern, say=console.print)
    try:
        summary = watch(
            watch_dir,
            config,
            out,
            poll_s=poll,
            idle_timeout_s=idle_timeout,
            done_marker=done_marker,
            pattern=pattern,
            outputs_every_s=write_every,
            progress=_print_update,
            cluster=cluster,
            scheduler=scheduler,
        )
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last commit is intact
        console.print(
            f"interrupted: {out} holds the last committed update; run the same command to resume",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OutputError as err:  # disk full ...: the last commit and its outputs are intact
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(EXIT_OUTPUT) from None
    except (InputError, FileNotFoundError, RuntimeError, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(EXIT_INPUT) from None
    for line in summary_lines(summary, out):
        console.print(line, soft_wrap=True, highlight=False)
    if summary.stopped:
        raise typer.Exit(EXIT_INTERRUPTED if summary.reason == "Ctrl-C" else EXIT_TERMINATED)
    if board is not None:
        from cryoclass.dashboard.launch import linger

        linger(board, say=console.print)
