"""Scores of a 2D classification against ground truth, and Fourier ring correlation.

Geometry conventions as in :mod:`cryoclass.quality.transforms` (x = column, y = row, centre at
pixel (D // 2, D // 2), R(a) turns content counter-clockwise by a in (x, y)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from cryoclass.quality.transforms import (
    ArrayLike,
    as_tensor,
    bandpass_images,
    fourier_crop,
    mirror_images,
    rotate_images,
    soft_circular_mask,
)

__all__ = [
    "adjusted_rand_index",
    "best_ncc_inplane",
    "class_view_ncc",
    "views_recovered",
    "psi_consistency",
    "frc",
    "resolution_from_frc",
    "InplaneMatch",
]


def adjusted_rand_index(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index of two labelings of the same particles (1 = identical partitions,
    ≈ 0 for independent random labelings). Label values need not correspond."""
    return float(
        adjusted_rand_score(np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel())
    )


# ---------------------------------------------------------------- in-plane search (batched)


@dataclass
class InplaneMatch:
    """Result of a rotation + translation search of K images against V references.

    ncc: (K, V) best normalised cross-correlation. angle_deg: (K, V) angle a and shift_px:
    (K, V, 2) shift (sx, sy) in input pixels such that ``image ≈ T(shift) R(a) [M] reference``;
    mirrored: (K, V) bool, whether the mirrored reference M (x -> -x) matched best.
    """

    ncc: np.ndarray
    angle_deg: np.ndarray
    shift_px: np.ndarray
    mirrored: np.ndarray


def _working_box(box: int, pixel_size_A: float, lowpass_A: float | None) -> int:
    """Even box after Fourier cropping to a working pixel of about lowpass_A / 2.4 (never larger)."""
    if lowpass_A is None:
        return box
    target_apix = lowpass_A / 2.4
    if target_apix <= pixel_size_A:
        return box
    w = int(math.ceil(box * pixel_size_A / target_apix))
    w += w % 2
    return min(box, max(w, 16))


def _prepare(
    images: torch.Tensor,
    pixel_size_A: float,
    lowpass_A: float | None,
    highpass_A: float | None,
    work_box: int,
    mask_diameter_frac: float,
) -> torch.Tensor:
    """Band-pass, Fourier-crop, subtract the background level, soft-mask, scale to unit norm.

    The background level is the mean outside the mask (the mean of the whole image when the mask
    covers the box): subtracting it rather than the mean inside the mask leaves no pedestal whose
    edge would move with the content and lower the correlation of shifted copies.
    """
    x = bandpass_images(images, pixel_size_A, lowpass_A, highpass_A)
    x = fourier_crop(x, work_box)
    radius = mask_diameter_frac * work_box / 2.0
    edge = max(2.0, 0.05 * work_box)
    m = soft_circular_mask(work_box, radius, edge_px=edge, device=x.device)
    outside = m == 0
    if int(outside.sum()) >= 4 * work_box:
        level = x[..., outside].mean(dim=-1)[..., None, None]
    else:
        level = x.mean(dim=(-2, -1), keepdim=True)
    return _unit((x - level) * m)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.flatten(-2).norm(dim=-1).clamp_min(1e-12)[..., None, None]


def _nice_size(n: int) -> int:
    """Smallest even m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n + (n % 2)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def _pad_size(w: int) -> int:
    """Correlation box for w x w masked images: 1.25 w (rounded up to a fast FFT size) keeps the
    periodic copies of a disc of diameter 0.9 w apart for shifts up to about 0.35 w, far more than
    particles and class averages are off-centre."""
    return _nice_size(int(math.ceil(1.25 * w)))


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad (..., w, w) to (..., n, n) with the content at the top-left."""
    w = x.shape[-1]
    return torch.nn.functional.pad(x, (0, n - w, 0, n - w))


