"""A micelle-dominated synthetic set: three small protein views, each inside one of three belts.

The belts are round, strong and made only of frequencies below 1/50 Å, and a particle's belt is
drawn independently of its view, so a classifier that aligns on the low frequencies groups the
particles by belt, and one that leaves them out (min_res_A = 40) can group them by view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cryoclass.physics.ctf import ctf_2d, rfft_frequencies
from cryoclass.physics.fourier import lowpass_images

BOX, APIX = 48, 3.0


def _protein(k: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    g = lambda cx, cy, s: torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))  # noqa: E731
    if k == 0:
        return g(-5, 0, 1.8) + g(5, 0, 1.8) + 0.8 * g(0, 6, 1.5)
    if k == 1:
        return g(0, 0, 2.5) + 0.9 * g(7, -4, 1.5)
    return g(-4, -4, 1.5) + g(0, 0, 1.5) + g(4, 4, 1.5) + 0.7 * g(-6, 5, 1.2)


def micelle_set(
    n: int, belt_amplitude: float, noise_sd: float, seed: int = 0
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
    """(images (n, D, D), RELION table, true view (n,), true belt (n,))."""
    rng = np.random.default_rng(seed)
    view = rng.integers(0, 3, n)
    belt = rng.integers(0, 3, n)
    psi = rng.uniform(0, 360, n)
    t = rng.integers(-2, 3, (n, 2)).astype(float)
    c = torch.arange(BOX, dtype=torch.float32) - BOX // 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    imgs, belts = [], []
    for v, b, p, (tx, ty) in zip(view, belt, psi, t):
        a = np.deg2rad(p)
        xs, ys = xx - tx, yy - ty
        xr, yr = np.cos(a) * xs - np.sin(a) * ys, np.sin(a) * xs + np.cos(a) * ys
        imgs.append(_protein(int(v), xr, yr))
        r2 = xs**2 + ys**2
        belts.append(torch.exp(-r2 / (2 * (5.0 + 3.5 * b) ** 2)))
    belt_img = lowpass_images(torch.stack(belts), APIX, 60.0, 0.5) * belt_amplitude
    img = torch.stack(imgs) + belt_img
    du = rng.uniform(8000, 20000, n)
    table = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1}@micelle.mrcs" for i in range(n)],
            "rlnDefocusU": du,
            "rlnDefocusV": du - 150.0,
            "rlnDefocusAngle": rng.uniform(0, 180, n),
            "rlnVoltage": 300.0,
            "rlnSphericalAberration": 2.7,
            "rlnAmplitudeContrast": 0.1,
            "rlnImagePixelSize": APIX,
            "rlnImageSize": BOX,
        }
    )
    fx, fy = rfft_frequencies(BOX, APIX)
    ctf = ctf_2d(
        fx,
        fy,
        table.rlnDefocusU.values,
        table.rlnDefocusV.values,
        table.rlnDefocusAngle.values,
        300.0,
        2.7,
        0.1,
    )
    ft = torch.fft.rfft2(torch.fft.ifftshift(img, dim=(-2, -1))) * ctf
    img = torch.fft.fftshift(torch.fft.irfft2(ft, s=(BOX, BOX)), dim=(-2, -1))
    img = img + noise_sd * torch.as_tensor(rng.standard_normal(img.shape), dtype=torch.float32)
    return img.numpy(), table, view, belt
