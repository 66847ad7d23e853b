"""The parts of the Dask layer that need no cluster: cluster names, shard plans, what a shard
and the broadcast model carry, device choice, option checks."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from cryoclass.cli import classify as classify_cli
from cryoclass.cli import stream as stream_cli
from cryoclass.distributed.cluster import ClusterSpec, parse_cluster, worker_device, worker_ordinal
from cryoclass.distributed.estep import _tensor_bytes
from cryoclass.distributed.shards import SHARD_COLUMNS, ShardSource, make_shard
from cryoclass.distributed.tasks import Geometry, broadcast_state, load_shard, pack
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import LocalEStep, ShardPlan, full_pass_shards, minibatch_shards
from cryoclass.engine.mstep import Statistics
from cryoclass.engine.source import load_batch
from cryoclass.jobs.execution import check_execution, executor_for


@pytest.mark.parametrize(
    "text, spec",
    [
        ("local", ClusterSpec("local")),
        ("local:3", ClusterSpec("local", workers=3)),
        (" slurm : 4 ", ClusterSpec("slurm", workers=4)),
        ("pbs:1", ClusterSpec("pbs", workers=1)),
    ],
)
def test_cluster_names(text, spec):
    assert parse_cluster(text) == spec


@pytest.mark.parametrize(
    "cluster, scheduler",
    [
        ("local:0", None),
        ("locl:2", None),
        ("slurm", None),
        ("local:x", None),
        ("local:2", "tcp://h:8786"),
    ],
)
def test_bad_cluster_names(cluster, scheduler):
    with pytest.raises(ValueError):
        parse_cluster(cluster, scheduler)


def test_scheduler_address_and_nothing():
    assert parse_cluster(None, "tcp://10.0.0.1:8786") == ClusterSpec(
        "scheduler", address="tcp://10.0.0.1:8786"
    )
    assert parse_cluster(None, None) is None
    with executor_for(None, None) as ex:
        assert ex is None


@pytest.mark.parametrize(
    "n, size, sizes",
    [
        (80, 64, [40, 40]),
        (7, 3, [3, 2, 2]),
        (80, 36, [27, 27, 26]),
        (5, 100, [5]),
        (128, 64, [64, 64]),
        (1, 1, [1]),
    ],
)
def test_minibatch_shards_are_fixed_by_their_size(n, size, sizes):
    """ceil(n / size) contiguous, nearly equal shards covering every position once, in order:
    a function of n and the shard size only (never of the number of workers)."""
    parts = minibatch_shards(n, size)
    assert [p.stop - p.start for p in parts] == sizes
    np.testing.assert_array_equal(np.concatenate([np.arange(n)[p] for p in parts]), np.arange(n))
    assert minibatch_shards(0, size) == []


@pytest.mark.parametrize(
    "n, chunk, chunks, per",
    [
        (240, 64, 1, 64),
        (240, 64, 2, 128),
        (240, 64, 8, 240),
        (240, 16, 2, 32),
        (1000, 7, 4, 28),
        (5, 64, 8, 5),
    ],
)
def test_full_pass_shards_are_whole_chunks(n, chunk, chunks, per):
    """Shards of ``chunks`` whole chunks: each starts where a chunk of a local full pass
    starts, all but the last hold exactly that many chunks."""
    parts = full_pass_shards(n, chunk, chunks)
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
    assert all(p[0] % chunk == 0 for p in parts)
    assert [p.size for p in parts[:-1]] == [min(per, n)] * (len(parts) - 1)
    assert 0 < parts[-1].size <= per


def test_shard_plan_defaults_and_checks(particles, config):
    """Default plan: minibatch shards of config.batch_particles, full-pass shards of 8 chunks;
    the same for both executors."""
    engine = Engine(config, particles.box, particles.pixel_size_A)
    plan = ShardPlan()
    assert [p.stop - p.start for p in plan.minibatch(engine, 300)] == [60] * 5  # 64 -> 5 shards
    assert [p.size for p in plan.full(engine, 1100)] == [512, 512, 76]
    assert LocalEStep().plan == plan
    assert LocalEStep(36, 2).plan == ShardPlan(36, 2)
    for bad in (dict(shard_size=0), dict(full_shard_chunks=0)):
        with pytest.raises(ValueError):
            ShardPlan(**bad)


@pytest.mark.parametrize("min_res_A", [None, 40.0])
def test_rows_of_a_prepared_batch_are_those_rows_prepared(particles, config, min_res_A):
    """A local shard (rows of the minibatch's prepared batch) holds the same bits as the batch a
    worker prepares from those rows alone (``load_shard``: read from the stacks, no cache), and
    gives the same scores."""
    cfg = config.model_copy(update={"min_res_A": min_res_A})
    engine = Engine(cfg, particles.box, particles.pixel_size_A)
    idx = np.arange(0, 240, 3)
    whole = load_batch(engine, particles, idx)
    engine.initialise(whole)
    for part in minibatch_shards(idx.size, 36):
        mine = whole.rows(part)
        alone = load_shard(
            engine,
            make_shard(0, idx[part], particles.table),
            Geometry(particles.box, particles.pixel_size_A),
        )
        assert torch.equal(mine.index, alone.index) and torch.equal(mine.images, alone.images)
        if min_res_A is None:
            assert mine.align_images is None and alone.align_images is None
        else:
            assert torch.equal(mine.align_images, alone.align_images)
        for k in alone.ctf_params:
            assert torch.equal(mine.ctf_params[k], alone.ctf_params[k]), k
        assert torch.equal(engine.score(mine).best, engine.score(alone).best)


def test_shard_carries_metadata_not_images(particles, config):
    """A shard is the job's row numbers + a few metadata columns; the worker's batch is the
    local batch of the same rows (same pixels, CTF, half-sets)."""
    rows = np.arange(20, 220)
    shard = make_shard(2, rows, particles.table)
    assert set(shard.rows.columns) <= set(SHARD_COLUMNS)
    image_bytes = 4 * particles.box**2
    assert len(pickle.dumps(shard)) < 300 * shard.n < image_bytes * shard.n / 10
    engine = Engine(config, particles.box, particles.pixel_size_A)
    mine = load_shard(engine, shard, Geometry(particles.box, particles.pixel_size_A))
    ref = load_batch(engine, particles, rows)
    torch.testing.assert_close(mine.index, ref.index)
    torch.testing.assert_close(mine.images, ref.images, rtol=0, atol=0)
    for k in ref.ctf_params:
        torch.testing.assert_close(mine.ctf_params[k], ref.ctf_params[k], rtol=0, atol=0)
    assert len(ShardSource(shard, particles.box, particles.pixel_size_A)) == rows.size


def test_broadcast_model_is_slim_and_sufficient(particles, config):
    """Workers get class images, noise, band and class weights, not the running num/den."""
    engine = Engine(config, particles.box, particles.pixel_size_A)
    batch = load_batch(engine, particles, np.arange(80))
    engine.initialise(batch)
    engine.absorb(engine.expectation(batch, 8.0)[1], 80, 80)
    slim = broadcast_state(engine.state)
    assert slim.stats.num.numel() == 0 and slim.stats.den.numel() == 0
    torch.testing.assert_close(slim.stats.weight, engine.state.stats.weight)
    assert slim.class_images.data_ptr() != engine.state.class_images.data_ptr()
    other = Engine(config, particles.box, particles.pixel_size_A)
    other.state = slim
    a, b = engine.expectation(batch, 8.0), other.expectation(batch, 8.0)
    assert a[2] == b[2]
    torch.testing.assert_close(a[1].num, b[1].num, rtol=0, atol=0)


def test_worker_device():
    assert worker_ordinal(3) == 3
    assert worker_ordinal("SLURMCluster-12-1") == 1
    assert worker_ordinal("tcp://x") == 0
    assert worker_device("cpu", name=1) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert worker_device("auto", name=1) == torch.device("cpu")
        with pytest.raises(RuntimeError):
            worker_device("cuda", name=0)
    else:
        assert worker_device("auto", name=1).index == 1 % torch.cuda.device_count()


def test_cli_cluster_options(tmp_path):
    app = typer.Typer()
    app.command("classify")(classify_cli.command)
    app.command("stream")(stream_cli.command)
    runner = CliRunner()
    for cmd in ("classify", "stream"):
        res = runner.invoke(app, [cmd, "--help"])
        assert "--cluster" in res.output and "--scheduler" in res.output
    res = runner.invoke(
        app,
        [
            "classify",
            str(tmp_path / "p.star"),
            "--out",
            str(tmp_path / "o"),
            "--cluster",
            "lokal:2",
        ],
    )
    assert res.exit_code == 2 and "--cluster" in res.output
    assert not (tmp_path / "o").exists()


def test_jobqueue_kind_needs_dask_jobqueue():
    if importlib.util.find_spec("dask_jobqueue") is None:
        with pytest.raises(ValueError, match="dask-jobqueue"):
            check_execution("slurm:2", None)
    else:
        check_execution("slurm:2", None)


def test_packed_statistics_add_exactly_and_travel_light(particles, config):
    """A shard's statistics travel packed to the working band and add up bit for bit as the
    full-size ones do."""
    engine = Engine(config, particles.box, particles.pixel_size_A)
    batch = load_batch(engine, particles, np.arange(80))
    engine.initialise(batch)
    engine.state.r_work = 5.0
    _, stats, _ = engine.expectation(batch, 8.0)
    packed = pack(stats)
    assert packed.points.numel() == int(engine.grid_mask(5.0).sum())
    full = _tensor_bytes(stats.num, stats.den)
    assert packed.nbytes < full / 3
    a = Statistics.zeros(config.n_classes, engine.grid.size, engine.n_shells, engine.device)
    b = Statistics.zeros(config.n_classes, engine.grid.size, engine.n_shells, engine.device)
    for _ in range(2):
        a.add_(stats)
        packed.add_to(b)
    for name in ("num", "den", "weight", "noise_power", "noise_count"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
