"""Coloured Gaussian noise, the particle mask / signal variance used for the SNR, and RELION-style
normalisation of particle images."""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "noise_amplitude",
    "coloured_noise",
    "signal_variance",
    "relion_normalise",
    "background_mask",
]


def noise_amplitude(
    box: int, pixel_size_A: float, floor: float = 0.15, falloff_A: float = 25.0
) -> torch.Tensor:
    """Square root of the noise power spectrum on the rfft2 grid, scaled to unit pixel variance.

    ``PSD(s) = floor + (1 - floor) * exp(-s * falloff_A)`` with s in 1/Å, divided by its mean over
    the full box x box Fourier plane, so that noise made with it has variance 1 per pixel.

    Returns:
        float32 (box, box // 2 + 1).
    """
    ky = np.fft.fftfreq(box, d=pixel_size_A)
    kx = np.fft.fftfreq(box, d=pixel_size_A)
    full = np.hypot(ky[:, None], kx[None, :])
    psd_full = floor + (1 - floor) * np.exp(-full * falloff_A)
    half = np.hypot(ky[:, None], np.fft.rfftfreq(box, d=pixel_size_A)[None, :])
    psd = (floor + (1 - floor) * np.exp(-half * falloff_A)) / psd_full.mean()
    return torch.as_tensor(np.sqrt(psd), dtype=torch.float32)


def coloured_noise(
    rng: np.random.Generator, n: int, box: int, amplitude: torch.Tensor
) -> torch.Tensor:
    """(n, box, box) stationary Gaussian noise with spectrum ``amplitude**2`` (from
    :func:`noise_amplitude`: unit pixel variance), drawn from ``rng``."""
    white = torch.from_numpy(rng.standard_normal((n, box, box), dtype=np.float32))
    return torch.fft.irfft2(torch.fft.rfft2(white) * amplitude, s=(box, box))


def signal_variance(
    signal: torch.Tensor, clean: torch.Tensor, threshold: float = 0.05
) -> torch.Tensor:
    """Per-image variance of ``signal`` inside the particle mask.

    The mask is where the noise-free, CTF-free projection ``clean`` exceeds ``threshold`` x its own
    maximum (the benchmark's definition).

    Args:
        signal: (n, D, D) noise-free (CTF-modulated) images.
        clean: (n, D, D) the same particles without CTF.

    Returns:
        float64 (n,) variances.
    """
    mask = clean > threshold * clean.flatten(1).max(dim=1).values[:, None, None]
    cnt = mask.sum(dim=(1, 2)).clamp_min(1)
    mean = (signal * mask).sum(dim=(1, 2)) / cnt
    var = ((signal - mean[:, None, None]) ** 2 * mask).sum(dim=(1, 2)) / cnt
    return var.double()


def background_mask(box: int, radius_frac: float = 0.75) -> torch.Tensor:
    """(box, box) bool, True outside ``radius_frac`` x (box / 2) of pixel (box/2, box/2) (RELION's
    ``--bg_radius`` default region)."""
    g = torch.arange(box, dtype=torch.float32) - box // 2
    r = torch.sqrt(g[:, None] ** 2 + g[None, :] ** 2)
    return r > radius_frac * (box // 2)


def relion_normalise(
    images: torch.Tensor, radius_frac: float = 0.75, scale: bool = True
) -> torch.Tensor:
    """RELION extraction's normalisation: background (outside ``radius_frac`` of the box radius)
    to mean 0 and, with ``scale``, standard deviation 1.

    Args:
        images: (n, D, D) images.
        radius_frac: background radius as a fraction of D/2.
        scale: divide by the background standard deviation (off for noise-free images, whose
            background may be exactly zero).

    Returns:
        float32 (n, D, D).
    """
    bg = background_mask(images.shape[-1], radius_frac).to(images.device)
    vals = images[:, bg]
    out = images - vals.mean(dim=1)[:, None, None]
    if scale:
        out = out / vals.std(dim=1).clamp_min(1e-12)[:, None, None]
    return out
