"""On a LocalCluster of 2 workers, batch and streaming jobs give the single-process results
(within float rounding), and the client never reads a particle image for a sharded E-step."""

from __future__ import annotations

import numpy as np
import torch

from cryoclass.distributed import DaskEStep, LazyBatch
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import LocalEStep
from cryoclass.engine.schedule import load_batch, run_batch


def test_batch_job_equals_single_process(particles, config, local_batch, client, assert_same):
    estep = DaskEStep(client)
    res = run_batch(particles, config, estep=estep)
    # 6 minibatches x 4 shards x 3 tasks + 2 full passes x 4 shards: it really ran there
    assert estep.n_tasks == 6 * 4 * 3 + 2 * 4
    assert_same(local_batch.state, local_batch.particles, res.state, res.particles)
    for a, b in zip(local_batch.log, res.log):
        assert b.temperature == a.temperature or abs(b.temperature / a.temperature - 1) < 1e-5


def test_stream_equals_single_process(particles, config, local_stream, client, tmp_path,
                                      stream_job, assert_same):
    """Shards of 48 particles: several chunks per full-pass shard, uneven minibatch shards."""
    estep = DaskEStep(client, shard_size=48)
    res = stream_job(particles, config, tmp_path / "dask_stream", estep=estep)
    assert estep.n_tasks > 0
    assert len(res.history) == len(local_stream.history)
    assert_same(local_stream.state, local_stream.particles, res.state, res.particles)


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


def test_client_reads_no_image(particles, config, client):
    """Sharded E-steps: workers read the images; the client only when re-seeding needs them."""
    src = CountingSource(particles)
    engine = Engine(config, src.box, src.pixel_size_A)
    engine.initialise(load_batch(engine, src, np.arange(80)))
    src.reads = 0
    idx = np.arange(0, 240, 3)
    estep = DaskEStep(client)
    out = estep.minibatch(engine, src, idx, factor=8.0)
    res, stats, temp = estep.full(engine, src)
    assert src.reads == 0
    t = estep.traffic
    assert t.esteps == 2 and t.model > 0 and t.scores == idx.size * config.n_classes * 4
    assert t.shards < 300 * (idx.size + 240)  # metadata only, no pixels
    local = LocalEStep().minibatch(engine, particles, idx, factor=8.0)
    assert out.temperature == local.temperature > 1.0  # one temperature for the minibatch
    torch.testing.assert_close(out.stats.num, local.stats.num, rtol=0, atol=1e-4)
    assert isinstance(out.batch, LazyBatch) and not out.batch.loaded
    assert out.batch.n == idx.size and src.reads == idx.size
    np.testing.assert_array_equal(res.index, np.arange(240))
