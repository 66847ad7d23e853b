"""CLI options generated from the one Config, so every parameter has the same name, default and
help text on the command line as in the Python API (``max_res_A`` -> ``--max-res-A``); and the
job-level options from ``JobOptions`` (``cryoclass.job_options``) the same way."""

from __future__ import annotations

import inspect
from typing import Any, Callable, NoReturn

import typer
from pydantic import ValidationError

from cryoclass.config import Config, describe_errors
from cryoclass.job_options import EXIT_INPUT, JobOptions


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    """Print ``error: message`` (one line, no traceback) and exit with ``code``."""
    from rich.markup import escape

    from cryoclass.cli.progress import console

    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def cluster_option() -> Any:
    """--cluster: not a Config field (it does not change results, only where the E-steps run;
    see cryoclass.distributed)."""
    return typer.Option(
        None,
        "--cluster",
        help="Run the E-steps on a Dask cluster: local:N (N worker processes here, one GPU "
        "each when there are GPUs), or slurm:N / pbs:N (N batch jobs via dask-jobqueue, "
        "configured in the Dask config)",
    )


def scheduler_option() -> Any:
    """--scheduler: an existing Dask cluster (execution only, as --cluster)."""
    return typer.Option(
        None,
        "--scheduler",
        help="Run the E-steps on the Dask cluster whose scheduler is at this address",
    )


def dashboard_option() -> Any:
    """--dashboard of a job command (its port is the job option dashboard_port)."""
    return typer.Option(
        False,
        "--dashboard",
        help="Serve the live dashboard on 127.0.0.1 while the job runs, and after it until Ctrl-C",
    )


def check_cluster_options(cluster: str | None, scheduler: str | None) -> None:
    """typer.BadParameter for a malformed --cluster / --scheduler, before any work starts."""
    from cryoclass.jobs.execution import check_execution

    try:
        check_execution(cluster, scheduler)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--cluster") from None


def job_option(name: str, *decls: str, help: str | None = None) -> Any:
    """The typer option of the ``JobOptions`` field ``name``: its default, bounds, flag and help
    (``decls`` / ``help``: for a command that names or explains it otherwise)."""
    field = JobOptions.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = str(extra.get("flag", "--" + name.replace("_", "-")))
    bounds: dict[str, Any] = {}
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            bounds["min"] = m.ge
        if getattr(m, "le", None) is not None:
            bounds["max"] = m.le
    return typer.Option(
        field.default, *(decls or (flag,)), help=help or field.description, **bounds
    )


#: Fields with a short, familiar flag in addition to their own name.
ALIASES = {"n_classes": ["--classes", "-K"]}


def config_parameters(skip: set[str] = frozenset()) -> list[inspect.Parameter]:
    """One keyword parameter per Config field, as typer options."""
    params = []
    for name, field in Config.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        decls = [flag] + ALIASES.get(name, [])
        ann = field.annotation
        default = field.default
        if ann is bool:
            decls = [f"{flag}/--no-{name.replace('_', '-')}"]
        opt = typer.Option(default, *decls, help=field.description, show_default=True)
        if "Literal" in str(ann):
            ann = str
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
        )
    return params


def with_config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command taking ``config: Config``: the CLI sees one option per Config field and
    the function receives them assembled (and validated) as ``config``."""
    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.name != "config"]
    fields = set(Config.model_fields)

    def wrapper(**kwargs: Any) -> Any:
        cfg_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        try:
            config = Config(**cfg_kwargs)
        except ValidationError as err:
            fail(describe_errors(err))
        if config.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                fail("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
        return func(config=config, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + config_parameters())  # type: ignore
    wrapper.__doc__ = func.__doc__
    wrapper.__name__ = func.__name__
    return wrapper
