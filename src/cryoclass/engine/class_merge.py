"""Duplicate classes: pairs of class averages that show one view.

Two classes hold the same view when, once aligned, their half-set averages agree across the
classes as well as each class's own half-sets say two estimates of one signal can agree. Per
shell, a class whose half-set FRC is f has half-set SNR s = f / (1 - f); for one signal seen
through noise of SNRs s_a and s_b the FRC of two half-set averages is
sqrt(s_a s_b / ((1 + s_a)(1 + s_b))). The ratio of the measured cross-FRC to that expectation,
averaged over the shells where the expectation is informative (weights: the expectation), is ~1
for duplicates and falls wherever the views differ. It needs no threshold on correlation,
resolution or class size. The pair is aligned on one half-set and compared on the other (both
ways), so the alignment search cannot inflate the agreement by fitting noise.

Alignment: rotation from the shift-invariant amplitude spectra (a 180-degree ambiguity, both tried),
then the shift on a pixel lattice and refined to a quarter pixel, rotation refined around the best.

Views that differ only at the lowest shells, where every compact particle looks alike, are not
told apart when nothing else in the band carries signal: such pairs score high (see the tests).
"""

from __future__ import annotations

import math

import torch

from cryoclass.engine.poses import shift_grid
from cryoclass.engine.references import rotated_references
from cryoclass.physics.fourier import Band, make_band, rfft_band, shell_frc, shell_sum, shift_phase

#: cross-FRC / expected-for-one-signal at or above which two classes are one view. On the suite's
#: final models, copies of one view scored 0.80-0.95 and different views at most 0.72; 0.70
#: merged real views on two of three seeds (docs/status.md, session 8). Copies of a symmetric
#: top view score 0.55-0.69, below two distinct side views of the same particle (0.75): each
#: class's half-sets share the noise fitted to its reference, two copies do not
#: (docs/status.md, session 14). Such a pair is merged only when its split does not come back
#: (``class_split.py``), or on this ratio alone when a class has too few particles to test:
#: distinct views of a ring complex scored 0.76-0.85 (docs/status.md, session 31).
SAME_VIEW_RATIO = 0.75
#: shells count when the FRC expected for one signal is at least this (signal to compare).
MIN_EXPECTED_FRC = 0.3
ROTATION_STEP_DEG = 2.0
ROTATION_CANDIDATES = 2  # best spectrum rotations kept per pair (each with its 180-degree twin)
MIN_SHELLS = 3  # informative shells a comparison needs
MAX_ALIGN_RADIUS = 16.0  # Fourier pixels used for the coarse alignment (refined on the whole band)


