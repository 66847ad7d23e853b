"""Rotations, the Fourier-slice projector, the phantom, noise and view selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoclass.quality.transforms import rotate_images, shift_images
from cryoclass.simulate.geometry import (
    direction_to_matrix,
    euler_to_matrix,
    fibonacci_hemisphere,
    matrix_to_euler,
    rot_z,
    rotvec_to_matrix,
)
from cryoclass.simulate.noise import coloured_noise, noise_amplitude, relion_normalise
from cryoclass.simulate.phantom import phantom_volume
from cryoclass.simulate.projection import FourierProjector, project_real_space
from cryoclass.simulate.views import inplane_period, select_views

BOX, APIX = 48, 3.0


def _ncc(a, b) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def vol() -> np.ndarray:
    return phantom_volume(BOX, APIX)


@pytest.fixture(scope="module")
def proj(vol) -> FourierProjector:
    return FourierProjector(vol)


def test_euler_round_trip_and_relion_form():
    rng = np.random.default_rng(0)
    ang = np.stack(
        [rng.uniform(-180, 180, 50), rng.uniform(1, 179, 50), rng.uniform(-180, 180, 50)], 1
    )
    m = euler_to_matrix(*ang.T)
    assert np.allclose(m @ m.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(m), 1.0)
    assert np.allclose(euler_to_matrix(*matrix_to_euler(m).T), m, atol=1e-9)
    # RELION: Euler(0, 0, psi) = Rz(-psi); third row = projection direction
    assert np.allclose(euler_to_matrix(0, 0, 30.0), rot_z(-30.0))
    d = fibonacci_hemisphere(20)
    mats, _ = direction_to_matrix(d)
    assert np.allclose(mats[:, 2, :], d, atol=1e-12)
    assert np.all(d[:, 2] > 0) and np.allclose(np.linalg.norm(d, axis=1), 1.0)
    r = rotvec_to_matrix(np.array([[0.0, 0.0, np.pi / 2]]))[0]
    assert np.allclose(r, rot_z(90.0)[0], atol=1e-12)


def test_projection_along_z_is_sum_along_z(vol, proj):
    img = proj.project(np.eye(3)[None])[0].numpy()
    ref = vol.sum(axis=0)
    assert _ncc(img, ref) > 0.9995
    # grid-aligned slices carry the gridding pre-correction (1/sinc^2, up to +23 % at the box
    # edge) unattenuated: a few % more total density for this worst case (a phantom filling the box)
    assert img.sum() == pytest.approx(ref.sum(), rel=0.07)


def test_fourier_projector_matches_real_space(vol, proj):
    m = euler_to_matrix([30.0, 100.0], [40.0, 80.0], [10.0, 200.0])
    a = proj.project(m).numpy()
    b = project_real_space(vol, m).numpy()
    for i in range(2):
        assert _ncc(a[i], b[i]) > 0.999


def test_rot_z_turns_projection_and_shift_moves_it(proj):
    m0 = euler_to_matrix(30.0, 60.0, 0.0)
    turned = proj.project(rot_z(25.0) @ m0)[0]
    assert _ncc(turned.numpy(), rotate_images(proj.project(m0)[0], 25.0).numpy()) > 0.999
    moved = proj.project(m0, shifts_px=np.array([[2.5, -1.0]]))[0]
    assert _ncc(moved.numpy(), shift_images(proj.project(m0)[0], (2.5, -1.0)).numpy()) > 0.9999


def test_phantom_is_asymmetric_and_compact(vol):
    assert vol.shape == (BOX,) * 3 and vol.max() == pytest.approx(1.0)
    g = np.arange(BOX) - BOX // 2
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    assert vol[r > 0.48 * BOX].max() < 0.1  # (nearly) fits the box
    assert _ncc(vol, vol[:, :, ::-1]) < 0.8 and _ncc(vol, vol[::-1]) < 0.8


def test_views_are_distinct_and_top_first(proj):
    vs = select_views(proj, 6, APIX, n_candidates=60)
    assert vs.images.shape == (6, BOX, BOX)
    assert np.allclose(vs.directions[0], [0, 0, 1])
    s = vs.similarity.copy()
    np.fill_diagonal(s, 0)
    assert s.max() < 0.97 and vs.min_separation_deg > 10
    assert np.allclose(vs.matrices[:, 2, :], vs.directions)
    assert [inplane_period(v) for v in vs.images] == [360.0] * 6


def test_inplane_period_of_symmetric_image():
    yy, xx = np.mgrid[:BOX, :BOX] - BOX // 2
    img = (
        sum(
            np.exp(-((xx - 10 * np.cos(t)) ** 2 + (yy - 10 * np.sin(t)) ** 2) / 8.0)
            for t in np.deg2rad([0, 90, 180, 270] + [20])
        )
        * 1.0
    )
    four = sum(
        np.exp(-((xx - 10 * np.cos(t)) ** 2 + (yy - 10 * np.sin(t)) ** 2) / 8.0)
        for t in np.deg2rad([0, 90, 180, 270])
    )
    assert inplane_period(four) == 90.0
    assert inplane_period(img) == 360.0


def test_noise_spectrum_variance_and_normalisation():
    amp = noise_amplitude(64, 2.0, floor=0.15, falloff_A=25.0)
    n = coloured_noise(np.random.default_rng(0), 200, 64, amp)
    assert float(n.var()) == pytest.approx(1.0, rel=0.05)
    ps = (torch.fft.rfft2(n).abs() ** 2).mean(0)
    assert float(ps[0, 1:4].mean()) > 3 * float(ps[0, 28:32].mean())  # falls with frequency
    imgs = relion_normalise(3.0 * n + 5.0)
    g = torch.arange(64) - 32
    bg = torch.sqrt(g[:, None] ** 2 + g[None, :] ** 2) > 24
    assert torch.allclose(imgs[:, bg].mean(1), torch.zeros(200), atol=1e-4)
    assert torch.allclose(imgs[:, bg].std(1), torch.ones(200), atol=1e-4)
