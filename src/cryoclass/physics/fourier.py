"""Fourier-space helpers: band points, padded transforms, rotated sampling, shells, shifts.

Conventions (shared by the whole engine):
- Images are (..., D, D) real arrays, x = column (last axis), y = row; the centre is pixel (D/2, D/2).
- Fourier transforms use ``norm="ortho"``, so white noise of pixel variance v has E|X(k)|^2 = v.
- A frequency point k = (kx, ky) is in Fourier pixels (cycles per box); in 1/Å it is k / (D * apix).
- A *band* is the half-plane set of points with r_lo <= |k| <= r_hi, one point per conjugate pair
  (kx > 0, or kx == 0 and ky > 0; plus optionally DC), so sums over the full plane are twice sums
  over the band.
- Rotation by psi (degrees): R_psi k = (c kx - s ky, s kx + c ky). An image whose content is turned
  by -psi has transform A(R_psi k) (RELION's rlnAnglePsi = psi; see engine/poses.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Band:
    """Half-plane Fourier points of a box, within a radius range (Fourier pixels).

    kx, ky: (F,) float tensors (Fourier pixels); shell: (F,) long, round(|k|);
    flat_index: (F,) long index into the flattened (D, D//2+1) rfft2 grid.
    """

    box: int
    kx: torch.Tensor
    ky: torch.Tensor
    shell: torch.Tensor
    flat_index: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.kx.numel())

    def to(self, device: torch.device) -> "Band":
        return Band(
            self.box,
            self.kx.to(device),
            self.ky.to(device),
            self.shell.to(device),
            self.flat_index.to(device),
        )


def make_band(
    box: int,
    r_hi: float,
    r_lo: float = 0.0,
    include_dc: bool = False,
    device: torch.device | str = "cpu",
) -> Band:
    """Half-plane points with r_lo <= |k| <= r_hi (Fourier pixels) of a (box, box) image."""
    r_hi = min(float(r_hi), box / 2.0)
    ky = torch.fft.fftfreq(box, d=1.0 / box)  # (D,), integer valued
    kx = torch.fft.rfftfreq(box, d=1.0 / box)  # (D//2+1,)
    KY, KX = torch.meshgrid(ky, kx, indexing="ij")
    r = torch.sqrt(KX**2 + KY**2)
    half = (KX > 0) | ((KX == 0) & (KY > 0))
    keep = half & (r <= r_hi) & (r >= r_lo)
    if include_dc:
        keep = keep | (r == 0)
    flat = torch.nonzero(keep.flatten(), as_tuple=False).squeeze(1)
    kxs, kys = KX.flatten()[flat], KY.flatten()[flat]
    shell = torch.round(torch.sqrt(kxs**2 + kys**2)).long()
    return Band(box, kxs.to(device), kys.to(device), shell.to(device), flat.to(device))


def rfft_band(images: torch.Tensor, band: Band) -> torch.Tensor:
    """Band coefficients of real images: (n, D, D) -> (n, F) complex (ortho FFT, centre at D/2).

    A band reaching well below Nyquist is computed as two DFT matrix products over only the rows
    and columns it reaches, which is then much cheaper than a full FFT."""
    d = images.shape[-1]
    w = int(torch.ceil(torch.sqrt(band.kx**2 + band.ky**2).max()).item()) if band.size else 0
    if w > d // 3:
        ft = torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)), norm="ortho")
        return ft.flatten(-2)[..., band.flat_index]
    data = centred_dft(images, pad=1, half_rows=w, n_cols=w + 1, gridding=False)
    idx = (band.ky.round().long() + w) * (w + 1) + band.kx.round().long()
    return data.flatten(-2)[..., idx]


def centred_dft(
    images: torch.Tensor, pad: int, half_rows: int, n_cols: int, gridding: bool
) -> torch.Tensor:
    """Window of the DFT of images (n, D, D) zero-padded to pad*D, centre pixel (D//2, D//2) at the
    origin: (n, 2*half_rows+1, n_cols) complex, rows ky = -half_rows..half_rows and columns
    kx = 0..n_cols-1 in padded Fourier pixels, normalised by 1/D. gridding: fold in the 1/sinc^2
    pre-correction for later bilinear interpolation on the padded grid.

    Zero padding is implicit (the DFT is evaluated at frequencies k / (pad D)), and the gridding
    correction is separable, so both passes are small matrix products."""
    d = images.shape[-1]
    p = pad * d
    dev = images.device
    j = torch.arange(d, device=dev, dtype=torch.float64) - d // 2
    corr = 1.0 / torch.special.sinc(j / p) ** 2 if gridding else torch.ones_like(j)
    kx = torch.arange(0, n_cols, device=dev, dtype=torch.float64)
    ky = torch.arange(-half_rows, half_rows + 1, device=dev, dtype=torch.float64)
    ex = torch.polar(corr[:, None] / d, -2.0 * torch.pi * j[:, None] * kx[None, :] / p)
    ey = torch.polar(
        corr[None, :].expand(ky.numel(), -1).contiguous(),
        -2.0 * torch.pi * ky[:, None] * j[None, :] / p,
    )
    ex, ey = ex.to(torch.complex64), ey.to(torch.complex64)
    x = images.to(torch.float32)
    t = torch.complex(x @ ex.real, x @ ex.imag)  # (n, D, n_cols)
    return torch.matmul(ey, t)


def band_to_image(coeffs: torch.Tensor, band: Band) -> torch.Tensor:
    """Inverse of rfft_band: (n, F) complex -> (n, D, D) real (other coefficients zero).

    Coefficients on the kx == 0 column are completed by Hermitian symmetry.
    """
    d = band.box
    n = coeffs.shape[0]
    grid = torch.zeros(n, d * (d // 2 + 1), dtype=coeffs.dtype, device=coeffs.device)
    grid[:, band.flat_index] = coeffs
    grid = grid.view(n, d, d // 2 + 1)
    # kx == 0 column: the band holds ky > 0 (and DC); fill ky < 0 with conjugates.
    col = grid[:, :, 0]
    ky_pos = torch.arange(1, (d + 1) // 2, device=coeffs.device)
    col[:, (d - ky_pos) % d] = torch.conj(col[:, ky_pos])
    if d % 2 == 0:  # the Nyquist column kx = D/2 is its own conjugate partner too
        colN = grid[:, :, -1]
        colN[:, (d - ky_pos) % d] = torch.conj(colN[:, ky_pos])
    img = torch.fft.irfft2(grid, s=(d, d), norm="ortho")
    return torch.fft.fftshift(img, dim=(-2, -1))


@dataclass
class PaddedSpectrum:
    """Low-frequency window of the half-plane transforms of pad-x zero-padded images.

    data: (n, 2, 2W+1, W+2) real, the real and imaginary parts (planar, the layout grid_sample
    reads) at rows ky = -W..W and columns kx = 0..W+1 in padded Fourier pixels; the other
    half-plane follows from X(-k) = conj X(k). pad: padding factor.
    """

    data: torch.Tensor
    pad: int

    @property
    def window(self) -> int:
        return (self.data.shape[2] - 1) // 2

    def values(self) -> torch.Tensor:
        """The window as complex (n, 2W+1, W+2)."""
        return torch.complex(self.data[:, 0], self.data[:, 1])


def padded_window(box: int, pad: int = 2, radius: float | None = None) -> int:
    """Half-width W (padded Fourier pixels) of the window padded_fft keeps for ``radius``."""
    r = box / 2.0 if radius is None else min(float(radius), box / 2.0)
    return min(int(math.ceil(r * pad)) + 2, pad * box // 2 - 1)


def padded_fft(images: torch.Tensor, pad: int = 2, radius: float | None = None) -> PaddedSpectrum:
    """Transforms of images zero-padded to pad*D, with gridding pre-correction, kept only within
    ``radius`` (Fourier pixels of the unpadded box; default Nyquist), where they will be sampled.

    images: (n, D, D) real. Ortho-normalised so that the values at padded index pad*k equal
    rfft_band values at k. Cost: two DFT matrix products per image, for the window only.
    """
    w = padded_window(images.shape[-1], pad, radius)
    # Only the window is needed, so the padded transform is two small DFT matrix products;
    # normalisation 1/D = ortho over P, times P/D.
    data = centred_dft(images, pad, half_rows=w, n_cols=w + 2, gridding=True)
    return PaddedSpectrum(torch.stack([data.real, data.imag], dim=1), pad)


def sample_bilinear(
    spec: PaddedSpectrum, which: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor
) -> torch.Tensor:
    """Sample padded transforms at real-valued frequencies by bilinear interpolation.

    spec: from padded_fft, whose radius must cover the points. which: (m,) long, the image each
    row samples. kx, ky: (m, F) float, Fourier pixels of the unpadded box. Returns (m, F) complex.
    Points with kx < 0 are read at -k and conjugated (exact: the grid is point-symmetric).
    """
    grid, sgn = sampling_grid(spec, kx, ky)
    return sample_at(spec, which, grid, sgn)


def sampling_grid(
    spec: PaddedSpectrum, kx: torch.Tensor, ky: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where sample_bilinear reads points (kx, ky) (m, F): the grid_sample grid (m, 1, F, 2) and
    the sign (m, F) of kx (-1: read at -k and conjugate). Depends only on the points, so it can
    be made once for a set of angles and gathered per sample."""
    rows, cols = spec.data.shape[-2:]
    pad, w = spec.pad, spec.window
    sgn = 1.0 - 2.0 * (kx < 0).to(kx.dtype)
    # with align_corners=True, -1 and +1 are the centres of the first and last window pixels
    gx = kx.abs().mul_(2.0 * pad / (cols - 1)).sub_(1.0)
    gy = (ky * sgn).mul_(2.0 * pad / (rows - 1)).add_(2.0 * w / (rows - 1) - 1.0)
    return torch.stack([gx, gy], -1)[:, None], sgn


def sample_at(
    spec: PaddedSpectrum, which: torch.Tensor, grid: torch.Tensor, sgn: torch.Tensor
) -> torch.Tensor:
    """Bilinear samples (m, F) complex of images ``which`` (m,) at a ``sampling_grid``."""
    # grid_sample interpolates the real and imaginary parts as two channels
    out = torch.nn.functional.grid_sample(
        spec.data[which], grid, mode="bilinear", padding_mode="border", align_corners=True
    )[:, :, 0]
    return torch.complex(out[:, 0], out[:, 1] * sgn)


def rotate_points(
    kx: torch.Tensor, ky: torch.Tensor, psi_deg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """R_psi k for every angle: kx, ky (F,), psi_deg (m,) -> two (m, F) tensors."""
    a = torch.deg2rad(psi_deg).to(kx.dtype)[:, None]
    c, s = torch.cos(a), torch.sin(a)
    return c * kx[None] - s * ky[None], s * kx[None] + c * ky[None]


def shift_phase(
    kx: torch.Tensor, ky: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, box: int
) -> torch.Tensor:
    """exp(-2 pi i k.t / D): the transform factor of moving content by +t pixels.

    Broadcasts kx, ky against tx, ty (pixels), e.g. (F,) with (S, 1) -> (S, F) complex.
    """
    ang = (-2.0 * torch.pi / box) * (kx * tx + ky * ty)
    return torch.polar(torch.ones_like(ang), ang)


def shell_sum(values: torch.Tensor, shell: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Sum (..., F) values into (..., n_shells) resolution shells."""
    out = torch.zeros(*values.shape[:-1], n_shells, dtype=values.dtype, device=values.device)
    return out.index_add_(-1, shell, values)


def shell_frc(
    fa: torch.Tensor, fb: torch.Tensor, shell: torch.Tensor, n_shells: int
) -> torch.Tensor:
    """Fourier ring correlation per shell of two (..., F) band transforms -> (..., n_shells)
    (0 in shells without power)."""
    num = shell_sum((fa * fb.conj()).real, shell, n_shells)
    da = shell_sum(fa.real**2 + fa.imag**2, shell, n_shells)
    db = shell_sum(fb.real**2 + fb.imag**2, shell, n_shells)
    return num / torch.sqrt(da * db).clamp_min(1e-20)


def fourier_shift_images(images: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Move the content of (n, D, D) real images by (tx, ty) pixels (sub-pixel, periodic)."""
    d = images.shape[-1]
    ky = torch.fft.fftfreq(d, d=1.0 / d, device=images.device)
    kx = torch.fft.rfftfreq(d, d=1.0 / d, device=images.device)
    ph = shift_phase(kx[None, None, :], ky[None, :, None], tx.view(-1, 1, 1), ty.view(-1, 1, 1), d)
    ft = torch.fft.rfft2(images) * ph
    return torch.fft.irfft2(ft, s=(d, d))


def lowpass_images(
    images: torch.Tensor, pixel_size_A: float, res_A: float, width_shells: float = 2.0
) -> torch.Tensor:
    """Raised-cosine low-pass of (n, D, D) images to res_A (Å)."""
    d = images.shape[-1]
    ky = torch.fft.fftfreq(d, d=1.0 / d, device=images.device)
    kx = torch.fft.rfftfreq(d, d=1.0 / d, device=images.device)
    r = torch.sqrt(kx[None, :] ** 2 + ky[:, None] ** 2)
    rc = d * pixel_size_A / res_A
    t = ((r - rc) / width_shells + 0.5).clamp(0, 1)
    filt = 0.5 * (1 + torch.cos(torch.pi * t))
    return torch.fft.irfft2(torch.fft.rfft2(images) * filt, s=(d, d))
