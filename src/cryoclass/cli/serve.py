"""`cryoclass serve JOB_DIR [--host H] [--port P] [--token T] [--watch DIR]`: the live dashboard
of a classify or stream job in the browser."""

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from cryoclass.cli.options import job_option
from cryoclass.cli.progress import console
from cryoclass.job_options import EXIT_INPUT


def command(
    job_dir: Path = typer.Argument(
        ..., help="Output folder of a classify or stream job (it may not exist yet)"
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on; any other than 127.0.0.1/localhost needs a token",
    ),
    port: int = job_option("dashboard_port", "--port", help="Port (0: any free one)"),
    token: Optional[str] = typer.Option(
        None,
        "--token",
        envvar="CRYOCLASS_DASHBOARD_TOKEN",
        help="Secret every request must carry; made up when "
        "--host is not a loopback address and none is given",
    ),
    watch: Optional[Path] = typer.Option(
        None, "--watch", help="Folder the stream watches, to count the particles found there"
    ),
    pattern: str = job_option("pattern", help="STAR file names in --watch"),
) -> None:
    """Serve the live dashboard of a job: classes, progress, plots, class selection."""
    from cryoclass.dashboard.launch import make_server

    if job_dir.exists() and not job_dir.is_dir():
        console.print(f"[red]error:[/red] {escape(str(job_dir))} is not a folder")
        raise typer.Exit(EXIT_INPUT)
    try:
        server = make_server(
            job_dir, host=host, port=port, token=token, watch_dir=watch, pattern=pattern
        )
    except OSError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    console.print(
        f"dashboard of {escape(str(job_dir))}: {server.url}  (Ctrl-C to stop)",
        highlight=False,
        soft_wrap=True,
    )
    if not job_dir.exists():
        console.print(
            f"note: {escape(str(job_dir))} does not exist yet: the page fills in "
            "once a job writes there",
            highlight=False,
            soft_wrap=True,
        )
    server.run()
