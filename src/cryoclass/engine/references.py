"""Class averages rotated once per iteration onto the particles' band points."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cryoclass.physics.fourier import Band, padded_fft, rotate_points, sampling_grid


def rotated_references(
    class_images: torch.Tensor, band: Band, psi_deg: torch.Tensor
) -> torch.Tensor:
    """A_c(R_psi k) for every class, angle and band point.

    class_images: (K, D, D) real; psi_deg: (R,) degrees. Returns (K, R, F) complex, sampled from
    2x-padded transforms by bilinear interpolation (with gridding pre-correction).
    """
    k = class_images.shape[0]
    r = psi_deg.numel()
    ft = padded_fft(class_images, radius=float(torch.sqrt(band.kx**2 + band.ky**2).max()))
    grid, sgn = sampling_grid(ft, *rotate_points(band.kx, band.ky, psi_deg))  # (R, 1, F, 2)
    # every class is read at the same R x F points: one grid_sample over the K transforms
    layout = grid[:, 0].unsqueeze(0).expand(k, r, band.size, 2)
    vals = torch.nn.functional.grid_sample(
        ft.data, layout, mode="bilinear", padding_mode="border", align_corners=True
    )
    return torch.complex(vals[:, 0], vals[:, 1] * sgn[None])  # (K, R, F)


@dataclass(eq=False)
class RotatedReferences:
    """The rotated class averages of one model, shared by every batch scored against it.

    values: (K, R, F) complex, from ``rotated_references``. ``derived`` keeps what is built from
    them once per model rather than once per batch (the coarse search's shifted-reference matrix).
    """

    values: torch.Tensor
    derived: dict = field(default_factory=dict)

    def memo(self, key: object, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """derived[key], built by ``build()`` on first use."""
        if key not in self.derived:
            self.derived[key] = build()
        return self.derived[key]
