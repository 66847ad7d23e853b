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
        return Band(self.box, self.kx.to(device), self.ky.to(device), self.shell.to(device),
                    self.flat_index.to(device))


def make_band(box: int, r_hi: float, r_lo: float = 0.0, include_dc: bool = False,
              device: torch.device | str = "cpu") -> Band:
    """Half-plane points with r_lo <= |k| <= r_hi (Fourier pixels) of a (box, box) image."""
    r_hi = min(float(r_hi), box / 2.0)
    ky = torch.fft.fftfreq(box, d=1.0 / box)                      # (D,), integer valued
    kx = torch.fft.rfftfreq(box, d=1.0 / box)                     # (D//2+1,)
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
    """Band coefficients of real images: (n, D, D) -> (n, F) complex (ortho FFT, centre at D/2)."""
    ft = torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)), norm="ortho")
    return ft.flatten(-2)[..., band.flat_index]


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


def gridding_correction(box: int, pad: int = 2, device: torch.device | str = "cpu") -> torch.Tensor:
    """(D, D) real-space weights 1/sinc^2 that undo bilinear interpolation on a pad-x finer grid."""
    x = (torch.arange(box, device=device, dtype=torch.float32) - box // 2) / (pad * box)
    s = torch.special.sinc(x) ** 2
    return 1.0 / (s[:, None] * s[None, :])


def padded_fft(images: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Full complex FFT of images zero-padded to pad*D, with gridding pre-correction.

    images: (n, D, D) real. Returns (n, pad*D, pad*D) complex in FFT order, ortho-normalised so that
    its values at even indices (2k) equal rfft_band values at k.
    """
    n, d, _ = images.shape
    p = pad * d
    corr = gridding_correction(d, pad, images.device)
    big = torch.zeros(n, p, p, dtype=images.dtype, device=images.device)
    o = (p - d) // 2
    big[:, o:o + d, o:o + d] = images * corr
    ft = torch.fft.fft2(torch.fft.ifftshift(big, dim=(-2, -1)), norm="ortho")
    return ft * (p / d)  # match the D-box ortho normalisation


def sample_bilinear(ft_padded: torch.Tensor, which: torch.Tensor, kx: torch.Tensor,
                    ky: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Sample padded transforms at real-valued frequencies by bilinear interpolation.

    ft_padded: (n, P, P) complex from padded_fft. which: (m,) long, the image each row samples.
    kx, ky: (m, F) float, frequencies in Fourier pixels of the unpadded box. Returns (m, F) complex.
    """
    n, p, _ = ft_padded.shape
    u, v = kx * pad, ky * pad
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = (u - u0), (v - v0)
    u0l, v0l = u0.long(), v0.long()
    flat = ft_padded.reshape(n, p * p)
    base = (which * (p * p)).view(-1, 1)
    src = flat.reshape(-1)

    def at(du: int, dv: int) -> torch.Tensor:
        idx = ((v0l + dv) % p) * p + ((u0l + du) % p)
        return src[base + idx]

    out = at(0, 0) * ((1 - fu) * (1 - fv)) + at(1, 0) * (fu * (1 - fv))
    out = out + at(0, 1) * ((1 - fu) * fv) + at(1, 1) * (fu * fv)
    return out


def rotate_points(kx: torch.Tensor, ky: torch.Tensor, psi_deg: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """R_psi k for every angle: kx, ky (F,), psi_deg (m,) -> two (m, F) tensors."""
    a = torch.deg2rad(psi_deg).to(kx.dtype)[:, None]
    c, s = torch.cos(a), torch.sin(a)
    return c * kx[None] - s * ky[None], s * kx[None] + c * ky[None]


def shift_phase(kx: torch.Tensor, ky: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                box: int) -> torch.Tensor:
    """exp(-2 pi i k.t / D): the transform factor of moving content by +t pixels.

    Broadcasts kx, ky against tx, ty (pixels), e.g. (F,) with (S, 1) -> (S, F) complex.
    """
    ang = (-2.0 * torch.pi / box) * (kx * tx + ky * ty)
    return torch.polar(torch.ones_like(ang), ang)


def shell_sum(values: torch.Tensor, shell: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Sum (..., F) values into (..., n_shells) resolution shells."""
    out = torch.zeros(*values.shape[:-1], n_shells, dtype=values.dtype, device=values.device)
    return out.index_add_(-1, shell, values)


def fourier_shift_images(images: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Move the content of (n, D, D) real images by (tx, ty) pixels (sub-pixel, periodic)."""
    d = images.shape[-1]
    ky = torch.fft.fftfreq(d, d=1.0 / d, device=images.device)
    kx = torch.fft.rfftfreq(d, d=1.0 / d, device=images.device)
    ph = shift_phase(kx[None, None, :], ky[None, :, None], tx.view(-1, 1, 1), ty.view(-1, 1, 1), d)
    ft = torch.fft.rfft2(images) * ph
    return torch.fft.irfft2(ft, s=(d, d))


def lowpass_images(images: torch.Tensor, pixel_size_A: float, res_A: float,
                   width_shells: float = 2.0) -> torch.Tensor:
    """Raised-cosine low-pass of (n, D, D) images to res_A (Å)."""
    d = images.shape[-1]
    ky = torch.fft.fftfreq(d, d=1.0 / d, device=images.device)
    kx = torch.fft.rfftfreq(d, d=1.0 / d, device=images.device)
    r = torch.sqrt(kx[None, :] ** 2 + ky[:, None] ** 2)
    rc = d * pixel_size_A / res_A
    t = ((r - rc) / width_shells + 0.5).clamp(0, 1)
    filt = 0.5 * (1 + torch.cos(torch.pi * t))
    return torch.fft.irfft2(torch.fft.rfft2(images) * filt, s=(d, d))
