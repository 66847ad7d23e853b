"""Getting a Dask client: ``--cluster local:N``, ``--cluster slurm:N`` / ``pbs:N`` (dask-jobqueue)
or ``--scheduler ADDRESS`` (a cluster started elsewhere), and what each worker sets up.

Workers run one E-step at a time (one Dask thread each) with torch limited to their share of the
cores, and use one GPU each when there are GPUs (``worker_device``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dask
import torch
from distributed.diagnostics.plugin import WorkerPlugin

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("cryoclass.distributed")

#: Dask sets MALLOC_TRIM_THRESHOLD_=65536 in the workers it spawns, which fixes glibc's malloc
#: thresholds: every large tensor is then mmapped and unmapped again, and the E-step ran 1.5 x
#: slower (measured). Workers we start keep glibc's adaptive defaults; for workers started
#: elsewhere set this in their Dask config (README).
WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

JOBQUEUE_KINDS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
}


@dataclass(frozen=True)
class ClusterSpec:
    """Where E-steps run. kind: 'local' (a LocalCluster of ``workers`` processes on this
    machine), 'scheduler' (connect to ``address``) or a dask-jobqueue kind ('slurm', 'pbs',
    'sge', 'lsf': ``workers`` batch jobs, sized by the jobqueue section of the Dask config)."""

    kind: str
    workers: int | None = None
    address: str | None = None


def default_local_workers() -> int:
    """One worker per GPU when there are GPUs, else one per CPU core."""
    return torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)


def parse_cluster(cluster: str | None = None, scheduler: str | None = None) -> ClusterSpec | None:
    """ClusterSpec from the CLI's ``--cluster`` ('local', 'local:N', 'slurm:N', ...) and
    ``--scheduler`` (address such as tcp://host:8786); None when neither is given (run here).
    Raises ValueError for anything else."""
    if cluster and scheduler:
        raise ValueError("give --cluster or --scheduler, not both")
    if scheduler:
        return ClusterSpec("scheduler", address=scheduler)
    if not cluster:
        return None
    m = re.fullmatch(r"\s*([a-z]+)\s*(?::\s*(\d+)\s*)?", cluster)
    kinds = ("local", *JOBQUEUE_KINDS)
    if not m or m.group(1) not in kinds:
        raise ValueError(
            f"--cluster {cluster!r}: expected local, local:N or one of "
            f"{', '.join(k + ':N' for k in JOBQUEUE_KINDS)} (N workers or jobs)"
        )
    kind, n = m.group(1), m.group(2)
    if n is not None and int(n) < 1:
        raise ValueError(f"--cluster {cluster!r}: N must be at least 1")
    if kind != "local" and n is None:
        raise ValueError(f"--cluster {cluster!r}: say how many jobs, e.g. {kind}:4")
    return ClusterSpec(kind, workers=int(n) if n is not None else None)


def worker_ordinal(name: object) -> int:
    """A worker's number from its Dask name (LocalCluster: 0, 1, ...; jobqueue: 'job-3' or
    'job-3-1' for the second process of a job): the trailing integer, else 0."""
    if isinstance(name, int):
        return name
    m = re.search(r"(\d+)$", str(name))
    return int(m.group(1)) if m else 0


def worker_device(config_device: str, name: object = None) -> torch.device:
    """The device a worker computes on: the Config's choice ('auto' = CUDA when available);
    with several visible GPUs, GPU (worker number mod GPU count), so that N workers on an
    N-GPU node use one GPU each."""
    if config_device == "cpu" or not torch.cuda.is_available():
        if config_device == "cuda":
            raise RuntimeError("device 'cuda' requested but this Dask worker has no CUDA GPU")
        return torch.device("cpu")
    if name is None:
        try:
            from distributed import get_worker

            name = get_worker().name
        except ValueError:  # not on a worker
            name = 0
    return torch.device("cuda", worker_ordinal(name) % torch.cuda.device_count())


class TorchThreads(WorkerPlugin):
    """Dask worker plugin: torch (and OpenMP) on ``n`` threads in each worker, so that workers
    sharing a machine do not oversubscribe its cores."""

    name = "cryoclass-torch-threads"

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))

    def setup(self, worker) -> None:  # noqa: ANN001 - distributed.Worker
        os.environ["OMP_NUM_THREADS"] = str(self.n)
        torch.set_num_threads(self.n)


@contextmanager
def open_client(spec: ClusterSpec, torch_threads: int | None = None) -> Iterator["Client"]:
    """A connected dask.distributed Client for spec, closed (with any cluster it started) on
    exit. torch_threads: per worker (default: a LocalCluster's share of the cores; left alone on
    clusters started elsewhere)."""
    from distributed import Client, LocalCluster

    cluster = None
    if spec.kind == "local":
        n = spec.workers or default_local_workers()
        with dask.config.set(WORKER_ENVIRON):
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.WARNING,
            )
        torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // n)
    elif spec.kind in JOBQUEUE_KINDS:
        cluster = _jobqueue_cluster(spec)
    try:
        client = Client(cluster if cluster is not None else spec.address)
        try:
            if torch_threads:
                client.register_plugin(TorchThreads(torch_threads))
            if spec.kind != "local" and not client.nthreads():
                log.info("dask: waiting for a worker to join %s", spec.address or spec.kind)
                client.wait_for_workers(1)
            log.info(
                "dask: %s, %d workers",
                client.dashboard_link or spec.address or spec.kind,
                len(client.nthreads()),
            )
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def jobqueue_missing() -> str:
    """Why a batch-system cluster cannot be started here ('' when dask-jobqueue is installed)."""
    if importlib.util.find_spec("dask_jobqueue") is not None:
        return ""
    return (
        "batch-system clusters need dask-jobqueue: pip install 'cryoclass[cluster]' "
        "(or pip install dask-jobqueue)"
    )


def _jobqueue_cluster(spec: ClusterSpec):
    """A dask-jobqueue cluster of spec.workers batch jobs (queue, cores, memory, GPUs and job
    script lines come from the jobqueue section of the Dask config, see README)."""
    if jobqueue_missing():
        raise RuntimeError(jobqueue_missing())
    import dask_jobqueue

    cluster = getattr(dask_jobqueue, JOBQUEUE_KINDS[spec.kind])()
    cluster.scale(jobs=spec.workers)
    return cluster
