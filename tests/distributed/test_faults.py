"""A worker killed in the middle of an E-step (SIGKILL, as a node failure) loses nothing and
counts nothing twice: Dask runs its shard again and the job ends with the single-process result.

The kill is injected in the worker itself (``CRYOCLASS_DASK_KILL_ONCE``, see
``cryoclass.distributed.tasks``): the first task of a phase that finds its flag file deletes it
and kills its own process, so it always happens mid-task.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from cryoclass.distributed import DaskEStep, open_client, parse_cluster
from cryoclass.distributed.tasks import KILL_ENV
from cryoclass.engine.executor import LocalEStep
from cryoclass.schedules.batch import run_batch


@pytest.fixture()
def fault_client(tmp_path):
    """A fresh 2-worker LocalCluster whose workers obey the kill flags in tmp_path/flags."""
    flags = tmp_path / "flags"
    flags.mkdir()
    old = os.environ.get(KILL_ENV)
    os.environ[KILL_ENV] = str(flags)  # workers inherit the environment when they start
    try:
        with open_client(parse_cluster("local:2"), torch_threads=1) as client:
            yield client, flags
    finally:
        if old is None:
            os.environ.pop(KILL_ENV, None)
        else:
            os.environ[KILL_ENV] = old


def worker_pids(client) -> set[int]:
    client.wait_for_workers(2, timeout=60)
    return set(client.run(os.getpid).values())


def test_killed_workers_lose_and_double_count_nothing(
    particles, config, fault_client, assert_identical
):
    """Three kills in one batch job: while scoring a minibatch shard, while concluding one
    (its scores, held by the dead worker, are recomputed too) and during a full pass. The job
    gives, bit for bit, what the same job gives in a single process."""
    killed, flags = fault_client
    before = worker_pids(killed)
    armed = {"online": [(2, "score"), (4, "conclude")], "full": [(7, "full")]}

    def arm(phase: str, it: int, total: int, entry) -> None:
        for when, what in armed.get(phase, []):  # arm the next iteration's kill
            if it + 1 == when:
                (flags / what).touch()

    res = run_batch(particles, config, progress=arm, estep=DaskEStep(killed, shard_size=48))
    assert not any(flags.iterdir()), "every armed kill fired"
    after = worker_pids(killed)
    assert len(after) == 2 and before - after, "killed workers were replaced"
    ref = run_batch(particles, config, estep=LocalEStep(shard_size=48))
    assert_identical(ref.state, ref.particles, res.state, res.particles)
    np.testing.assert_array_equal(np.sort(res.particles.index), np.arange(len(particles)))
    assert res.state.class_weights.sum().item() == pytest.approx(len(particles), rel=1e-5)
