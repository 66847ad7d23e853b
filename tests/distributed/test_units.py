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
from cryoclass.distributed.shards import (SHARD_COLUMNS, ShardSource, make_shard, split_chunks,
                                          split_rows)
from cryoclass.distributed.estep import _tensor_bytes
from cryoclass.distributed.tasks import Geometry, broadcast_state, load_shard, pack
from cryoclass.engine.em import Engine
from cryoclass.engine.mstep import Statistics
from cryoclass.engine.schedule import load_batch
from cryoclass.jobs.execution import check_execution, executor_for


@pytest.mark.parametrize("text, spec", [
    ("local", ClusterSpec("local")),
    ("local:3", ClusterSpec("local", workers=3)),
    (" slurm : 4 ", ClusterSpec("slurm", workers=4)),
    ("pbs:1", ClusterSpec("pbs", workers=1)),
])
def test_cluster_names(text, spec):
    assert parse_cluster(text) == spec


@pytest.mark.parametrize("cluster, scheduler", [
    ("local:0", None), ("locl:2", None), ("slurm", None), ("local:x", None),
    ("local:2", "tcp://h:8786"),
])
def test_bad_cluster_names(cluster, scheduler):
    with pytest.raises(ValueError):
        parse_cluster(cluster, scheduler)


def test_scheduler_address_and_nothing():
    assert parse_cluster(None, "tcp://10.0.0.1:8786") == ClusterSpec(
        "scheduler", address="tcp://10.0.0.1:8786")
    assert parse_cluster(None, None) is None
    with executor_for(None, None) as ex:
        assert ex is None


def test_splits_cover_every_row_once_in_order():
    idx = np.array([3, 5, 8, 13, 21, 34, 55])
    parts = split_rows(idx, 3)
    assert [p.size for p in parts] == [3, 2, 2]
    np.testing.assert_array_equal(np.concatenate(parts), idx)
    assert len(split_rows(idx, 50)) == 7
    assert len(split_rows(idx, 0)) == 1


@pytest.mark.parametrize("n, chunk, shards", [(240, 64, 4), (240, 64, 3), (240, 64, 1),
                                              (100, 64, 8), (1000, 7, 5)])
def test_full_pass_shards_are_whole_chunks(n, chunk, shards):
    parts = split_chunks(n, chunk, shards)
    assert 1 <= len(parts) <= shards
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
    assert all(p[0] % chunk == 0 for p in parts)  # each starts where a local chunk starts


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
    res = runner.invoke(app, ["classify", str(tmp_path / "p.star"), "--out", str(tmp_path / "o"),
                              "--cluster", "lokal:2"])
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
