"""Where a job's E-steps run: here, or on a Dask cluster named by --cluster / --scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cryoclass.engine.executor import EStepExecutor


@contextmanager
def executor_for(
    cluster: str | None = None, scheduler: str | None = None, estep: EStepExecutor | None = None
) -> Iterator[EStepExecutor | None]:
    """``estep`` if given; else a ``DaskEStep`` on the cluster named by cluster ('local:N',
    'slurm:N', ...) or scheduler (an address), closed on exit; else None (E-steps here).
    Dask is imported only when a cluster is asked for."""
    if estep is not None or not (cluster or scheduler):
        yield estep
        return
    from cryoclass.distributed import dask_estep

    with dask_estep(cluster, scheduler) as ex:
        yield ex


def check_execution(cluster: str | None, scheduler: str | None) -> None:
    """Raise ValueError for a malformed --cluster / --scheduler, before any work starts."""
    if cluster or scheduler:
        from cryoclass.distributed.cluster import JOBQUEUE_KINDS, jobqueue_missing, parse_cluster

        spec = parse_cluster(cluster, scheduler)
        if spec.kind in JOBQUEUE_KINDS and jobqueue_missing():
            raise ValueError(f"--cluster {cluster}: {jobqueue_missing()}")
