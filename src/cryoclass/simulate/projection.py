"""Projection of a 3D map by the Fourier-slice theorem (and a slow real-space reference).

The map is a (D, D, D) array indexed [z, y, x] with its centre at voxel (D/2, D/2, D/2). For a
rotation A (see :mod:`cryoclass.simulate.geometry`), the projection is
``P_A(x, y) = sum_z V(A^T (x, y, z))``, centred at pixel (D/2, D/2), x = column, y = row.

:class:`FourierProjector` zero-pads the map to ``pad * D`` (default 2x), divides it by the
transform of the trilinear interpolation kernel (sinc^2 per axis, "gridding correction"), takes the
3D FFT once, and then samples central slices by trilinear interpolation (``grid_sample``). The
slices are the ``rfft2`` spectra of the projections in the *padded* box P = pad * D, which is the
box in which the simulator applies the CTF; frequencies beyond the map's Nyquist (|k| >= D/2 in
the unpadded box) are zero.

Accuracy (box 64 phantom): NCC >= 0.9997 with a real-space rotate-and-sum projection, >= 0.9999
with the exact sum along z. As in RELION's projector, the gridding pre-correction is exact only on
average over sub-voxel positions: slices that fall on the grid (e.g. the exact top view) carry up
to 3 % more total density than off-grid ones, a smooth, orientation-dependent scale that is far
below the noise of any realistic data set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FourierProjector", "project_real_space", "spectra_to_images", "shift_ramp"]


class FourierProjector:
    """Central-slice projector of one map.

    Args:
        volume: (D, D, D) real map [z, y, x], D even, centre at D/2.
        pad: zero-padding factor of the 3D transform and of the output spectra (integer >= 1).
        device: torch device for the transform and the slices.
    """

    def __init__(
        self,
        volume: np.ndarray | torch.Tensor,
        pad: int = 2,
        device: torch.device | str | None = None,
    ) -> None:
        vol = torch.as_tensor(
            np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume,
            dtype=torch.float32,
            device=device,
        )
        d = vol.shape[0]
        if vol.shape != (d, d, d) or d % 2:
            raise ValueError(f"volume must be cubic with an even box, got {tuple(vol.shape)}")
        self.box = d
        self.pad = int(pad)
        p = self.pad * d
        self.padded_box = p
        big = torch.zeros((p, p, p), dtype=torch.float32, device=vol.device)
        o = p // 2 - d // 2
        big[o : o + d, o : o + d, o : o + d] = vol
        u = (torch.arange(p, device=vol.device, dtype=torch.float32) - p // 2) / p
        s2 = torch.special.sinc(u) ** 2
        big = big / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])
        spec = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(big)))
        # (1, 2, P, P, P) real/imag channels for grid_sample; index = k + P/2 along each axis
        self._vol = torch.stack([spec.real, spec.imag])[None].contiguous()
        ky = torch.fft.fftfreq(p, d=1.0 / p, device=vol.device)
        kx = torch.arange(p // 2 + 1, device=vol.device, dtype=torch.float32)
        self._ky, self._kx = torch.meshgrid(ky, kx, indexing="ij")  # (P, P//2+1)
        self._inside = (self._kx**2 + self._ky**2) < (p / 2.0) ** 2

    @property
    def device(self) -> torch.device:
        return self._vol.device

    def spectra(self, rotations: np.ndarray | torch.Tensor, batch: int = 256) -> torch.Tensor:
        """``rfft2`` spectra of the projections in the padded box.

        Args:
            rotations: (n, 3, 3) rotation matrices A (map -> image coordinates).
            batch: rotations per ``grid_sample`` call (memory bound).

        Returns:
            complex64 tensor (n, P, P // 2 + 1), the spectrum of ``ifftshift`` of the P x P
            projection (unnormalised FFT: the DC term is the projection's sum).
        """
        a = torch.as_tensor(
            np.asarray(rotations) if not isinstance(rotations, torch.Tensor) else rotations,
            dtype=torch.float32,
            device=self.device,
        ).reshape(-1, 3, 3)
        p = self.padded_box
        out = []
        for s in range(0, a.shape[0], batch):
            m = a[s : s + batch]
            # 3D frequency q = A^T (kx, ky, 0) = kx * A[0, :] + ky * A[1, :]  (x, y, z components)
            q = (
                self._kx[None, ..., None] * m[:, None, None, 0, :]
                + self._ky[None, ..., None] * m[:, None, None, 1, :]
            )
            grid = (q + p / 2.0) * (2.0 / (p - 1)) - 1.0  # align_corners=True
            vals = F.grid_sample(
                self._vol, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
            )[0]  # (2, b, P, P//2+1)
            sl = torch.complex(vals[0], vals[1]) * self._inside
            out.append(sl)
        return torch.cat(out) if out else torch.zeros((0, p, p // 2 + 1), dtype=torch.complex64)

    def project(
        self, rotations: np.ndarray | torch.Tensor, shifts_px: np.ndarray | None = None
    ) -> torch.Tensor:
        """Real-space projections (n, D, D), optionally moved by ``shifts_px`` (n, 2) = (sx, sy)."""
        spec = self.spectra(rotations)
        if shifts_px is not None:
            spec = spec * shift_ramp(self.padded_box, shifts_px, self.device)
        return spectra_to_images(spec, self.padded_box, self.box)


def shift_ramp(
    box: int, shifts_px: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """Phase ramps (n, box, box // 2 + 1) that move content by (+sx, +sy) pixels on the rfft2 grid:
    ``exp(-2 pi i (kx sx + ky sy) / box)``."""
    s = torch.as_tensor(
        np.asarray(shifts_px) if not isinstance(shifts_px, torch.Tensor) else shifts_px,
        dtype=torch.float32,
        device=device,
    ).reshape(-1, 2)
    ky = torch.fft.fftfreq(box, device=device)[None, :, None]
    kx = torch.fft.rfftfreq(box, device=device)[None, None, :]
    phase = -2.0 * math.pi * (kx * s[:, 0, None, None] + ky * s[:, 1, None, None])
    return torch.polar(torch.ones_like(phase), phase)


def spectra_to_images(spectra: torch.Tensor, padded_box: int, box: int) -> torch.Tensor:
    """Inverse of the padded-box ``rfft2`` spectra, cropped to the central box x box pixels.

    Args:
        spectra: (n, P, P // 2 + 1) complex spectra of ifftshifted P x P images.
        padded_box: P.
        box: D <= P, even.

    Returns:
        float32 (n, D, D) images, centre at (D/2, D/2).
    """
    img = torch.fft.irfft2(spectra, s=(padded_box, padded_box))
    # the central box x box of fftshift(img), without shifting the whole padded image
    idx = (torch.arange(box, device=img.device) - box // 2) % padded_box
    return img.index_select(-2, idx).index_select(-1, idx)


def project_real_space(volume: np.ndarray | torch.Tensor, rotations: np.ndarray) -> torch.Tensor:
    """Slow reference projector: rotate the map by trilinear interpolation and sum along z.

    ``P_A(p) = sum_z V(A^T p)`` for image/voxel coordinates p relative to the centre D/2.
    For validation of :class:`FourierProjector` only (one D^3 resampling per rotation).

    Args:
        volume: (D, D, D) map [z, y, x].
        rotations: (n, 3, 3) matrices.

    Returns:
        float32 (n, D, D) projections.
    """
    vol = torch.as_tensor(np.asarray(volume), dtype=torch.float32)
    d = vol.shape[0]
    c = d // 2
    g = torch.arange(d, dtype=torch.float32) - c
    z, y, x = torch.meshgrid(g, g, g, indexing="ij")
    pts = torch.stack([x, y, z], dim=-1)  # (D, D, D, 3)
    out = []
    for a in np.asarray(rotations, dtype=np.float32).reshape(-1, 3, 3):
        src = pts @ torch.as_tensor(a)  # row vector p^T A = (A^T p)^T
        grid = (2.0 * (src + c) + 1.0) / d - 1.0  # align_corners=False
        rot = F.grid_sample(
            vol[None, None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
        )[0, 0]
        out.append(rot.sum(dim=0))
    return torch.stack(out)
