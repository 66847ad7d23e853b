"""The ``cryoclass`` command line: one thin module per subcommand."""

from __future__ import annotations

import logging
import sys

import typer

from cryoclass.job_options import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT

HELP = (
    "2D classification of cryo-EM particle images, batch or streaming.\n\n"
    "Reads RELION STAR (3.0-5) and CryoSPARC .cs particles with their MRC stacks, sorts "
    "them into class averages by maximum likelihood, and writes classes.mrcs, "
    "particles.star, model.star, particles.cs and a gallery that RELION and CryoSPARC read. "
    f"Bad particles are set aside in rejects.csv. Exit codes: {EXIT_OK} done, {EXIT_INPUT} "
    f"bad input, {EXIT_OUTPUT} an output cannot be written.\n\n"
    "Start with 'cryoclass demo', or 'cryoclass classify particles.star --out job1 -K 50'; "
    "'cryoclass COMMAND --help' lists a command's options."
)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=HELP, pretty_exceptions_show_locals=False
)


def _version(value: bool) -> None:
    if value:
        from cryoclass import __version__

        typer.echo(f"cryoclass {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit"
    ),
) -> None:
    """2D classification of cryo-EM particle images, batch or streaming."""


class _Warnings(logging.Handler):
    """Warnings of the cryoclass loggers as ``warning: MESSAGE`` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"warning: {record.getMessage()}\n")


def _register() -> None:
    from cryoclass.cli import classify, demo, select, serve, simulate, stream

    root = logging.getLogger("cryoclass")
    if not any(isinstance(h, _Warnings) for h in root.handlers):
        handler = _Warnings(logging.WARNING)
        root.addHandler(handler)
    if app.registered_commands:
        return

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
