"""Scale out: the engine's E-steps on a Dask cluster (``dask.distributed``).

Public API::

    parse_cluster(cluster, scheduler) -> ClusterSpec | None   ('local:N', 'slurm:N', address)
    open_client(spec) -> context manager yielding a distributed.Client
    DaskEStep(client)      E-step executor for run_batch / Stream (``engine.executor``)
    dask_estep(cluster, scheduler) -> context manager yielding a DaskEStep, or None (run here)

The schedules are unchanged: they ask their executor for each E-step, and ``DaskEStep`` runs it
as a map over particle shards with an ordered sum of statistics (``estep.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cryoclass.distributed.cluster import ClusterSpec, open_client, parse_cluster, worker_device
from cryoclass.distributed.estep import DaskEStep, LazyBatch
from cryoclass.engine.executor import FULL_SHARD_CHUNKS


@contextmanager
def dask_estep(
    cluster: str | None = None,
    scheduler: str | None = None,
    shard_size: int | None = None,
    full_shard_chunks: int = FULL_SHARD_CHUNKS,
) -> Iterator[DaskEStep | None]:
    """A DaskEStep on the cluster named by ``cluster`` / ``scheduler`` (see parse_cluster), or
    None when neither is given (E-steps then run in this process; same results)."""
    spec = parse_cluster(cluster, scheduler)
    if spec is None:
        yield None
        return
    with open_client(spec) as client:
        yield DaskEStep(client, shard_size=shard_size, full_shard_chunks=full_shard_chunks)


__all__ = [
    "ClusterSpec",
    "DaskEStep",
    "LazyBatch",
    "dask_estep",
    "open_client",
    "parse_cluster",
    "worker_device",
]
