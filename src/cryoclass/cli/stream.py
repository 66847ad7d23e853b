"""`cryoclass stream WATCH_DIR --out DIR [options]`: streaming 2D classification of a folder.

(No ``from __future__ import annotations`` here: typer must see real types through
``with_config_options``.)
"""

from pathlib import Path
from typing import Optional

import typer

from cryoclass.cli.options import (CLUSTER_HELP, SCHEDULER_HELP, check_cluster_options,
                                   with_config_options)
from cryoclass.cli.progress import console
from cryoclass.config import Config
from cryoclass.io import InputError, OutputError


def _print_update(stream, rep) -> None:
    eng = stream.engine
    res = eng.res_A(eng.state.r_work) if eng is not None and eng.state is not None else 0.0
    console.print(f"update {stream.n_updates:4d} {rep.phase:7s} new={rep.n_new:6d} "
                  f"revisited={rep.n_revisited:6d} T={rep.temperature:6.2f} res={res:5.1f} Å "
                  f"ingested={stream.n_ingested:7d} classified={stream.n_processed:7d} "
                  f"{sum(rep.seconds.values()):6.2f} s")


@with_config_options
def command(
    watch_dir: Path = typer.Argument(..., help="Folder the preprocessing pipeline writes "
                                     "particle STAR files and stacks into"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (resumed if it holds a "
                             "stream checkpoint)"),
    policy: Optional[str] = typer.Option(None, "--policy", help="Streaming schedule, online or "
                                         "live (same as --stream-policy)"),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="End when no new "
                                                 "particle arrived for this many seconds"),
    poll: float = typer.Option(5.0, "--poll", help="Seconds between polls of the folder"),
    done_marker: str = typer.Option("DONE", "--done-marker", help="File in WATCH_DIR that "
                                    "ends the stream ('' for none)"),
    pattern: str = typer.Option("*.star", "--pattern", help="STAR file names to watch "
                                "(searched recursively)"),
    write_every: float = typer.Option(0.0, "--write-every", help="Rewrite outputs at most "
                                      "every this many seconds (0: after every update)"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    dashboard: bool = typer.Option(False, "--dashboard", help="Serve the live dashboard on "
                                   "127.0.0.1 while the job runs, and after it until Ctrl-C"),
    dashboard_port: int = typer.Option(8765, "--dashboard-port", min=0, max=65535,
                                       help="Port of --dashboard (0: any free one)"),
    config: Config = None,  # assembled from the options below by with_config_options
) -> None:
    """Streaming 2D classification: keep class averages up to date while particles arrive."""
    from cryoclass.jobs.stream import watch

    check_cluster_options(cluster, scheduler)
    if policy is not None:
        try:
            config = Config(**{**config.model_dump(), "stream_policy": policy})
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--policy") from None
    board = None
    if dashboard:  # imported only when asked for: the web stack costs seconds of start-up
        from cryoclass.dashboard.launch import start_dashboard

        board = start_dashboard(out, dashboard_port, watch_dir, pattern, say=console.print)
    try:
        summary = watch(watch_dir, config, out, poll_s=poll, idle_timeout_s=idle_timeout,
                        done_marker=done_marker, pattern=pattern, outputs_every_s=write_every,
                        progress=_print_update, cluster=cluster, scheduler=scheduler)
    except (InputError, FileNotFoundError, RuntimeError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    except OutputError as err:  # disk full ...: the last commit and its outputs are intact
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(3) from None
    console.print(f"stream ended ({summary.reason}): {summary.n_ingested} particles ingested, "
                  f"{summary.n_processed} classified, {summary.n_rejected} set aside, "
                  f"{summary.n_updates} updates in {summary.seconds:.1f} s; outputs in {out}")
    if board is not None:
        from cryoclass.dashboard.launch import linger

        linger(board, say=console.print)
