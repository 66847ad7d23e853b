"""Shared fixtures of the schedule tests: a small job configuration and one small simulated set
(240 particles, box 32 px at 5 Å, 4 views, SNR 0.3), made once per session."""

from __future__ import annotations

import warnings

import pytest

from cryoclass.config import Config
from cryoclass.io.particles import read_particles
from cryoclass.simulate import simulate_dataset

N = 240


def small_config(**overrides) -> Config:
    """K = 4, minibatches of 80, 4 online-EM iterations, 2 full passes: a job of a second."""
    base = dict(
        n_classes=4,
        max_res_A=12.5,
        batch_size_per_class=20,
        n_online_em_iters=4,
        n_full_iters=2,
        sigma_anneal_start=1,
        sigma_anneal_iters=2,
        seed=0,
        device="cpu",
        initial_uncertainty_factor=8.0,
    )
    return Config(**{**base, **overrides})


@pytest.fixture(scope="session")
def particles(tmp_path_factory):
    out = tmp_path_factory.mktemp("schedules_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            out,
            n_particles=N,
            box=32,
            pixel_size_A=5.0,
            n_views=4,
            snr=0.3,
            particles_per_micrograph=40,
            seed=3,
        )
    return read_particles(out / "particles.star")
