"""Job-level options (poll interval, done marker, STAR pattern, dashboard port) and exit codes:
one typed place (``cryoclass.job_options``), from which the CLI's options are generated."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from cryoclass.job_options import JOB, JobOptions


def _option(command, name):
    return inspect.signature(command).parameters[name].default


def test_cli_options_come_from_job_options():
    from cryoclass.cli import classify, serve, stream

    poll = _option(stream.command, "poll")
    assert (poll.default, poll.param_decls, poll.min) == (JOB.poll_s, ("--poll",), 0)
    assert poll.help == JobOptions.model_fields["poll_s"].description
    assert _option(stream.command, "done_marker").default == JOB.done_marker == "DONE"
    assert _option(stream.command, "pattern").param_decls == ("--pattern",)
    for command in (classify.command, stream.command):
        port = _option(command, "dashboard_port")
        assert (port.default, port.param_decls, port.min, port.max) == (
            JOB.dashboard_port,
            ("--dashboard-port",),
            0,
            65535,
        )
    port = _option(serve.command, "port")  # named and explained otherwise, same default
    assert (port.default, port.param_decls, port.help) == (
        8765,
        ("--port",),
        "Port (0: any free one)",
    )
    assert _option(serve.command, "pattern").default == JOB.pattern == "*.star"


def test_job_options_are_typed_and_bounded():
    with pytest.raises(ValidationError):
        JobOptions(poll_s=-1)
    with pytest.raises(ValidationError):
        JobOptions(dashboard_port=70000)
    with pytest.raises(ValidationError):
        JobOptions(polls=1)
