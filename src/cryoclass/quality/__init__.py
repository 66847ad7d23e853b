"""Scores against ground truth (ARI, views recovered, in-plane angle consistency), FRC resolution,
and the 2D image transforms they use (rotation, shift, band-pass, Fourier crop, masks).

Geometry: x = column, y = row, centre at pixel (D/2, D/2); ``rotate_images(img, a)`` turns content
counter-clockwise by a in (x, y); ``best_ncc_inplane`` returns (ncc, a, shift) with
``image ≈ T(shift) R(a) reference``.
"""

from cryoclass.quality.metrics import (
    InplaneMatch,
    adjusted_rand_index,
    best_ncc_inplane,
    class_view_ncc,
    frc,
    psi_consistency,
    resolution_from_frc,
    views_recovered,
)
from cryoclass.quality.transforms import (
    bandpass_images,
    fourier_crop,
    mirror_images,
    rotate_images,
    shift_images,
    soft_circular_mask,
)

__all__ = [
    "InplaneMatch",
    "adjusted_rand_index",
    "best_ncc_inplane",
    "class_view_ncc",
    "frc",
    "psi_consistency",
    "resolution_from_frc",
    "views_recovered",
    "bandpass_images",
    "fourier_crop",
    "mirror_images",
    "rotate_images",
    "shift_images",
    "soft_circular_mask",
]
