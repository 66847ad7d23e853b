"""On a LocalCluster of 2 workers: each E-step equals the single-process one within float
rounding, batch and streaming jobs agree with single-process jobs, results do not depend on the
number of workers (fixed shard size), and the client never reads a particle image for a sharded
E-step."""

from __future__ import annotations

import numpy as np
import torch
from distributed import get_task_stream

from cryoclass.distributed import DaskEStep, LazyBatch, open_client, parse_cluster
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import LocalEStep
from cryoclass.engine.schedule import load_batch, run_batch


def test_batch_job_agrees_with_single_process(particles, config, local_batch, client,
                                              assert_agree):
    estep = DaskEStep(client)
    with get_task_stream(client) as tasks:
        res = run_batch(particles, config, estep=estep)
    # 6 minibatches x 4 shards x 3 tasks + 2 full passes x 4 shards: it really ran there,
    # on both workers
    assert estep.n_tasks == 6 * 4 * 3 + 2 * 4
    shard_workers = {t["worker"] for t in tasks.data
                     if str(t["key"]).split("-")[0].strip("('") in ("score_shard", "full_shard")}
    assert len(shard_workers) == 2
    assert_agree(local_batch.state, local_batch.particles, res.state, res.particles)
    for a, b in zip(local_batch.log[:4], res.log[:4]):  # annealed minibatches: one temperature
        assert abs(b.temperature / a.temperature - 1) < 1e-5


def test_stream_agrees_with_single_process(particles, config, local_stream, client, tmp_path,
                                           stream_job, assert_agree):
    """Shards of 48 particles: several chunks per full-pass shard, uneven minibatch shards."""
    estep = DaskEStep(client, shard_size=48)
    res = stream_job(particles, config, tmp_path / "dask_stream", estep=estep)
    assert estep.n_tasks > 0
    assert len(res.history) == len(local_stream.history)
    assert_agree(local_stream.state, local_stream.particles, res.state, res.particles)


def test_fixed_shards_same_bits_on_any_number_of_workers(particles, config, client,
                                                         assert_identical):
    cfg = config.model_copy(update={"n_online_em_iters": 3, "n_full_iters": 1})
    two = run_batch(particles, cfg, estep=DaskEStep(client, shard_size=48))
    with open_client(parse_cluster("local:1"), torch_threads=1) as one_client:
        one = run_batch(particles, cfg, estep=DaskEStep(one_client, shard_size=48))
    assert_identical(two.state, two.particles, one.state, one.particles)


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


def test_one_estep_equals_single_process_and_client_reads_no_image(particles, config, client):
    """A minibatch and a full pass on the cluster: the local results within float rounding;
    the workers read the images, the client only when re-seeding needs them."""
    src = CountingSource(particles)
    engine = Engine(config, src.box, src.pixel_size_A)
    engine.initialise(load_batch(engine, src, np.arange(80)))
    src.reads = 0
    idx = np.arange(0, 240, 3)
    estep = DaskEStep(client, shard_size=24)
    out = estep.minibatch(engine, src, idx, factor=8.0)
    res, stats, temp = estep.full(engine, src)
    assert src.reads == 0
    t = estep.traffic
    assert t.esteps == 2 and t.model > 0 and t.scores == idx.size * config.n_classes * 4
    assert t.shards < 300 * (idx.size + 240)  # metadata only, no pixels

    local = LocalEStep().minibatch(engine, particles, idx, factor=8.0)
    assert out.temperature == local.temperature > 1.0  # one temperature for the minibatch
    torch.testing.assert_close(out.stats.num, local.stats.num, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(out.result.cls, local.result.cls)
    np.testing.assert_allclose(out.result.posterior, local.result.posterior, atol=1e-5)
    l_res, l_stats, l_temp = LocalEStep().full(engine, particles)
    assert temp == l_temp
    torch.testing.assert_close(stats.den, l_stats.den, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(res.index, np.arange(240))
    np.testing.assert_array_equal(res.psi_deg, l_res.psi_deg)

    assert isinstance(out.batch, LazyBatch) and not out.batch.loaded
    assert out.batch.n == idx.size and src.reads == idx.size
