"""Re-centring of class averages for the written outputs (``Config.recenter``).

The engine aligns in the frame of the picks: its shift search is a disc of ``max_shift_px`` around
each particle's picked centre, and its class images stay in that frame. Moving a class image onto
its own centre of mass inside the engine would move the class's particles by as much: a membrane
protein's side view, whose belt pulls the centre of mass 10-20 Å off the protein, then needs shifts
beyond the search disc, and its particles pile up at the disc's edge (on the bench's
trpv1_micelle set, half of them). So the centring is applied where users see it: each written
class average is moved onto its centre of mass, and each particle's origin is changed by the same
move, so that the origins stay exact for the written classes (re-extraction centres the particles
on the class's density, as RELION's and CryoSPARC's re-centring do).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from cryoclass.engine.particle_result import ParticleResult
from cryoclass.physics.fourier import fourier_shift_images
from cryoclass.physics.masks import density_centre


def centre_images(images: torch.Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Class images moved onto their centres of mass.

    images: (K, D, D) class averages in the engine's frame; threshold: fraction of each class's
    maximum above which density counts (``recenter_threshold``). Returns the moved (K, D, D)
    float32 images and the (K, 2) moves undone, m (x, y pixels: each class was moved by -m).
    """
    imgs = images.detach().float().cpu()
    m = density_centre(imgs, threshold)
    d = imgs.shape[-1]
    # Shift within a 2x zero-padded box, so that nothing wraps round to the far edge.
    lo, hi = d // 2, d - d // 2
    pad = torch.nn.functional.pad(imgs, (lo, hi, lo, hi))
    moved = fourier_shift_images(pad, -m[:, 0], -m[:, 1])[:, lo : lo + d, lo : lo + d]
    return moved.numpy().astype(np.float32), m.numpy()


def centred_poses(result: ParticleResult, m: np.ndarray) -> ParticleResult:
    """Particle poses for classes moved by -m (K, 2) pixels (``centre_images``).

    A pose (psi, t) models a particle as its class turned by -psi, then moved by +t (poses.py);
    the class moved by -m models the same particle with t + R(-psi) m. Returns a copy of result
    with tx, ty (pixels) changed.
    """
    mx, my = m[result.cls, 0], m[result.cls, 1]
    a = np.deg2rad(result.psi_deg)
    c, s = np.cos(a), np.sin(a)
    return replace(result, tx=result.tx + c * mx + s * my, ty=result.ty - s * mx + c * my)


def centred_classes(
    images: torch.Tensor,
    result: ParticleResult,
    threshold: float,
    has_signal: np.ndarray | None = None,
) -> tuple[np.ndarray, ParticleResult]:
    """``centre_images`` and the matching ``centred_poses``: what the outputs write.

    has_signal: (K,) bool, classes whose resolution shows signal; the others (noise, empty) are
    left where they are: the centre of mass of a noise pattern is a noise blob."""
    moved, m = centre_images(images, threshold)
    if has_signal is not None:
        keep = ~np.asarray(has_signal, dtype=bool)
        m[keep] = 0.0
        moved[keep] = images.detach().float().cpu().numpy()[keep]
    return moved, centred_poses(result, m)
