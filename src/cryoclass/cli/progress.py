"""A rich progress bar with ETA and one log line per iteration."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
#: What an extra run's last line says (``schedules.batch.Progress`` phases).
RESTART_VERDICTS = {"restart kept": " kept: most likely so far", "restart not kept": " not kept"}


@contextmanager
def iteration_progress(description: str) -> Iterator:
    """Yields a callback(phase, i, total, entry) that advances the bar and prints entry lines."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(description, total=None)

        def callback(phase: str, i: int, total: int, entry) -> None:
            bar.update(task, total=total, completed=i)
            if entry is None:
                return
            verdict = RESTART_VERDICTS.get(phase, "")  # the schedule's own decision
            bar.console.print(
                f"iter {entry.iteration:3d} {entry.phase:6s} n={entry.n_particles:6d} "
                f"T={entry.temperature:6.2f} res={entry.work_res_A:5.1f} Å "
                f"logL={entry.mean_loglik:9.2f} {entry.seconds:6.1f} s"
                + (f" reseeded={entry.reseeded}" if entry.reseeded else "")
                + (f" merged={entry.merged}" if entry.merged else "")
                + (f" divided={entry.divided}" if entry.divided else "")
                + (f" changed={100 * entry.changed:.1f}%" if entry.changed is not None else "")
                + verdict,
                soft_wrap=True,  # one line per iteration, whatever the terminal's width
            )

        yield callback
