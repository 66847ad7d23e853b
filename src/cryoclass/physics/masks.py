"""Soft circular masks."""

from __future__ import annotations

import torch


def soft_circular_mask(
    box: int,
    diameter_px: float,
    outer_diameter_px: float | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(D, D) float mask: 1 inside diameter_px, raised-cosine edge to outer_diameter_px, 0 beyond.

    Centre at pixel (D/2, D/2). Diameters in pixels; outer defaults to diameter + 10 % of it.
    """
    if outer_diameter_px is None:
        outer_diameter_px = diameter_px * 1.1
    r_in, r_out = diameter_px / 2.0, max(outer_diameter_px / 2.0, diameter_px / 2.0 + 1e-3)
    c = torch.arange(box, dtype=torch.float32, device=device) - box // 2
    r = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    t = ((r - r_in) / (r_out - r_in)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(torch.pi * t))


def mask_outside_background(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., D, D) images times the (D, D) soft mask, after subtracting each image's background
    level: its mean weighted by 1 - mask (RELION's softMaskOutsideMap fills the masked-out area
    with that level instead of 0). An image whose density does not fall to 0 at the mask edge
    is cut there by the plain product, which adds a ring at the edge to every image alike."""
    outside = 1.0 - mask
    level = (images * outside).sum((-2, -1), keepdim=True) / outside.sum().clamp_min(1e-6)
    return (images - level) * mask


def background_stats(images: torch.Tensor, radius_px: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sd (n,) of (n, D, D) images outside a circle of radius_px around the centre."""
    d = images.shape[-1]
    c = torch.arange(d, dtype=torch.float32, device=images.device) - d // 2
    outside = (c[:, None] ** 2 + c[None, :] ** 2) > radius_px**2
    vals = images[:, outside]
    return vals.mean(dim=1), vals.std(dim=1)


def density_centre(images: torch.Tensor, threshold: float) -> torch.Tensor:
    """(K, 2) centre of mass (x = column, y = row; pixels from the box centre D/2) of each image's
    density above threshold x its maximum; (0, 0) for an image with no positive density.
    images: (K, D, D) real."""
    d = images.shape[-1]
    mx = images.flatten(1).max(1).values.clamp_min(1e-12)
    rho = (images - threshold * mx[:, None, None]).clamp_min(0)
    tot = rho.sum((1, 2))
    c = torch.arange(d, dtype=images.dtype, device=images.device) - d // 2
    cx = (rho.sum(1) * c).sum(1) / tot.clamp_min(1e-12)
    cy = (rho.sum(2) * c).sum(1) / tot.clamp_min(1e-12)
    ok = tot > 0
    return torch.stack([torch.where(ok, cx, 0), torch.where(ok, cy, 0)], dim=1)
