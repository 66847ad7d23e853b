"""On a LocalCluster of 2 workers: each E-step, and every iteration of batch and streaming jobs,
equals the single-process one bit for bit (both executors follow the same shard plan,
``cryoclass.engine.executor``); results do not depend on the number of workers; and the client
never reads a particle image for a sharded E-step.

Exact equality needs the E-steps on both sides to run with the same torch thread count (1 here,
checked by the ``client`` fixture): BLAS and torch reductions split their sums by thread count.
"""

from __future__ import annotations

import numpy as np
import torch

from cryoclass.distributed import DaskEStep, LazyBatch, open_client, parse_cluster
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import LocalEStep
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.source import load_batch
from cryoclass.schedules.batch import run_batch
from distributed import get_task_stream

STEP_FIELDS = (
    "iteration",
    "phase",
    "n_particles",
    "temperature",
    "work_res_A",
    "mean_loglik",
    "reseeded",
)


def steps(log) -> list[tuple]:
    """Every iteration's figures (IterationLog entries or stream history dicts), wall times
    left out."""
    rows = [e if isinstance(e, dict) else e.__dict__ for e in log]
    return [tuple(r[f] for f in STEP_FIELDS) for r in rows]


def test_batch_job_identical_to_single_process(
    particles, config, local_batch, client, assert_identical
):
    """Default shard plan (config.batch_particles = 64): minibatches of 80 in 2 shards of 40,
    full passes in one shard of 4 chunks (8 chunks per shard)."""
    estep = DaskEStep(client)
    with get_task_stream(client) as tasks:
        res = run_batch(particles, config, estep=estep)
    # 6 minibatches x 2 shards x 3 tasks + 2 full passes x 1 shard: it really ran there,
    # on both workers
    assert estep.n_tasks == 6 * 2 * 3 + 2 * 1
    shard_workers = {
        t["worker"]
        for t in tasks.data
        if str(t["key"]).split("-")[0].strip("('") in ("score_shard", "full_shard")
    }
    assert len(shard_workers) == 2
    assert len(res.log) == len(local_batch.log) == 8
    assert steps(res.log) == steps(local_batch.log)  # every iteration, not only the end
    assert local_batch.log[0].temperature > 1.0  # annealed: one temperature per minibatch
    assert_identical(local_batch.state, local_batch.particles, res.state, res.particles)


def test_stream_identical_to_single_process(
    particles, config, local_stream, client, tmp_path, stream_job, assert_identical
):
    """Default shards; the stream's updates (warm-up E-stepped here, then new + revisited
    particles on the cluster, the end-of-stream completion and full passes)."""
    estep = DaskEStep(client)
    res = stream_job(particles, config, tmp_path / "dask_stream", estep=estep)
    assert estep.n_tasks > 0
    assert len(res.history) == len(local_stream.history)
    assert steps(res.history) == steps(local_stream.history)
    assert_identical(local_stream.state, local_stream.particles, res.state, res.particles)


def test_fixed_shards_same_bits_on_any_number_of_workers(
    particles, config, client, assert_identical
):
    """A plan of its own (E-step chunks of 16, minibatch shards of up to 36 particles: 27, 27
    and 26; full-pass shards of 2 chunks: 8 shards); 2 workers, 1 worker and a single process
    with the same plan agree."""
    cfg = config.model_copy(
        update={"n_online_em_iters": 3, "n_full_iters": 1, "batch_particles": 16}
    )
    plan = dict(shard_size=36, full_shard_chunks=2)
    two_ex = DaskEStep(client, **plan)
    two = run_batch(particles, cfg, estep=two_ex)
    assert two_ex.n_tasks == 3 * 3 * 3 + 8
    with open_client(parse_cluster("local:1"), torch_threads=1) as one_client:
        one = run_batch(particles, cfg, estep=DaskEStep(one_client, **plan))
    here = run_batch(particles, cfg, estep=LocalEStep(**plan))
    assert steps(two.log) == steps(one.log) == steps(here.log)
    assert_identical(two.state, two.particles, one.state, one.particles)
    assert_identical(here.state, here.particles, two.state, two.particles)


class CountingSource:
    """A particle source that counts the images read through it (in this process)."""

    def __init__(self, pset) -> None:
        self.pset, self.table, self.reads = pset, pset.table, 0
        self.box, self.pixel_size_A = pset.box, pset.pixel_size_A

    def __len__(self) -> int:
        return len(self.pset)

    def images(self, idx):
        self.reads += len(idx)
        return self.pset.images(idx)

    def ctf_params(self, idx):
        return self.pset.ctf_params(idx)


def test_one_estep_equals_single_process_and_client_reads_no_image(particles, config, client):
    """A minibatch and a full pass on the cluster: the local results bit for bit; the workers
    read the images, the client only when re-seeding needs them."""
    src = CountingSource(particles)
    engine = Engine(config, src.box, src.pixel_size_A)
    engine.initialise(load_batch(engine, src, np.arange(80)))
    src.reads = 0
    idx = np.arange(0, 240, 3)
    estep = DaskEStep(client, shard_size=24, full_shard_chunks=1)  # full pass: 4 shards
    out = estep.minibatch(engine, src, idx, factor=8.0)
    res, stats, temp = estep.full(engine, src)
    assert src.reads == 0
    t = estep.traffic
    assert t.esteps == 2 and t.model > 0 and t.scores == idx.size * config.n_classes * 4
    assert t.shards < 300 * (idx.size + 240)  # metadata only, no pixels

    here = LocalEStep(shard_size=24, full_shard_chunks=1)
    local = here.minibatch(engine, particles, idx, factor=8.0)
    assert out.temperature == local.temperature > 1.0  # one temperature for the minibatch
    for name in ("num", "den", "weight", "noise_power", "noise_count"):
        assert torch.equal(getattr(out.stats, name), getattr(local.stats, name)), name
    for f in ParticleResult.names():
        np.testing.assert_array_equal(getattr(out.result, f), getattr(local.result, f), f)
    l_res, l_stats, l_temp = here.full(engine, particles)
    assert temp == l_temp
    for name in ("num", "den", "weight", "noise_power", "noise_count"):
        assert torch.equal(getattr(stats, name), getattr(l_stats, name)), name
    np.testing.assert_array_equal(res.index, np.arange(240))
    for f in ParticleResult.names():
        np.testing.assert_array_equal(getattr(res, f), getattr(l_res, f), f)

    assert isinstance(out.batch, LazyBatch) and not out.batch.loaded
    assert out.batch.n == idx.size and src.reads == idx.size


def test_restarts_run_on_the_cluster_and_keep_the_same_run(
    particles, config, client, assert_identical
):
    """n_restarts: the extra runs' E-steps go to the cluster too, and the job keeps the same run
    and ends with the same bits as in a single process."""
    cfg = config.model_copy(update={"n_restarts": 2})
    local = run_batch(particles, cfg)
    estep = DaskEStep(client)
    res = run_batch(particles, cfg, estep=estep)
    assert estep.n_tasks == 2 * (6 * 2 * 3 + 1) + 1  # two online phases and first passes, 1 more
    assert [e.phase for e in res.log].count("restart") == 1
    assert steps(res.log) == steps(local.log)
    assert_identical(local.state, local.particles, res.state, res.particles)
