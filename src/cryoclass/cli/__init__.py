"""The ``cryoclass`` command line: one thin module per subcommand."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__,
                  pretty_exceptions_show_locals=False)


def _register() -> None:
    from cryoclass.cli import classify, demo, select, serve, simulate, stream

    app.command("simulate")(simulate.command)
    app.command("classify")(classify.command)
    app.command("stream")(stream.command)
    app.command("demo")(demo.command)
    app.command("serve")(serve.command)
    app.command("select")(select.command)


def main() -> None:
    import os

    # torch's OpenMP threads spin-wait by default, which starves other processes (a streaming
    # watcher, the dashboard, a second job) on small machines. libgomp reads this once, when
    # torch loads: so here, before any subcommand imports torch, and only for the program
    # (a library import leaves the caller's environment alone).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _register()
    app()
