"""Tests of cryoclass.physics.ctf: wavelength, hand values, zeros, astigmatism, torch-ctf, shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoclass.physics.ctf import ctf_2d, ctf_rfft, electron_wavelength_A, rfft_frequencies

KV, CS, W = 300.0, 2.7, 0.1


def test_wavelength_values():
    assert electron_wavelength_A(300.0) == pytest.approx(0.01969, abs=2e-5)
    assert electron_wavelength_A(200.0) == pytest.approx(0.02508, abs=2e-5)
    t = electron_wavelength_A(torch.tensor([300.0, 200.0]))
    assert torch.allclose(t, torch.tensor([0.019687, 0.025079], dtype=torch.float64), atol=2e-6)


def _ctf_by_hand(fx, fy, du, dv, ang, kv, cs, w, phase=0.0, b=0.0):
    lam = 12.2643247 / math.sqrt(kv * 1e3 * (1 + 0.978466e-6 * kv * 1e3))
    s2 = fx * fx + fy * fy
    th = math.atan2(fy, fx)
    dz = 0.5 * (du + dv) + 0.5 * (du - dv) * math.cos(2 * (th - math.radians(ang)))
    chi = (
        math.pi * lam * dz * s2
        - 0.5 * math.pi * cs * 1e7 * lam**3 * s2 * s2
        + math.radians(phase)
        + math.atan(w / math.sqrt(1 - w * w))
    )
    return math.sin(chi) * math.exp(-b * s2 / 4)


@pytest.mark.parametrize(
    "fx,fy", [(0.0, 0.0), (0.01, 0.0), (0.0, 0.02), (0.03, -0.04), (-0.11, 0.07)]
)
def test_hand_computed_values(fx, fy):
    params = (15000.0, 14000.0, 35.0, KV, CS, W, 20.0, 60.0)
    got = ctf_2d(torch.tensor(fx), torch.tensor(fy), *params)
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(_ctf_by_hand(fx, fy, *params), abs=2e-5)


def test_low_frequency_sign_is_positive_for_underfocus():
    # RELION sign: white-protein images, CTF(0) = w > 0
    c = ctf_2d(
        torch.tensor([0.0, 1e-3]), torch.tensor([0.0, 0.0]), 20000.0, 20000.0, 0.0, KV, CS, W
    )
    assert float(c[0, 0]) == pytest.approx(W, abs=1e-6)
    assert float(c[0, 1]) > W


def test_zeros_at_analytic_positions():
    dz = 12000.0
    lam = electron_wavelength_A(KV)
    a = 0.5 * math.pi * CS * 1e7 * lam**3
    b = math.pi * lam * dz
    c = math.atan(W / math.sqrt(1 - W * W))
    s_zero = []
    for n in range(1, 6):  # chi(s) = n*pi, chi = b u - a u^2 + c with u = s^2 (smaller root)
        u = (b - math.sqrt(b * b - 4 * a * (n * math.pi - c))) / (2 * a)
        s_zero.append(math.sqrt(u))
    s = torch.tensor(s_zero, dtype=torch.float32)
    for phi in (0.0, 1.0, 2.5):  # non-astigmatic: any azimuth
        vals = ctf_2d(s * math.cos(phi), s * math.sin(phi), dz, dz, 17.0, KV, CS, W)[0]
        assert torch.all(vals.abs() < 2e-3), vals
        # and a sign change across each zero
        lo = ctf_2d(0.99 * s, 0 * s, dz, dz, 0.0, KV, CS, W)[0]
        hi = ctf_2d(1.01 * s, 0 * s, dz, dz, 0.0, KV, CS, W)[0]
        assert torch.all(lo * hi < 0)


def test_astigmatism_angle_rotates_pattern():
    s = torch.linspace(0.0, 0.2, 50)
    th = torch.linspace(0, 2 * math.pi, 37)
    S, TH = torch.meshgrid(s, th, indexing="ij")
    alpha = 40.0
    base = ctf_2d(S * torch.cos(TH), S * torch.sin(TH), 16000.0, 13000.0, 0.0, KV, CS, W)
    a = math.radians(alpha)
    rot = ctf_2d(S * torch.cos(TH + a), S * torch.sin(TH + a), 16000.0, 13000.0, alpha, KV, CS, W)
    assert torch.allclose(base, rot, atol=2e-4)
    # along the U direction the CTF is that of defocus U, along U + 90 deg that of V
    du = ctf_2d(s * math.cos(a), s * math.sin(a), 16000.0, 13000.0, alpha, KV, CS, W)
    ref_u = ctf_2d(s, 0 * s, 16000.0, 16000.0, 0.0, KV, CS, W)
    dv = ctf_2d(-s * math.sin(a), s * math.cos(a), 16000.0, 13000.0, alpha, KV, CS, W)
    ref_v = ctf_2d(s, 0 * s, 13000.0, 13000.0, 0.0, KV, CS, W)
    assert torch.allclose(du, ref_u, atol=1e-4) and torch.allclose(dv, ref_v, atol=1e-4)


def test_matches_torch_ctf_full_grid():
    torch_ctf = pytest.importorskip("torch_ctf")
    box, apix = 96, 1.3
    du = torch.tensor([15000.0, 22000.0, 9000.0])
    dv = torch.tensor([14200.0, 21900.0, 8500.0])
    ang = torch.tensor([30.0, -65.0, 120.0])
    ours = ctf_rfft(
        box, apix, du, dv, ang, KV, CS, W, phase_shift_deg=torch.tensor([0.0, 10.0, 90.0])
    )
    # mapping: mean defocus and half astigmatism in micrometres, angle from the x (column) axis,
    # rfft layout without fftshift; identical sign (both give RELION's sin(+chi) form)
    theirs = torch_ctf.calculate_ctf_2d(
        defocus=(du + dv) / 2 / 1e4,
        astigmatism=(du - dv) / 2 / 1e4,
        astigmatism_angle=ang,
        voltage=KV,
        spherical_aberration=CS,
        amplitude_contrast=W,
        phase_shift=torch.tensor([0.0, 10.0, 90.0]),
        pixel_size=apix,
        image_shape=(box, box),
        rfft=True,
        fftshift=False,
    )
    assert theirs.shape == ours.shape == (3, box, box // 2 + 1)
    # torch-ctf takes lambda from CODATA constants (6e-6 relative to RELION's 12.2643247 formula);
    # with chi ~ 400 rad in the corners that is a few 1e-3 there, far less elsewhere
    diff = (ours - theirs).abs()
    assert float(diff.max()) < 5e-3
    fx, fy = rfft_frequencies(box, apix)
    assert float(diff[:, fx**2 + fy**2 < 0.2**2].max()) < 5e-4  # to 5 A


def test_rfft_frequencies_layout():
    fx, fy = rfft_frequencies(8, 2.0)
    assert fx.shape == fy.shape == (8, 5)
    assert torch.allclose(fx[0], torch.tensor([0, 1, 2, 3, 4]) / 16.0)
    assert torch.allclose(fy[:, 0], torch.fft.fftfreq(8, 2.0))


def test_batched_shapes_and_broadcast():
    fx, fy = rfft_frequencies(16, 2.0)
    assert ctf_2d(fx, fy, 10000.0, 10000.0, 0.0, KV, CS, W).shape == (1, 16, 9)
    n = 5
    du = np.linspace(8000, 30000, n)
    c = ctf_2d(fx, fy, du, du - 100, np.zeros(n), KV, CS, W, bfactor_A2=50.0)
    assert c.shape == (n, 16, 9) and c.dtype == torch.float32
    for i in range(n):  # each row equals the single-particle call
        ci = ctf_2d(fx, fy, du[i], du[i] - 100, 0.0, KV, CS, W, bfactor_A2=50.0)[0]
        assert torch.allclose(c[i], ci, atol=1e-5)
    # arbitrary frequency shapes
    f = torch.rand(2, 3, 4) * 0.1
    assert ctf_2d(f, f, du, du, 0.0, KV, CS, W).shape == (n, 2, 3, 4)
    with pytest.raises(ValueError):
        ctf_2d(fx, fy, du, du[:3], 0.0, KV, CS, W)


def test_bfactor_envelope():
    fx, fy = rfft_frequencies(32, 2.0)
    c0 = ctf_2d(fx, fy, 12000.0, 12000.0, 0.0, KV, CS, W)
    c1 = ctf_2d(fx, fy, 12000.0, 12000.0, 0.0, KV, CS, W, bfactor_A2=100.0)
    env = torch.exp(-100.0 * (fx**2 + fy**2) / 4)
    assert torch.allclose(c1, c0 * env, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    fx, fy = rfft_frequencies(64, 1.5)
    du = torch.tensor([12000.0, 25000.0])
    cpu = ctf_2d(fx, fy, du, du - 300, 20.0, KV, CS, W, bfactor_A2=50.0)
    gpu = ctf_2d(fx.cuda(), fy.cuda(), du.cuda(), du.cuda() - 300, 20.0, KV, CS, W, bfactor_A2=50.0)
    assert gpu.device.type == "cuda"
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)
