"""Shared fixtures for the Dask tests: a tiny simulated data set on disk (workers read it
themselves), a small fast configuration, a 2-worker LocalCluster, and the single-process
reference results everything is compared with.

Everything runs single-threaded (torch and OpenMP, in this process and in each worker): the test
machine has 2 cores shared by everyone, and it is also what makes the comparisons exact: BLAS
matrix products and torch reductions split their sums by thread count, so the single-process
E-steps must run with the workers' thread count to give the same bits (the ``client`` fixture
checks that they do).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cryoclass.config import Config
from cryoclass.io import ParticleSet, read_particles
from cryoclass.schedules.batch import ClassificationResult, run_batch
from cryoclass.simulate import simulate_dataset
from cryoclass.stream import Stream

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

BOX, APIX, VIEWS, N = 32, 5.0, 4, 240
CHUNKS = (60, 60, 60, 60)  # streaming deliveries (particles)


def small_config(**overrides) -> Config:
    """K = 4, minibatch 80, 6 online-EM iterations annealed over 1..4, 2 full passes in chunks
    of 64 particles (4 chunks for 240 particles)."""
    base = dict(
        n_classes=VIEWS,
        max_res_A=12.5,
        batch_size_per_class=20,
        n_online_em_iters=6,
        n_full_iters=2,
        sigma_anneal_start=1,
        sigma_anneal_iters=3,
        seed=0,
        device="cpu",
        initial_uncertainty_factor=8.0,
        batch_particles=64,
    )
    base.update(overrides)
    return Config(**base)


@pytest.fixture(scope="session")
def config() -> Config:
    return small_config()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """240 simulated particles (8 micrographs of 30), RELION STAR + MRC stacks."""
    out = tmp_path_factory.mktemp("dask_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            out,
            n_particles=N,
            box=BOX,
            pixel_size_A=APIX,
            n_views=VIEWS,
            snr=1.0,
            particles_per_micrograph=30,
            seed=1,
        )
    return out


@pytest.fixture(scope="session")
def particles(dataset) -> ParticleSet:
    return read_particles(dataset / "particles.star")


@pytest.fixture(scope="session")
def local_batch(particles, config) -> ClassificationResult:
    """The single-process batch job."""
    return run_batch(particles, config)


@pytest.fixture(scope="session")
def local_stream(particles, config, tmp_path_factory):
    """The single-process streaming job."""
    return _stream_job(particles, config, tmp_path_factory.mktemp("local_stream"))


@pytest.fixture(scope="session")
def stream_job():
    """stream_job(particles, config, out, estep=None) -> StreamResult (see _stream_job)."""
    return _stream_job


@pytest.fixture(scope="session")
def assert_identical():
    """assert_identical(state_a, particles_a, state_b, particles_b): see _assert_identical."""
    return _assert_identical


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes (1 thread, 1 torch thread each)."""
    from cryoclass.distributed import open_client, parse_cluster

    with open_client(parse_cluster("local:2"), torch_threads=1) as c:
        c.wait_for_workers(2, timeout=60)
        threads = set(c.run(torch.get_num_threads).values())
        assert threads == {torch.get_num_threads()} == {1}, "workers and tests on 1 thread"
        yield c


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*too small for the phantom.*")
        warnings.filterwarnings("ignore", message=".*not writable.*")
        logging.getLogger("distributed").setLevel(logging.ERROR)
        yield


def _stream_job(particles: ParticleSet, config: Config, out: Path, estep=None):
    """Stream the particles in CHUNKS (in file order); returns the finished StreamResult."""
    with Stream(config, out, outputs_every_s=1e9, estep=estep) as s:
        start = 0
        for size in CHUNKS:
            s.add_particles(particles.subset(np.arange(start, start + size)))
            start += size
        return s.finish()


def _in_order(parts):
    order = np.argsort(parts.index)
    return parts.take(order).to_dict()


def _assert_identical(a_state, a_parts, b_state, b_parts) -> None:
    """Two runs are the same bit for bit: model (class images, every statistic, noise spectrum,
    resolutions, working band, counters) and every per-particle result (class, pose,
    posteriors, likelihood), each particle classified once."""
    assert torch.equal(a_state.class_images, b_state.class_images)
    for name in ("num", "den", "weight", "noise_power", "noise_count"):
        assert torch.equal(getattr(a_state.stats, name), getattr(b_state.stats, name)), name
    assert torch.equal(a_state.sigma2, b_state.sigma2)
    assert torch.equal(a_state.resolution_A, b_state.resolution_A)
    assert (a_state.r_work, a_state.processed, a_state.distinct_seen, a_state.iteration) == (
        b_state.r_work,
        b_state.processed,
        b_state.distinct_seen,
        b_state.iteration,
    )
    a, b = _in_order(a_parts), _in_order(b_parts)
    assert np.unique(a["index"]).size == a["index"].size
    for f in a:
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)
