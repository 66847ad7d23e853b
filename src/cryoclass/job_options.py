"""Job-level options outside ``Config``: how a job is run and watched, never what it computes
(they enter no checkpoint and no result), and the exit codes of every command. One typed place
for their defaults, bounds and help: the library's defaults are ``JOB``'s, and the command line
generates its options from ``JobOptions`` (``cryoclass.cli.options.job_option``), as it does from
``Config``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class JobOptions(BaseModel):
    """How a streaming job watches its folder, and where the dashboard listens. A field's CLI
    flag is ``--`` + its name with dashes, unless its ``flag`` says otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    poll_s: float = Field(
        5.0,
        ge=0,
        description="Seconds between polls of the folder",
        json_schema_extra={"flag": "--poll"},
    )
    done_marker: str = Field(
        "DONE", description="File in WATCH_DIR that ends the stream ('' for none)"
    )
    pattern: str = Field("*.star", description="STAR file names to watch (searched recursively)")
    dashboard_port: int = Field(
        8765, ge=0, le=65535, description="Port of --dashboard (0: any free one)"
    )


#: The defaults.
JOB = JobOptions()

#: Exit codes of every command.
EXIT_OK = 0
#: Bad input: the message names the file, the row and the problem.
EXIT_INPUT = 2
#: An output could not be written (disk full, permissions): the previous outputs are intact.
EXIT_OUTPUT = 3
#: A stream stopped by Ctrl-C (SIGINT) or SIGTERM, after committing: 128 + the signal number.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