def _parabolic(m: torch.Tensor, c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Sub-sample offset of a peak from three samples (minus, centre, plus), in (-0.5, 0.5)."""
    den = m - 2 * c + p
    off = torch.where(den.abs() > 1e-12, 0.5 * (m - p) / den, torch.zeros_like(den))
    return off.clamp(-0.5, 0.5)


def _cc_peaks(
    fimg: torch.Tensor, fref: torch.Tensor, upsample: int = 1
) -> tuple[torch.Tensor, ...]:
    """Peaks of cross-correlation maps of image spectra with (conjugated) reference spectra.

    fimg: (P, 1, n, n//2+1) rfft2 of zero-padded images (n even, :func:`_pad`); fref: (P or 1, M,
    n, n//2+1) conjugated rfft2 of zero-padded references. The maps ``irfft2(fimg * fref)`` are computed on a grid
    ``upsample`` times finer (Fourier zero-padding = band-limited interpolation of the correlation).
    Returns best value (P,), map index (P,), shift (sx, sy) in working pixels (P,) each, and the
    per-map peak values (P, M) with a parabolic sub-sample correction.
    """
    n0 = fimg.shape[-2]
    n = n0 * upsample
    prod = fimg * fref  # (P, M, n0, n0//2+1)
    if upsample > 1:  # zero-pad the half spectrum to (n, n//2+1)
        big = torch.zeros(prod.shape[:2] + (n, n // 2 + 1), dtype=prod.dtype)
        h = n0 // 2  # rows 0..h-1 are k >= 0, rows h..n0-1 are k < 0 (row h: -Nyquist)
        big[..., :h, : h + 1] = prod[..., :h, :]
        big[..., n - h :, : h + 1] = prod[..., h:, :]
        prod = big
    cc = torch.fft.irfft2(prod, s=(n, n)) * (upsample**2)
    p, m = cc.shape[:2]
    flat = cc.reshape(p, m, -1)
    vals, idx = flat.max(dim=2)  # (P, M)
    ty, tx = idx // n, idx % n
    pi = torch.arange(p)[:, None].expand(p, m)
    mi = torch.arange(m)[None, :].expand(p, m)
    xm, xp = cc[pi, mi, ty, (tx - 1) % n], cc[pi, mi, ty, (tx + 1) % n]
    ym, yp = cc[pi, mi, (ty - 1) % n, tx], cc[pi, mi, (ty + 1) % n, tx]
    ox, oy = _parabolic(xm, vals, xp), _parabolic(ym, vals, yp)
    # peak height of the fitted parabolas (c - (m - p) * off / 4 on each axis)
    peak = vals + 0.25 * (xm - xp) * ox + 0.25 * (ym - yp) * oy
    best, bi = peak.max(dim=1)
    rows = torch.arange(p)
    txb, tyb = tx[rows, bi], ty[rows, bi]
    sx = (torch.where(txb >= n // 2, txb - n, txb).float() + ox[rows, bi]) / upsample
    sy = (torch.where(tyb >= n // 2, tyb - n, tyb).float() + oy[rows, bi]) / upsample
    return best, bi, sx, sy, peak


def _angle_offset(per_map: torch.Tensor, bi: torch.Tensor, circular: bool) -> torch.Tensor:
    """Parabolic sub-step offset of the best angle from the peak values of its neighbours."""
    p, m = per_map.shape
    if m < 3:
        return torch.zeros(p)
    rows = torch.arange(p)
    lo = (bi - 1) % m if circular else (bi - 1).clamp(0, m - 1)
    hi = (bi + 1) % m if circular else (bi + 1).clamp(0, m - 1)
    off = _parabolic(per_map[rows, lo], per_map[rows, bi], per_map[rows, hi])
    if not circular:
        off = torch.where((bi == 0) | (bi == m - 1), torch.zeros_like(off), off)
    return off


def _search(
    images: torch.Tensor,
    refs: torch.Tensor,
    angles_deg: torch.Tensor,
    mirror: bool,
    max_maps: int = 4096,
) -> tuple[torch.Tensor, ...]:
    """Best rotation (on the circular grid ``angles_deg``) and translation of each prepared
    reference onto each prepared image.

    images: (K, w, w), refs: (V, w, w), unit norm. Returns ncc (K, V), angle (K, V) degrees,
    shift (K, V, 2) in working pixels, mirrored (K, V).
    """
    k, w, _ = images.shape
    v = refs.shape[0]
    a = angles_deg.numel()
    step = float(angles_deg[1] - angles_deg[0]) if a > 1 else 0.0
    n = _pad_size(w)
    fi = torch.fft.rfft2(_pad(images, n))[:, None]  # (K, 1, n, n//2+1)
    out_ncc = torch.full((k, v), -2.0)
    out_ang = torch.zeros(k, v)
    out_shift = torch.zeros(k, v, 2)
    out_mir = torch.zeros(k, v, dtype=torch.bool)
    for j in range(v):
        for mir in [False, True] if mirror else [False]:
            ref = mirror_images(refs[j]) if mir else refs[j]
            rot = _unit(rotate_images(ref.expand(a, w, w), angles_deg))  # (A, w, w)
            fr = torch.conj(torch.fft.rfft2(_pad(rot, n)))[None]  # (1, A, n, n//2+1)
            chunk = max(1, max_maps // a)
            for s in range(0, k, chunk):
                best, bi, sx, sy, per_map = _cc_peaks(fi[s : s + chunk], fr)
                ang = angles_deg[bi] + _angle_offset(per_map, bi, circular=True) * step
                sl = slice(s, s + best.shape[0])
                better = best > out_ncc[sl, j]
                out_ncc[sl, j] = torch.where(better, best, out_ncc[sl, j])
                out_ang[sl, j] = torch.where(better, ang, out_ang[sl, j])
                out_shift[sl, j, 0] = torch.where(better, sx, out_shift[sl, j, 0])
                out_shift[sl, j, 1] = torch.where(better, sy, out_shift[sl, j, 1])
                out_mir[sl, j] = out_mir[sl, j] | better if mir else out_mir[sl, j] & ~better
    return out_ncc, out_ang, out_shift, out_mir


def _refine(
    images: torch.Tensor,
    refs: torch.Tensor,
    ang: torch.Tensor,
    mir: torch.Tensor,
    step: float,
    n_fine: int = 8,
    upsample: int = 4,
) -> tuple[torch.Tensor, ...]:
    """Local search around each pair's coarse angle (+- one step, ``2 n_fine + 1`` angles) with a
    correlation map ``upsample`` times finer. Arguments as returned by :func:`_search`."""
    k, w, _ = images.shape
    v = refs.shape[0]
    offs = torch.linspace(-step, step, 2 * n_fine + 1)
    out = [torch.zeros(k, v) for _ in range(4)]
    n = _pad_size(w)
    fi = torch.fft.rfft2(_pad(images, n))
    for j in range(v):
        ref = torch.where(mir[:, j, None, None], mirror_images(refs[j]), refs[j])  # (K, w, w)
        angs = ang[:, j, None] + offs[None]  # (K, R)
        rot = _unit(
            rotate_images(
                ref[:, None].expand(k, offs.numel(), w, w).reshape(-1, w, w), angs.reshape(-1)
            ).reshape(k, -1, w, w)
        )
        fr = torch.conj(torch.fft.rfft2(_pad(rot, n)))
        best, bi, sx, sy, per_map = _cc_peaks(fi[:, None], fr, upsample=upsample)
        da = _angle_offset(per_map, bi, circular=False) * float(offs[1] - offs[0])
        out[0][:, j], out[1][:, j] = best, angs[torch.arange(k), bi] + da
        out[2][:, j], out[3][:, j] = sx, sy
    return out[0], out[1], torch.stack([out[2], out[3]], dim=-1)


def class_view_ncc(
    images: ArrayLike,
    references: ArrayLike,
    pixel_size_A: float,
    lowpass_A: float | None = None,
    highpass_A: float | None = None,
    rot_step_deg: float = 2.0,
    mirror: bool = False,
    mask_diameter_frac: float = 0.9,
    refine: bool = False,
) -> InplaneMatch:
    """Best NCC of every image against every reference over in-plane rotations (and mirror) and all
    translations (2x zero-padded FFT cross-correlation).

    Both stacks are band-passed (:func:`~cryoclass.quality.transforms.bandpass_images`), Fourier-
    cropped to a working pixel of about lowpass_A / 2.4 Å when that is coarser than theirs, their
    background level (mean outside the mask) subtracted, masked by a soft circle of diameter
    ``mask_diameter_frac`` x box and scaled to unit norm once (the NCC at a shift is the plain
    correlation of these normalised images, so a shifted or rotated copy scores 1).

    Args:
        images: (K, D, D) images (e.g. class averages).
        references: (V, D, D) references (e.g. clean views), same box and pixel size.
        pixel_size_A: pixel size in Å of both stacks.
        lowpass_A, highpass_A: band-pass in Å (None = no filter on that side).
        rot_step_deg: rotation search step in degrees over [0, 360).
        mirror: also try the mirrored references.
        mask_diameter_frac: mask diameter as a fraction of the box.
        refine: refine each pair's angle (+- one step, in 1/8 steps) and shift (correlation map
            upsampled 4x) after the coarse search; costs about K x V x 17 more maps.

    Returns:
        :class:`InplaneMatch` with ``image[k] ≈ T(shift[k, v]) R(angle[k, v]) [M] references[v]``;
        shifts are in input pixels, angles in degrees in about [0, 360).
    """
    x = as_tensor(images)
    r = as_tensor(references)
    if x.dim() == 2:
        x = x[None]
    if r.dim() == 2:
        r = r[None]
    box = x.shape[-1]
    if r.shape[-1] != box:
        raise ValueError("images and references must have the same box")
    wbox = _working_box(box, pixel_size_A, lowpass_A)
    xi = _prepare(x, pixel_size_A, lowpass_A, highpass_A, wbox, mask_diameter_frac)
    ri = _prepare(r, pixel_size_A, lowpass_A, highpass_A, wbox, mask_diameter_frac)
    n_ang = max(1, int(round(360.0 / rot_step_deg)))
    angles = torch.arange(n_ang, dtype=torch.float32) * (360.0 / n_ang)
    with torch.no_grad():
        ncc, ang, shift, mir = _search(xi, ri, angles, mirror)
        if refine:
            ncc_r, ang_r, shift_r = _refine(xi, ri, ang, mir, step=360.0 / n_ang)
            better = ncc_r >= ncc
            ncc = torch.where(better, ncc_r, ncc)
            ang = torch.where(better, ang_r, ang)
            shift = torch.where(better[..., None], shift_r, shift)
    return InplaneMatch(
        ncc=ncc.numpy().astype(np.float64),
        angle_deg=(ang.numpy() % 360.0),
        shift_px=shift.numpy() * (box / wbox),
        mirrored=mir.numpy(),
    )


def best_ncc_inplane(
    image: ArrayLike,
    reference: ArrayLike,
    pixel_size_A: float,
    lowpass_A: float | None = None,
    rot_step_deg: float = 2.0,
    highpass_A: float | None = None,
    mask_diameter_frac: float = 0.9,
) -> tuple[float, float, tuple[float, float]]:
    """Best NCC of ``image`` with ``reference`` over in-plane rotations and all translations.

    Sign convention: the returned angle a (degrees, [0, 360)) and shift (sx, sy) (pixels, x = column,
    y = row) are those for which ``image ≈ T(shift) R(a) reference``, i.e.
    ``image ≈ shift_images(rotate_images(reference, a), shift)``: the reference content turned
    counter-clockwise by a in (x, y) about pixel (D/2, D/2), then moved by +shift. For a simulated
    particle of view v (truth psi, shift): ``a = -psi (mod 360)`` and shift = the true shift.
    After the search on the ``rot_step_deg`` grid the angle is refined locally (1/8 step and a
    parabola) and the shift on a 4x upsampled correlation map (and a parabola).

    Args:
        image, reference: (D, D) images with the same box and pixel size.
        pixel_size_A: pixel size in Å.
        lowpass_A: optional low-pass (Å) of both before comparing (also sets the working pixel).
        rot_step_deg: rotation step in degrees.
        highpass_A: optional high-pass (Å).
        mask_diameter_frac: soft circular mask diameter as a fraction of the box.

    Returns:
        ``(ncc, angle_deg, (shift_x_px, shift_y_px))``.
    """
    m = class_view_ncc(
        as_tensor(image)[None],
        as_tensor(reference)[None],
        pixel_size_A,
        lowpass_A=lowpass_A,
        highpass_A=highpass_A,
        rot_step_deg=rot_step_deg,
        mirror=False,
        mask_diameter_frac=mask_diameter_frac,
        refine=True,
    )
    return (
        float(m.ncc[0, 0]),
        float(m.angle_deg[0, 0]),
        (float(m.shift_px[0, 0, 0]), float(m.shift_px[0, 0, 1])),
    )


def views_recovered(
    class_averages: ArrayLike,
    class_counts: ArrayLike,
    views: ArrayLike,
    pixel_size_A: float,
    ncc_threshold: float = 0.8,
    min_class_frac: float = 0.005,
    lowpass_A: float | None = 10.0,
    highpass_A: float | None = None,
    mirror: bool = True,
    rot_step_deg: float = 2.0,
) -> tuple[int, np.ndarray]:
    """How many true views some sufficiently populated class average reproduces.

    View v is recovered when a class holding >= ``min_class_frac`` of all particles has an average
    whose best NCC with view v (:func:`class_view_ncc`: rotations, translations, and the mirror
    image when ``mirror``, after the band-pass) is >= ``ncc_threshold``. The same definition as
    the benchmark's ``views_recovered`` (``highpass_A=40`` gives its ``_bp`` variant). Each view's
    best class is re-scored with the refined search (finer angles, sub-pixel shifts).

    Args:
        class_averages: (K, D, D) class averages.
        class_counts: (K,) particles per class.
        views: (V, D, D) clean views, same box and pixel size.
        pixel_size_A: pixel size in Å.
        ncc_threshold: NCC needed to count a view as recovered.
        min_class_frac: smallest class population, as a fraction of all particles, that counts.
        lowpass_A, highpass_A: band-pass in Å.
        mirror: also match mirrored views.
        rot_step_deg: rotation step in degrees.

    Returns:
        ``(n_recovered, per_view_best_ncc)``, the latter (V,) (-1 where no class qualifies).
    """
    counts = np.asarray(class_counts, dtype=np.float64).ravel()
    views_t = as_tensor(views)
    keep = counts >= min_class_frac * max(counts.sum(), 1e-12)
    best = np.full(views_t.shape[0], -1.0)
    if keep.any():
        avgs = as_tensor(class_averages)[torch.as_tensor(np.flatnonzero(keep))]
        kw = dict(
            lowpass_A=lowpass_A, highpass_A=highpass_A, rot_step_deg=rot_step_deg, mirror=mirror
        )
        m = class_view_ncc(avgs, views_t, pixel_size_A, **kw)
        best = m.ncc.max(axis=0)
        for v, k in enumerate(m.ncc.argmax(axis=0)):  # refine each view's best class only
            r = class_view_ncc(
                avgs[int(k)][None], views_t[v][None], pixel_size_A, refine=True, **kw
            )
            best[v] = max(best[v], float(r.ncc[0, 0]))
    return int((best >= ncc_threshold).sum()), best


def psi_consistency(
    true_psi_deg: ArrayLike,
    est_psi_deg: ArrayLike,
    labels: ArrayLike,
    min_class_size: int = 5,
    period_deg: float = 360.0,
) -> float:
    """Population-weighted mean, over classes, of the mean resultant length of psi_true - psi_est.

    Within a class, a program that aligned every particle correctly reports psi off the truth by one
    constant, so ``|mean exp(i m (psi_true - psi_est))|`` is 1; random angles give ~1/sqrt(n).
    m = 360 / ``period_deg`` (use the in-plane symmetry period, e.g. 90 for a C4 top view).

    Args:
        true_psi_deg, est_psi_deg: (N,) angles in degrees.
        labels: (N,) class labels.
        min_class_size: classes with fewer particles are ignored.
        period_deg: in-plane symmetry period in degrees.

    Returns:
        The weighted mean resultant length in [0, 1] (nan when no class qualifies).
    """
    t = np.asarray(true_psi_deg, dtype=np.float64).ravel()
    e = np.asarray(est_psi_deg, dtype=np.float64).ravel()
    lab = np.asarray(labels).ravel()
    m = 360.0 / period_deg
    z = np.exp(1j * np.deg2rad(m * (t - e)))
    uniq, inv, cnt = np.unique(lab, return_inverse=True, return_counts=True)
    sums = np.zeros(len(uniq), dtype=np.complex128)
    np.add.at(sums, inv, z)
    ok = cnt >= min_class_size
    if not ok.any():
        return float("nan")
    r = np.abs(sums[ok]) / cnt[ok]
    return float((r * cnt[ok]).sum() / cnt[ok].sum())


def frc(img_a: ArrayLike, img_b: ArrayLike) -> np.ndarray:
    """Fourier ring correlation of two (..., D, D) images per shell of integer radius 0 .. D // 2
    (Fourier pixels; shell i is frequency i / (D * pixel_size) 1/Å).

    Returns:
        (..., D // 2 + 1) float64 array: ``Re sum A conj(B) / sqrt(sum |A|^2 sum |B|^2)`` per shell.
    """
    a = as_tensor(img_a, torch.float64)
    b = as_tensor(img_b, torch.float64)
    d = a.shape[-1]
    fa, fb = torch.fft.fft2(a), torch.fft.fft2(b)
    k = torch.fft.fftfreq(d, d=1.0 / d, dtype=torch.float64)
    shell = torch.round(torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)).long().flatten()
    n_sh = d // 2 + 1
    inside = shell < n_sh
    idx = shell[inside]

    def ring(v: torch.Tensor) -> torch.Tensor:
        flat = v.reshape(v.shape[:-2] + (-1,))[..., inside]
        out = torch.zeros(flat.shape[:-1] + (n_sh,), dtype=torch.float64)
        return out.index_add_(-1, idx, flat)

    num = ring((fa * fb.conj()).real)
    den = torch.sqrt(ring(fa.abs() ** 2) * ring(fb.abs() ** 2))
    return (num / den.clamp_min(1e-300)).numpy()


def resolution_from_frc(
    frc_curve: ArrayLike, pixel_size_A: float, box: int, threshold: float = 0.143
) -> float:
    """Resolution (Å) where the FRC first falls below ``threshold`` (linear interpolation between
    shells, starting at shell 1). Shell i is at frequency i / (box * pixel_size_A).

    Returns:
        ``box * pixel_size_A / shell``; the Nyquist resolution ``2 * pixel_size_A`` (scaled to the
        last shell) if the curve never falls below the threshold.
    """
    c = np.asarray(frc_curve, dtype=np.float64).ravel()
    for i in range(1, len(c)):
        if c[i] < threshold:
            if i == 1:
                return float(box * pixel_size_A)
            f = (i - 1) + (c[i - 1] - threshold) / (c[i - 1] - c[i])
            return float(box * pixel_size_A / f)
    return float(box * pixel_size_A / (len(c) - 1))
