"""The ``cryoclass`` command line: one thin module per subcommand."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _register() -> None:
    # Each subcommand module exposes ``command``; imported here so `cryoclass --help` lists them all.
    from cryoclass.cli import simulate

    app.command("simulate")(simulate.command)
    try:
        from cryoclass.cli import classify, demo
    except ImportError:  # engine not built yet
        return
    app.command("classify")(classify.command)
    app.command("demo")(demo.command)


def main() -> None:
    _register()
    app()
