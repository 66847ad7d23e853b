"""Constraints on class averages from what a projected potential can be."""

from __future__ import annotations

import torch


def nonnegative_density(images: torch.Tensor) -> torch.Tensor:
    """(K, D, D) class averages with the density of the other sign than their own set to 0.

    A projection of the Coulomb potential is of one sign relative to the solvent (which the
    background removal sets to 0); what an average holds of the other sign is noise and the
    ringing of its band limit. Each class's sign is the sign of its total density: particles
    are white in RELION's convention, but a class of ice or contaminants can be dark, and data
    with dark protein is dark throughout, so such classes are clamped the other way instead of
    erased.
    """
    sign = torch.where(images.flatten(1).sum(1) < 0, -1.0, 1.0).to(images.dtype)[:, None, None]
    return sign * (sign * images).clamp_min(0.0)
