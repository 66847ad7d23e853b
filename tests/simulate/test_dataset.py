"""End-to-end tests of simulate_dataset: files, truth, conventions, SNR, membrane, seeds."""

from __future__ import annotations

import json
import math

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from cryoclass.io import read_particles
from cryoclass.physics.ctf import ctf_rfft
from cryoclass.quality.metrics import best_ncc_inplane
from cryoclass.quality.transforms import bandpass_images, rotate_images, shift_images
from cryoclass.simulate import Simulation, SimulationConfig, iter_micrographs, simulate_dataset

SMALL = dict(
    n_particles=90,
    box=48,
    pixel_size_A=3.0,
    n_views=5,
    particles_per_micrograph=40,
    view_candidates=60,
)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


PROGRESS: list[tuple[int, int]] = []


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy")
    return out, simulate_dataset(
        out, snr=0.05, seed=3, progress=lambda d, n: PROGRESS.append((d, n)), **SMALL
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return out, simulate_dataset(out, snr=math.inf, ctf=False, jitter_deg=0.0, seed=5, **SMALL)


def test_files_written_and_readable(noisy):
    out, res = noisy
    for name in [
        "particles.star",
        "truth.csv",
        "views.mrcs",
        "views.csv",
        "sim_params.json",
        "particles_preview.png",
        "views_preview.png",
    ]:
        assert (out / name).is_file(), name
    assert res.n_micrographs == 3 and len(res.micrograph_stars) == 3
    star = starfile.read(out / "particles.star", always_dict=True)
    assert set(star) == {"optics", "particles"}
    parts = star["particles"]
    assert len(parts) == 90
    optics = star["optics"]
    assert float(optics["rlnImagePixelSize"][0]) == 3.0 and int(optics["rlnImageSize"][0]) == 48
    assert float(optics["rlnVoltage"][0]) == 300.0
    assert parts["rlnImageName"][0] == "000001@Movies/mic_0001.mrcs"
    with mrcfile.open(out / "Movies/mic_0001.mrcs") as m:
        assert m.data.shape == (40, 48, 48) and m.data.dtype == np.float32
        assert float(m.voxel_size.x) == pytest.approx(3.0)
    views = mrcfile.read(out / "views.mrcs")
    assert views.shape == (5, 48, 48)
    # per-micrograph STAR: image names relative to the data set folder (RELION's project dir)
    mic = starfile.read(out / "Movies/mic_0002.star", always_dict=True)["particles"]
    assert len(mic) == 40 and mic["rlnImageName"].iloc[0] == "000001@Movies/mic_0002.mrcs"
    ps2 = read_particles(out / "Movies/mic_0002.star", project_dir=out)
    assert ps2.images([0]).shape == (1, 48, 48)


def test_read_particles_and_truth_rows_match(noisy):
    out, _ = noisy
    ps = read_particles(out / "particles.star")
    truth = pd.read_csv(out / "truth.csv")
    assert len(ps) == len(truth) == 90
    assert list(ps.table["rlnImageName"]) == list(truth["image_name"])
    assert np.allclose(ps.table["rlnDefocusU"], truth["defocus_u"])
    assert np.allclose(ps.table["rlnDefocusAngle"], truth["defocus_angle"])
    assert ps.box == 48 and ps.pixel_size_A == pytest.approx(3.0)
    imgs = ps.images(np.arange(len(ps)))
    stack = mrcfile.read(out / "Movies/mic_0003.mrcs")
    assert np.array_equal(imgs[80], stack[0])
    # truth fields: shifts within the clip, views in range, micrograph numbers 1-based
    assert truth[["shift_x_px", "shift_y_px"]].abs().max().max() <= 6.0
    assert set(truth["view"]) <= set(range(5)) and truth["micrograph"].min() == 1
    assert np.allclose(truth["shift_x_A"], truth["shift_x_px"] * 3.0, atol=1e-3)
    # RELION-style normalisation: background outside 0.75 of the radius mean 0, sd 1
    g = np.arange(48) - 24
    bg = np.hypot(g[:, None], g[None, :]) > 0.75 * 24
    assert np.allclose(imgs[:, bg].mean(1), 0, atol=1e-4)
    assert np.allclose(imgs[:, bg].std(1), 1, atol=1e-3)


def test_realised_snr_within_20_percent(noisy):
    out, res = noisy
    params = json.loads((out / "sim_params.json").read_text())
    assert params["snr_realised_mean"] == pytest.approx(0.05, rel=0.2)
    assert res.snr_realised == pytest.approx(0.05, rel=0.2)
    assert params["apix"] == 3.0 and params["box"] == 48  # the benchmark's keys


def test_truth_snr_is_signal_variance_over_noise_variance():
    """truth.csv's per-particle snr = variance of the noise-free CTF'd particle inside its mask /
    sigma^2, and sigma makes the mean equal the requested SNR (all particles calibrate here)."""
    sim = Simulation(SimulationConfig(snr=0.2, seed=1, **dict(SMALL, n_particles=40)))
    mic = sim.micrograph(0)
    clean, signal, _ = sim.render(np.arange(40))
    mask = clean > 0.05 * clean.flatten(1).max(1).values[:, None, None]
    var = np.array([float(signal[i][mask[i]].var(unbiased=False)) for i in range(40)])
    assert np.allclose(mic.truth["snr"], var / sim.noise_sigma**2, rtol=1e-3)
    assert mic.truth["snr"].mean() == pytest.approx(0.2, rel=1e-3)


def test_particle_is_rotated_shifted_view(clean):
    """snr = inf, no CTF, no jitter: particle == T(shift) R(-psi) view (bench convention)."""
    out, _ = clean
    truth = pd.read_csv(out / "truth.csv")
    views = mrcfile.read(out / "views.mrcs")
    ps = read_particles(out / "particles.star")
    imgs = ps.images(np.arange(len(ps)))
    for i in range(0, 90, 9):
        t = truth.iloc[i]
        model = shift_images(
            rotate_images(views[int(t.view)], -t.psi_deg), (t.shift_x_px, t.shift_y_px)
        ).numpy()
        assert _ncc(imgs[i], model) > 0.99, i
        # the opposite psi sign does not match
        wrong = shift_images(
            rotate_images(views[int(t.view)], t.psi_deg), (t.shift_x_px, t.shift_y_px)
        ).numpy()
        if abs(math.sin(math.radians(t.psi_deg))) > 0.3:
            assert _ncc(imgs[i], wrong) < 0.95
    # and the search of the quality helper recovers angle -psi and the shift
    t = truth.iloc[4]
    ncc, ang, (sx, sy) = best_ncc_inplane(imgs[4], views[int(t.view)], 3.0)
    assert ncc > 0.98
    assert abs((ang + t.psi_deg + 180) % 360 - 180) < 1.5
    assert abs(sx - t.shift_x_px) < 0.5 and abs(sy - t.shift_y_px) < 0.5


def test_ctf_sign_and_padding():
    """Noise-free CTF particles equal the CTF applied (in a 2x box) to the clean particle; at low
    frequency the CTF is positive, so the particle stays white (positive correlation)."""
    cfg = SimulationConfig(snr=math.inf, seed=2, **SMALL)
    sim = Simulation(cfg)
    idx = np.arange(8)
    clean, signal, _ = sim.render(idx)
    p = 96
    big = torch.zeros(8, p, p)
    big[:, 24:72, 24:72] = clean
    ctf = ctf_rfft(
        p,
        3.0,
        sim.defocus_u[idx],
        sim.defocus_v[idx],
        sim.defocus_angle[idx],
        300.0,
        2.7,
        0.1,
        0.0,
        50.0,
    )
    ref = torch.fft.fftshift(
        torch.fft.irfft2(torch.fft.rfft2(torch.fft.ifftshift(big, dim=(-2, -1))) * ctf, s=(p, p)),
        dim=(-2, -1),
    )[:, 24:72, 24:72]
    for i in range(8):
        assert _ncc(signal[i].numpy(), ref[i].numpy()) > 0.995
        low = bandpass_images(signal[i], 3.0, lowpass_A=30.0).numpy()
        assert _ncc(low, bandpass_images(clean[i], 3.0, lowpass_A=30.0).numpy()) > 0.5


def test_invert_contrast():
    sim = Simulation(SimulationConfig(seed=4, **dict(SMALL, n_particles=40, n_views=3)))
    a = sim.micrograph(0).images
    sim.config.invert_contrast = True
    b = sim.micrograph(0).images
    assert np.allclose(a, -b)


def test_membrane_adds_low_resolution_power():
    from cryoclass.simulate.geometry import euler_to_matrix
    from cryoclass.simulate.micrographs import build_volume
    from cryoclass.simulate.projection import FourierProjector

    plain, _ = build_volume(SimulationConfig(**SMALL))
    mem, info = build_volume(SimulationConfig(membrane=True, belt_density=0.4, **SMALL))
    assert info["belt"]["belt_mass_fraction"] > 0.1
    assert info["belt"]["outer_diameter_A"] > 70
    # protein density kept (voxel-wise maximum), belt at 0.4 of the peak in the slab
    assert np.all(mem >= plain - 1e-6)
    assert float(mem[24, 24, 24 + 10]) == pytest.approx(0.4, abs=0.03)  # 30 A out, in the slab
    # the same directions (top, side, tilted), with and without the belt:
    # more low-resolution (< 1/40 A) power
    m = euler_to_matrix([0.0, 30.0, 120.0], [0.0, 90.0, 50.0], 0.0)
    a = FourierProjector(plain).project(m)
    b = FourierProjector(mem).project(m)
    la = bandpass_images(a, 3.0, lowpass_A=40.0)
    lb = bandpass_images(b, 3.0, lowpass_A=40.0)
    assert torch.all((lb**2).sum(dim=(1, 2)) > 1.3 * (la**2).sum(dim=(1, 2)))


def test_reproducible_and_independent_of_order():
    """The same seed gives the same data; micrograph k is the same whether made after the others
    or alone (what streaming needs); another seed gives other data."""
    kw = dict(SMALL, n_particles=80, n_views=3)
    mics = list(iter_micrographs(SimulationConfig(seed=7, **kw)))
    assert [len(m.table) for m in mics] == [40, 40]
    again = Simulation(SimulationConfig(seed=7, **kw)).micrograph(1)
    assert np.array_equal(mics[1].images, again.images)
    assert mics[1].truth.equals(again.truth) and mics[1].table.equals(again.table)
    other = Simulation(SimulationConfig(seed=8, **kw)).micrograph(1)
    assert not np.array_equal(other.images, again.images)


def test_micrograph_sizes_and_validation():
    from cryoclass.simulate.micrographs import micrograph_sizes

    sizes = micrograph_sizes(np.random.default_rng(0), 700, (100, 300))
    assert sum(sizes) == 700 and min(sizes[:-1]) >= 100
    assert micrograph_sizes(np.random.default_rng(0), 95, 40) == [40, 40, 15]
    with pytest.raises(ValueError):
        SimulationConfig(box=47).validate()
    with pytest.raises(ValueError):
        SimulationConfig(snr=0).validate()
    cfg = SimulationConfig()
    assert cfg.validate() is cfg


def test_progress_callback(noisy):
    assert PROGRESS == [(40, 90), (80, 90), (90, 90)]
