"""Noise spectra per defocus group (``Config.noise_group_width_um``): each group's spectrum is
estimated from its own particles' residuals, and scoring and averaging weigh each particle by it."""

from __future__ import annotations

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.em import Engine
from cryoclass.engine.model import ModelState
from cryoclass.engine.mstep import (
    NOISE_GROUP_PRIOR_PARTICLES,
    NOISE_GROUPS,
    Statistics,
    accumulate,
    group_whitening,
    noise_groups,
    noise_spectrum,
)
from cryoclass.engine.source import load_batch
from cryoclass.physics.fourier import make_band, rfft_band, shell_sum

from .conftest import APIX, BOX, ArraySource, make_set, state_holding, true_assignments


def _engine(**kw) -> Engine:
    base = dict(n_classes=3, max_res_A=8.0, psi_step_deg=10.0, device="cpu")
    return Engine(Config(**{**base, **kw}), BOX, APIX)


def _filter_power(s: torch.Tensor) -> torch.Tensor:
    """|H|^2 of the second group's noise filter at spatial frequency s (1/pixel)."""
    return torch.exp(-s / 0.15) + 0.3


def _two_defocus_set(n: int, seed: int):
    """make_set's particles with white noise at 1.0 µm defocus (first half) and noise of power
    spectrum _filter_power at 2.5 µm (second half); returns them, their noise alone (as a
    source) and which are in the second half."""
    src, truth = make_set(n, ctf=False, seed=seed)
    second = np.arange(n) >= n // 2
    src.table["rlnDefocusU"] = np.where(second, 25000.0, 10000.0)
    src.table["rlnDefocusV"] = src.table["rlnDefocusU"] - 100.0
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, BOX, BOX, generator=gen)
    fy = torch.fft.fftfreq(BOX)[:, None]
    fx = torch.fft.rfftfreq(BOX)[None, :]
    h = _filter_power(torch.sqrt(fx**2 + fy**2)).sqrt()
    coloured = torch.fft.irfft2(torch.fft.rfft2(noise) * h, s=(BOX, BOX))
    coloured /= coloured.std(dim=(1, 2), keepdim=True)
    noise[second] = coloured[second]
    src.add(0.7 * noise)
    return src, ArraySource(0.7 * noise, src.table), second


def test_particles_are_grouped_by_mean_defocus():
    src, _, _ = _two_defocus_set(8, 0)
    src.table["rlnDefocusU"] = [500.0, 10000.0, 10999.0, 11100.0, 25000.0, 9e5, 10000.0, 0.0]
    src.table["rlnDefocusV"] = [500.0, 10000.0, 10999.0, 10900.0, 25000.0, 9e5, 12000.0, 0.0]
    batch = load_batch(_engine(), src, np.arange(8))
    groups = noise_groups(batch, 1000.0).tolist()
    assert groups == [0, 10, 10, 11, 25, NOISE_GROUPS - 1, 11, 0]
    assert noise_groups(batch, 0.0).tolist() == [0] * 8


def test_each_defocus_group_gets_its_own_noise_spectrum():
    """Two defocus groups, one with white noise, one with low-passed noise: the ratio of the
    model's two group spectra is that of the noise in their images, each with the prior's share
    of both, within 15 % in every shell of the band (the residuals hold the model's misfit too,
    alike in both groups: up to 11 % of the ratio in the lowest shells); with one spectrum for
    all there is no per-group weight."""
    src, noise_only, second = _two_defocus_set(800, 1)
    eng = _engine(skip_ctf=True)  # the images have no CTF; their defocus only groups them
    batch = load_batch(eng, src, np.arange(len(src)))
    eng.initialise(batch)
    for _ in range(3):
        _, stats, _ = eng.expectation(batch, 0.0)
        eng.absorb(stats, batch.n, batch.n, replace=True)
    groups = noise_groups(batch, 1000.0)
    white, low = int(groups[0]), int(groups[-1])
    r = int(eng.state.r_work)
    measured = (eng.state.noise_whitening[white] / eng.state.noise_whitening[low])[1:r]

    # the noise as the engine sees it (normalised and masked), its power per shell by group
    noise = load_batch(eng, noise_only, np.arange(len(src))).images
    band = make_band(BOX, BOX / 2.0, r_lo=0.5)
    X = rfft_band(noise, band)
    power = shell_sum(X.real**2 + X.imag**2, band.shell, eng.n_shells)
    in_second = torch.as_tensor(second)
    each, both = power[in_second].mean(0), power.mean(0)
    prior = NOISE_GROUP_PRIOR_PARTICLES / in_second.sum()  # each group is half the particles
    low_power, white_power = (each + prior * both), (power[~in_second].mean(0) + prior * both)
    expected = (low_power / white_power)[1:r]

    assert r >= 6 and expected[0] / expected[-1] > 1.5  # the groups' spectra differ in shape
    assert torch.all((measured / expected - 1).abs() < 0.15), (measured, expected)
    assert eng.spectral_weight(batch).shape == (batch.n, eng.n_shells)
    one = _engine(skip_ctf=True, noise_group_width_um=0.0)
    one.state = eng.state
    assert one.spectral_weight(batch) is None


