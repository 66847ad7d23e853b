"""Shared fixtures for the dashboard tests: one small finished classification job (box 32 px at
5 Å, 3 classes, 240 particles) made once per session, and fresh copies of it.

Tests run single-threaded (torch and OpenMP), as the streaming tests do: on the small shared
test machine many small tensor operations are faster that way, and subprocesses inherit it.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

from cryoclass.config import Config
from cryoclass.simulate import simulate_dataset

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

BOX, APIX, VIEWS, N = 32, 5.0, 3, 240


def small_config(**overrides) -> Config:
    """K = 3, minibatches of 60, 4 online-EM iterations, 1 full pass: a job of a few seconds."""
    base = dict(
        n_classes=VIEWS,
        max_res_A=12.5,
        batch_size_per_class=20,
        n_online_em_iters=4,
        n_full_iters=1,
        sigma_anneal_start=1,
        sigma_anneal_iters=3,
        seed=0,
        device="cpu",
        initial_uncertainty_factor=8.0,
    )
    base.update(overrides)
    return Config(**base)


@pytest.fixture(scope="session")
def finished_job(tmp_path_factory) -> Path:
    """Output folder of a finished batch job on simulated data (do not modify: see ``job``)."""
    from cryoclass.jobs.classify import classify

    root = tmp_path_factory.mktemp("dash_job")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            root / "data",
            n_particles=N,
            box=BOX,
            pixel_size_A=APIX,
            n_views=VIEWS,
            snr=1.0,
            particles_per_micrograph=40,
            seed=3,
        )
        classify(root / "data" / "particles.star", small_config(), root / "job")
    return root / "job"


@pytest.fixture
def job(finished_job, tmp_path) -> Path:
    """A private copy of the finished job (tests may write selections into it)."""
    dst = tmp_path / "job"
    shutil.copytree(finished_job, dst, ignore=shutil.ignore_patterns(".*lock"))
    return dst
