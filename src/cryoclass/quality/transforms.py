"""2D image transforms used by the quality metrics (and by tests of the simulator).

Conventions (the project's and the benchmark's): images are (..., H, W) arrays, x = column (last
axis), y = row; the rotation centre / image centre is pixel (H // 2, W // 2).

* ``rotate_images(img, a)`` turns the image *content* counter-clockwise by ``a`` degrees in (x, y):
  ``out(p) = img(R(-a) p)`` with ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` acting on (x, y).
  (With y = row pointing down on screen this looks clockwise in a viewer that puts row 0 on top.)
* ``shift_images(img, (sx, sy))`` moves the content by +sx columns and +sy rows:
  ``out(p) = img(p - s)`` (a Fourier phase ramp, periodic in the box).

A simulated particle with truth ``psi_deg`` and ``shift_x/y_px`` is
``shift_images(rotate_images(view, -psi), (sx, sy))`` (bench: ``particle = T(shift) R(-psi) view``).
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "as_tensor",
    "rotate_images",
    "shift_images",
    "bandpass_images",
    "soft_circular_mask",
    "fourier_crop",
    "mirror_images",
]


def as_tensor(x: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Array or tensor -> torch tensor of ``dtype`` (no copy when already one)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def rotate_images(
    images: ArrayLike, angles_deg: ArrayLike | float, mode: str = "bicubic"
) -> torch.Tensor:
    """Turn image content counter-clockwise by ``angles_deg`` about pixel (H // 2, W // 2).

    Args:
        images: (n, H, W) or (H, W) real images.
        angles_deg: (n,) angles, or a scalar for all images, in degrees.
        mode: ``grid_sample`` interpolation ("bicubic" or "bilinear"); outside the box is 0.

    Returns:
        float32 tensor of the input's shape: ``out(p) = img(R(-a) p)``.
    """
    x = as_tensor(images)
    squeeze = x.dim() == 2
    if squeeze:
        x = x[None]
    n, h, w = x.shape
    a = torch.deg2rad(as_tensor(angles_deg).to(x.device).reshape(-1).expand(n))
    cy, cx = h // 2, w // 2
    yy, xx = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=torch.float32) - cy,
        torch.arange(w, device=x.device, dtype=torch.float32) - cx,
        indexing="ij",
    )
    c, s = torch.cos(a)[:, None, None], torch.sin(a)[:, None, None]
    xs = c * xx + s * yy + cx  # R(-a) p
    ys = -s * xx + c * yy + cy
    grid = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], dim=-1)
    out = F.grid_sample(x[:, None], grid, mode=mode, padding_mode="zeros", align_corners=False)[
        :, 0
    ]
    return out[0] if squeeze else out


def shift_images(images: ArrayLike, shifts_px: ArrayLike) -> torch.Tensor:
    """Move image content by (sx, sy) pixels (x = column, y = row) with a Fourier phase ramp.

    Args:
        images: (n, H, W) or (H, W) real images.
        shifts_px: (n, 2) or (2,) shifts (sx, sy) in pixels; content moves to larger x / y.

    Returns:
        float32 tensor of the input's shape: ``out(p) = img(p - s)`` (periodic).
    """
    x = as_tensor(images)
    squeeze = x.dim() == 2
    if squeeze:
        x = x[None]
    n, h, w = x.shape
    s = as_tensor(shifts_px).to(x.device).reshape(-1, 2).expand(n, 2)
    ky = torch.fft.fftfreq(h, device=x.device)[None, :, None]
    kx = torch.fft.rfftfreq(w, device=x.device)[None, None, :]
    ramp = torch.exp(-2j * math.pi * (kx * s[:, 0, None, None] + ky * s[:, 1, None, None]))
    out = torch.fft.irfft2(torch.fft.rfft2(x) * ramp, s=(h, w))
    return out[0] if squeeze else out


def mirror_images(images: ArrayLike) -> torch.Tensor:
    """Mirror x -> -x about the centre column W // 2: ``out[..., y, x] = img[..., y, (W - x) % W]``."""
    x = as_tensor(images)
    return (
        torch.roll(torch.flip(x, dims=(-1,)), shifts=1, dims=-1)
        if x.shape[-1] % 2 == 0
        else torch.flip(x, dims=(-1,))
    )


def _raised_cosine(s: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """1 below ``lo``, 0 above ``hi``, half-cosine in between (s, lo, hi in the same units)."""
    t = ((s - lo) / max(hi - lo, 1e-12)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * t))


def bandpass_images(
    images: ArrayLike,
    pixel_size_A: float,
    lowpass_A: float | None = None,
    highpass_A: float | None = None,
) -> torch.Tensor:
    """Low- and/or high-pass filter images with raised-cosine edges (the benchmark's filters).

    Low-pass: 1 below 0.9/lowpass_A, 0 above 1.1/lowpass_A (1/Å). High-pass: 0 below
    1/(2 highpass_A), 1 above 1/highpass_A. ``None`` skips a side.

    Args:
        images: (..., H, W) real images.
        pixel_size_A: pixel size in Å.
        lowpass_A, highpass_A: resolutions in Å.

    Returns:
        float32 tensor of the same shape.
    """
    x = as_tensor(images)
    if lowpass_A is None and highpass_A is None:
        return x
    h, w = x.shape[-2:]
    ky = torch.fft.fftfreq(h, d=pixel_size_A, device=x.device)[:, None]
    kx = torch.fft.rfftfreq(w, d=pixel_size_A, device=x.device)[None, :]
    s = torch.sqrt(kx * kx + ky * ky)
    filt = torch.ones_like(s)
    if lowpass_A is not None:
        filt = filt * _raised_cosine(s, 0.9 / lowpass_A, 1.1 / lowpass_A)
    if highpass_A is not None:
        filt = filt * (1.0 - _raised_cosine(s, 0.5 / highpass_A, 1.0 / highpass_A))
    return torch.fft.irfft2(torch.fft.rfft2(x) * filt, s=(h, w))


def fourier_crop(images: ArrayLike, new_box: int) -> torch.Tensor:
    """Resample centred square images to ``new_box`` pixels by cropping (or zero-padding) their
    Fourier transform; the pixel size becomes ``old_box / new_box`` times larger. Values are kept
    (a constant image stays the same constant).

    Args:
        images: (..., D, D) real images, centre at (D // 2, D // 2).
        new_box: even output size.

    Returns:
        float32 tensor (..., new_box, new_box), centre at (new_box // 2, new_box // 2).
    """
    x = as_tensor(images)
    d = x.shape[-1]
    if new_box == d:
        return x
    spec = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1))), dim=(-2, -1))
    m = min(d, new_box)
    out = torch.zeros(x.shape[:-2] + (new_box, new_box), dtype=spec.dtype, device=x.device)
    a, b = d // 2 - m // 2, new_box // 2 - m // 2
    out[..., b : b + m, b : b + m] = spec[..., a : a + m, a : a + m]
    img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(out, dim=(-2, -1))), dim=(-2, -1))
    return img.real * (new_box / d) ** 2


def soft_circular_mask(
    box: int, radius_px: float, edge_px: float = 3.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """(box, box) float32 mask: 1 within ``radius_px`` of pixel (box // 2, box // 2), a half-cosine
    fall to 0 over ``edge_px`` pixels beyond it."""
    g = torch.arange(box, device=device, dtype=torch.float32) - box // 2
    r = torch.sqrt(g[:, None] ** 2 + g[None, :] ** 2)
    return _raised_cosine(r, radius_px, radius_px + edge_px)
