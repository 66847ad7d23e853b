"""In-plane rotation and translation grids.

Pose convention: a particle with in-plane angle psi (degrees) and shift t = (tx, ty) (pixels) is
modelled as X(k) = CTF(k) exp(-2 pi i k.t / D) A(R_psi k): the class average turned by -psi, then
moved by +t. This is RELION's image model with rlnAnglePsi = psi and rlnOriginX/YAngst = -t * apix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PoseGrid:
    """psi: (R,) degrees; shifts: (S, 2) pixels (tx, ty), the origin first, on a lattice of
    shift_step pixels."""

    psi: torch.Tensor
    shifts: torch.Tensor
    shift_step: float = 1.0

    @property
    def n_rot(self) -> int:
        return int(self.psi.numel())

    @property
    def n_shift(self) -> int:
        return int(self.shifts.shape[0])


def psi_grid(step_deg: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(R,) angles 0, 360/R, ... with R = ceil(360 / step_deg)."""
    n = max(1, math.ceil(360.0 / step_deg - 1e-6))
    return torch.arange(n, dtype=torch.float32, device=device) * (360.0 / n)


def shift_grid(
    max_shift_px: float, step_px: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(S, 2) shifts on a square lattice of step_px within a disc of radius max_shift_px."""
    n = int(math.floor(max_shift_px / step_px + 1e-6))
    r = torch.arange(-n, n + 1, dtype=torch.float32) * step_px
    ty, tx = torch.meshgrid(r, r, indexing="ij")
    pts = torch.stack([tx.flatten(), ty.flatten()], dim=1)
    pts = pts[(pts**2).sum(1) <= max_shift_px**2 + 1e-6]
    order = torch.argsort((pts**2).sum(1), stable=True)  # origin first: ties resolve to no shift
    return pts[order].to(device)


def working_steps(
    res_A: float,
    pixel_size_A: float,
    particle_radius_A: float,
    psi_step_deg: float,
    shift_step_px: float,
) -> tuple[float, float]:
    """Rotation (degrees) and shift (pixels) steps adequate at working resolution res_A.

    The finest steps are the configured ones; at coarser resolution, a step moves a point at the
    particle's edge by about a quarter of the resolution (rotation) or a third of it (shift).
    """
    psi = max(psi_step_deg, math.degrees(res_A / (4.0 * particle_radius_A)))
    shift = max(shift_step_px, res_A / (3.0 * pixel_size_A))
    return min(psi, 30.0), shift