def test_a_group_with_no_residuals_keeps_the_job_spectrum_and_white_noise_one_level():
    stats = Statistics.zeros(2, 10, 5, torch.device("cpu"))
    stats.weight[0, 0] = 100.0
    stats.noise_power[3] = 100.0 * 4.0 * torch.arange(1, 6.0)  # 100 particles, 4 points a shell
    stats.noise_count[3] = 100.0 * 4.0
    sigma2 = torch.full((5,), 2.0)
    w = group_whitening(stats, sigma2)
    assert torch.all(w[0] == 1.0) and torch.all(w[NOISE_GROUPS - 1] == 1.0)
    # 100 particles of power 1..5 per point, plus the prior's particles' worth of the job's 2.0
    m = NOISE_GROUP_PRIOR_PARTICLES
    own = (100.0 * torch.arange(1, 6.0) + m * 2.0) / (100.0 + m)
    assert torch.allclose(w[3], 2.0 / own)
    # white_noise: one flat level per group, its mean over the shells against the job's
    flat = group_whitening(stats, sigma2, flat=True)
    assert torch.all(flat[0] == 1.0)
    assert torch.allclose(flat[3], torch.full((5,), 2.0 / float(own.mean())))


def test_averages_weigh_each_particle_by_its_groups_spectrum():
    """A particle whose group's noise is 4x the job's adds a quarter of its CTF X and CTF^2."""
    src, truth = make_set(40, ctf=True, noise_sd=0.1, seed=3)
    eng = _engine()
    batch = load_batch(eng, src, np.arange(len(src)))
    n = batch.n
    pairs = true_assignments(truth)
    gmask = eng.grid_mask(eng.r_max)
    half = eng.half_of(batch.index)
    plain = Statistics.zeros(3, eng.grid.size, eng.n_shells, eng.device)
    accumulate(batch, pairs, half, eng.grid, gmask, 3, plain)
    weighted = Statistics.zeros(3, eng.grid.size, eng.n_shells, eng.device)
    accumulate(
        batch, pairs, half, eng.grid, gmask, 3, weighted, torch.full((n, eng.n_shells), 0.25)
    )
    assert torch.allclose(weighted.num, 0.25 * plain.num, atol=1e-5)
    assert torch.allclose(weighted.den, 0.25 * plain.den, atol=1e-5)
    assert torch.equal(weighted.weight, plain.weight)


def test_a_model_saved_with_one_noise_spectrum_loads_with_it_in_every_group():
    """Checkpoints written before noise groups ((n_shells,) residual statistics) load with the
    residuals shared by every group: the job's spectrum is the same and no group differs."""
    k, shells = 3, 4
    s = Statistics.zeros(k, 5, shells, torch.device("cpu"))
    state = state_holding(s)
    d = state.to_dict()
    d["stats"]["noise_power"] = torch.tensor([8.0, 6.0, 4.0, 0.0])
    d["stats"]["noise_count"] = torch.tensor([2.0, 2.0, 2.0, 0.0])
    back = ModelState.from_dict(d)
    assert back.stats.noise_power.shape == (NOISE_GROUPS, shells)
    spectrum = noise_spectrum(back.stats, torch.full((shells,), 9.0))
    assert torch.allclose(spectrum, torch.tensor([4.0, 3.0, 2.0, 9.0]))
    assert torch.allclose(group_whitening(back.stats, spectrum), torch.ones(NOISE_GROUPS, shells))
    assert back.noise_whitening is None
