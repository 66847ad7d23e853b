"""Interoperability fixtures: a small simulated RELION-style project and one cryoclass job on
it. RELION's binaries come from Debian's ``relion`` package (``make setup`` installs it when it
can); tests that need them skip with a message saying so when they are absent (helpers.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from cryoclass.config import Config
from cryoclass.jobs.classify import classify
from cryoclass.simulate import simulate_dataset

from .helpers import APIX, BOX, K, N


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A RELION-style project: 240 simulated particles (3 views, box 32 at 5 Å, SNR 1)."""
    out = tmp_path_factory.mktemp("interop_project")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            out,
            n_particles=N,
            box=BOX,
            pixel_size_A=APIX,
            n_views=K,
            snr=1.0,
            particles_per_micrograph=40,
            seed=8,
        )
    return out


@pytest.fixture(scope="session")
def job(project: Path) -> Path:
    """cryoclass outputs for the project, in project/Class2D/cryoclass (paths as RELION's)."""
    cfg = Config(
        n_classes=K,
        max_res_A=12.5,
        batch_size_per_class=20,
        n_online_em_iters=6,
        n_full_iters=1,
        sigma_anneal_start=1,
        sigma_anneal_iters=4,
        device="cpu",
        initial_uncertainty_factor=8.0,
    )
    out = project / "Class2D" / "cryoclass"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        classify(project / "particles.star", cfg, out)
    finally:
        torch.set_num_threads(threads)
    return out
