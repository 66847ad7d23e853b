"""Known-answer tests of cryoclass.quality: transforms, ARI, in-plane NCC search, views recovered,
psi consistency, FRC and resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoclass.quality.metrics import (
    adjusted_rand_index,
    best_ncc_inplane,
    class_view_ncc,
    frc,
    psi_consistency,
    resolution_from_frc,
    views_recovered,
)
from cryoclass.quality.transforms import (
    bandpass_images,
    fourier_crop,
    mirror_images,
    rotate_images,
    shift_images,
    soft_circular_mask,
)

D = 64


def _blobs(seed: int = 0, n: int = 5, box: int = D) -> np.ndarray:
    """An asymmetric image of a few Gaussian blobs inside the central half of the box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:box, :box] - box // 2
    img = np.zeros((box, box))
    for _ in range(n):
        cx, cy = rng.uniform(-box / 6, box / 6, 2)
        sx, sy = rng.uniform(1.5, 5.0, 2)
        img += rng.uniform(0.5, 1.0) * np.exp(
            -((xx - cx) ** 2 / (2 * sx**2) + (yy - cy) ** 2 / (2 * sy**2))
        )
    return img.astype(np.float32)


# ---------------------------------------------------------------- transforms


def test_rotate_and_shift_directions():
    img = np.zeros((D, D), np.float32)
    img[D // 2, D // 2 + 10] = 1.0  # x = +10, y = 0
    r = rotate_images(img, 90.0, mode="bilinear")
    assert np.unravel_index(int(r.argmax()), r.shape) == (D // 2 + 10, D // 2)  # -> y = +10
    s = shift_images(img, (2.0, 3.0))
    assert np.unravel_index(int(s.argmax()), s.shape) == (D // 2 + 3, D // 2 + 12)
    m = mirror_images(img)
    assert np.unravel_index(int(m.argmax()), m.shape) == (D // 2, D // 2 - 10)
    # batched angles
    out = rotate_images(np.stack([img, img]), np.array([0.0, 180.0]), mode="bilinear")
    assert out.shape == (2, D, D)
    assert np.unravel_index(int(out[1].argmax()), (D, D)) == (D // 2, D // 2 - 10)


def test_fourier_crop_mask_bandpass():
    const = np.full((2, D, D), 3.0, np.float32)
    assert torch.allclose(fourier_crop(const, 32), torch.full((2, 32, 32), 3.0), atol=1e-5)
    m = soft_circular_mask(D, 20.0, 4.0)
    assert float(m[D // 2, D // 2]) == 1.0 and float(m[0, 0]) == 0.0
    noise = torch.randn(4, D, D)
    low = bandpass_images(noise, 2.0, lowpass_A=8.0)
    spec = torch.fft.rfft2(low).abs()
    k = torch.fft.rfftfreq(D, 2.0)
    assert float(spec[:, 0, k > 1.1 / 8.0].max()) < 1e-3
    band = bandpass_images(noise, 2.0, lowpass_A=8.0, highpass_A=40.0)
    assert float(torch.fft.rfft2(band)[:, 0, 0].abs().max()) < 1e-3


# ---------------------------------------------------------------- ARI


def test_adjusted_rand_index():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, 5000)
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)
    assert adjusted_rand_index(a, (a + 3) % 10) == pytest.approx(1.0)  # renamed labels
    assert abs(adjusted_rand_index(a, rng.integers(0, 10, 5000))) < 0.01


# ---------------------------------------------------------------- in-plane search


@pytest.mark.parametrize(
    "angle,shift", [(37.0, (3.4, -2.2)), (250.0, (-5.0, 1.5)), (0.0, (0.0, 0.0))]
)
def test_best_ncc_inplane_recovers_angle_and_shift(angle, shift):
    ref = _blobs(1)
    img = shift_images(rotate_images(ref, angle), shift).numpy()  # image = T(shift) R(angle) ref
    ncc, ang, (sx, sy) = best_ncc_inplane(img, ref, pixel_size_A=2.0)
    assert ncc > 0.99
    assert abs((ang - angle + 180.0) % 360.0 - 180.0) < 1.0
    assert abs(sx - shift[0]) < 0.3 and abs(sy - shift[1]) < 0.3


def test_best_ncc_inplane_lowpass_and_different_images():
    ref = _blobs(2)
    img = shift_images(rotate_images(ref, 123.0), (1.0, 2.0)).numpy()
    ncc, ang, _ = best_ncc_inplane(img, ref, pixel_size_A=2.0, lowpass_A=10.0)
    assert ncc > 0.98 and abs((ang - 123.0 + 180) % 360 - 180) < 2.0
    other, _, _ = best_ncc_inplane(_blobs(7), ref, pixel_size_A=2.0, lowpass_A=10.0)
    assert other < ncc - 0.05
    noise = np.random.default_rng(0).standard_normal((D, D)).astype(np.float32)
    assert best_ncc_inplane(noise, ref, pixel_size_A=2.0)[0] < 0.3


def test_class_view_ncc_batched_and_mirror():
    views = np.stack([_blobs(s) for s in (1, 2, 3)])
    imgs = np.stack([rotate_images(views[2], 50.0).numpy(), mirror_images(views[0]).numpy()])
    m = class_view_ncc(imgs, views, 2.0, mirror=True)
    assert m.ncc.shape == (2, 3) and m.shift_px.shape == (2, 3, 2)
    assert m.ncc[0].argmax() == 2 and m.ncc[0, 2] > 0.99 and not m.mirrored[0, 2]
    assert m.ncc[1].argmax() == 0 and m.ncc[1, 0] > 0.99 and m.mirrored[1, 0]
    no_mirror = class_view_ncc(imgs[1:], views[:1], 2.0, mirror=False)
    assert no_mirror.ncc[0, 0] < m.ncc[1, 0]


def test_views_recovered():
    views = np.stack([_blobs(s) for s in (1, 2, 3, 4)])
    # classes = views turned and moved, plus one tiny class that would match view 3
    avgs = np.stack(
        [shift_images(rotate_images(views[v], 30.0 * v), (1.0, -1.0)).numpy() for v in range(4)]
    )
    # blob images correlate at up to ~0.91 with each other at 8 A, so use a threshold above that
    n, best = views_recovered(
        avgs, [100, 100, 100, 0], views, 2.0, ncc_threshold=0.97, lowpass_A=8.0
    )
    assert n == 3 and best.shape == (4,) and np.all(best[:3] > 0.98) and best[3] < 0.97
    n_all, _ = views_recovered(
        avgs, [100, 100, 100, 100], views, 2.0, ncc_threshold=0.97, lowpass_A=8.0
    )
    assert n_all == 4
    # a class below min_class_frac does not count
    n_frac, _ = views_recovered(
        avgs,
        [1000, 1000, 1000, 2],
        views,
        2.0,
        ncc_threshold=0.97,
        lowpass_A=8.0,
        min_class_frac=0.005,
    )
    assert n_frac == 3
    noise = np.random.default_rng(1).standard_normal((4, D, D)).astype(np.float32)
    assert views_recovered(noise, [100] * 4, views, 2.0, lowpass_A=8.0)[0] == 0


# ---------------------------------------------------------------- psi consistency


def test_psi_consistency():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 360, 2000)
    labels = rng.integers(0, 5, 2000)
    offsets = np.array([10.0, 200.0, -40.0, 90.0, 0.0])
    est = true - offsets[labels] + 360.0  # one constant per class
    assert psi_consistency(true, est, labels) == pytest.approx(1.0)
    assert psi_consistency(true, rng.uniform(0, 360, 2000), labels) < 0.1
    # C4 top view: errors of 90 degrees are consistent with period 90
    est4 = true + 90.0 * rng.integers(0, 4, 2000)
    assert psi_consistency(true, est4, labels) < 0.2
    assert psi_consistency(true, est4, labels, period_deg=90.0) == pytest.approx(1.0)
    assert np.isnan(psi_consistency(true[:3], est[:3], labels[:3]))  # classes below min size


# ---------------------------------------------------------------- FRC


def test_frc_and_resolution():
    img = _blobs(3)
    curve = frc(img, img)
    assert curve.shape == (D // 2 + 1,) and np.allclose(curve, 1.0)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 128, 128))
    noise_frc = frc(a, b)[20:]  # sd per shell ~ 1 / sqrt(pixels in the shell)
    assert np.abs(noise_frc).mean() < 0.08 and abs(noise_frc.mean()) < 0.03
    # batched
    assert frc(np.stack([a, b]), np.stack([a, b])).shape == (2, 65)
    # signal (low-passed) + independent noise: FRC falls; the resolution is near the low-pass
    sig = bandpass_images(rng.standard_normal((128, 128)), 1.0, lowpass_A=8.0).numpy() * 20.0
    c = frc(sig + rng.standard_normal((128, 128)), sig + rng.standard_normal((128, 128)))
    res = resolution_from_frc(c, pixel_size_A=1.0, box=128)
    assert 6.5 < res < 10.0
    # synthetic curve: crosses 0.143 half-way between shells 10 and 11
    synth = np.ones(33)
    synth[10], synth[11:] = 0.243, 0.043
    assert resolution_from_frc(synth, 2.0, 64) == pytest.approx(64 * 2.0 / 10.5)
    assert resolution_from_frc(np.ones(33), 2.0, 64) == pytest.approx(4.0)  # Nyquist