def _centred_amplitudes(values: torch.Tensor, shell: torch.Tensor, n: int) -> torch.Tensor:
    """|values| minus each shell's mean amplitude, unit norm over the last axis."""
    amp = values.abs()
    count = shell_sum(torch.ones_like(amp[..., :1]).expand_as(amp), shell, n).clamp_min(1)
    mean = shell_sum(amp, shell, n) / count
    out = amp - torch.gather(mean, -1, shell.expand_as(amp))
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def same_view_ratio(
    half_images: torch.Tensor,
    r_work: float,
    max_shift_px: float,
    classes: list[int],
    min_expected: float = MIN_EXPECTED_FRC,
) -> dict[tuple[int, int], float]:
    """Cross-FRC / expected-for-one-signal of every pair of ``classes``, cross-validated.

    The pair is aligned on one half-set's averages and compared on the other's, both ways, so
    that the alignment search, which also fits noise, cannot inflate the agreement.
    half_images: (2, K, D, D) half-set averages; r_work: the working band (Fourier pixels);
    max_shift_px: largest shift between two classes' frames (pixels); min_expected: the FRC
    expected for one signal that makes a shell informative. Returns {(a, b): ratio} for a < b;
    pairs with fewer than MIN_SHELLS informative shells (too little signal to compare) are
    left out.
    """
    d = half_images.shape[-1]
    dev = half_images.device
    band = make_band(d, r_work, r_lo=0.5, device=dev)
    align = band.shell <= min(r_work, MAX_ALIGN_RADIUS)
    sub = Band(d, band.kx[align], band.ky[align], band.shell[align], band.flat_index[align])
    n_sh = int(math.floor(r_work)) + 2
    m = len(classes)
    imgs = half_images[:, torch.as_tensor(classes, device=dev, dtype=torch.long)]  # (2, M, D, D)
    halves = rfft_band(imgs.reshape(-1, d, d), band).view(2, m, -1)
    f_half = shell_frc(halves[0], halves[1], band.shell, n_sh).clamp(0.0, 0.999)
    snr = f_half / (1 - f_half)  # (M, n_sh) SNR of each half-set average

    psi = torch.arange(0.0, 360.0, ROTATION_STEP_DEG, device=dev)
    n_rot = psi.numel()
    rot = rotated_references(imgs.reshape(-1, d, d), sub, psi).view(2, m, n_rot, -1)
    amp_a = _centred_amplitudes(halves[:, :, align], sub.shell, n_sh)  # (2, M, Fa)
    amp_r = _centred_amplitudes(rot, sub.shell, n_sh)  # (2, M, R, Fa)
    spec = torch.einsum("haf,hbrf->habr", amp_a, amp_r)  # (2, M, M, R)
    lattice = shift_grid(max_shift_px, 1.0, dev)
    lattice_phase = shift_phase(sub.kx[None], sub.ky[None], lattice[:, :1], lattice[:, 1:], d)
    fine = shift_grid(0.75, 0.25, dev)
    fine_phase = shift_phase(band.kx[None], band.ky[None], fine[:, :1], fine[:, 1:], d)
    steps = torch.arange(-1.5, 1.6, 0.5, device=dev)  # rotation refinement (degrees)
    n_fine = steps.numel()
    out: dict[tuple[int, int], float] = {}
    for j in range(1, m):  # pairs (i, j), i < j, all i at once
        i = torch.arange(j, device=dev)
        expected = torch.sqrt(snr[:j] * snr[j] / ((1 + snr[:j]) * (1 + snr[j])))  # (j, n_sh)
        use = expected >= min_expected
        use[:, 0] = False
        angles, shifts = [], []
        for h in (0, 1):  # coarse: best spectrum rotations (and their twins) x pixel lattice
            cand = spec[h, :j, j].topk(ROTATION_CANDIDATES, dim=1).indices  # (j, C)
            cand = torch.cat([cand, (cand + n_rot // 2) % n_rot], 1)
            prod = halves[h, :j, None][..., align].conj() * rot[h, j, cand]  # (j, 2C, Fa)
            cc = (prod @ lattice_phase.T).real.flatten(1)  # (j, 2C * S)
            c_best, s_best = (cc.argmax(1) // lattice.shape[0], cc.argmax(1) % lattice.shape[0])
            angles.append(psi[cand[i, c_best]][:, None] + steps[None])  # (j, 7)
            shifts.append(lattice[s_best])  # (j, 2)
        turned = rotated_references(imgs[:, j], band, torch.cat(angles).flatten())
        turned = turned.view(2, 2, j, n_fine, -1)  # (half, aligned-on h, i, angle, F)
        e = torch.where(use, expected, torch.zeros_like(expected))
        ratios = torch.zeros(2, j, device=dev)
        for h in (0, 1):  # refine on half h, compare on the other half
            t_phase = shift_phase(band.kx, band.ky, shifts[h][:, :1], shifts[h][:, 1:], d)
            prod = halves[h, :j, None].conj() * turned[h, h] * t_phase[:, None]  # (j, 7, F)
            cc = (prod @ fine_phase.T).real.flatten(1)  # (j, 7 * 49)
            a2, s2 = cc.argmax(1) // fine.shape[0], cc.argmax(1) % fine.shape[0]
            other = turned[1 - h, h, i, a2] * t_phase * fine_phase[s2]  # (j, F)
            cross = shell_frc(halves[1 - h, :j], other, band.shell, n_sh)  # (j, n_sh)
            ratios[h] = (cross * e).sum(1) / (e * e).sum(1).clamp_min(1e-30)
        ratio = ratios.mean(0)
        for a in torch.nonzero(use.sum(1) >= MIN_SHELLS).squeeze(1).tolist():
            out[(classes[a], classes[j])] = float(ratio[a])
    return out


def kept_and_emptied(a: int, b: int, weights: torch.Tensor) -> tuple[int, int]:
    """(kept, emptied) of a pair of classes to merge: the kept one has more weight (K,)."""
    return (a, b) if float(weights[a]) >= float(weights[b]) else (b, a)


def populated_ratios(
    half_images: torch.Tensor, weights: torch.Tensor, r_work: float, max_shift_px: float
) -> dict[tuple[int, int], float]:
    """``same_view_ratio`` of every pair of populated classes (weights (K,) > 0.5 particle)."""
    classes = [int(c) for c in torch.nonzero(weights > 0.5).squeeze(1).tolist()]
    if len(classes) < 2:
        return {}
    return same_view_ratio(half_images, r_work, max_shift_px, classes)
