"""Input maps from MRC files: Fourier resampling to the requested pixel size, box, normalisation."""

from __future__ import annotations

import math
import warnings
from os import PathLike

import mrcfile
import numpy as np

__all__ = ["load_map", "fourier_resample", "pad_or_crop", "normalise_volume", "sphere_mask"]


def pad_or_crop(vol: np.ndarray, box: int) -> np.ndarray:
    """Centre-pad with zeros or centre-crop a cubic (n, n, n) map to (box, box, box); the centre
    voxel n//2 goes to box//2."""
    n = vol.shape[0]
    out = np.zeros((box, box, box), dtype=vol.dtype)
    m = min(n, box)
    a, b = n // 2 - m // 2, box // 2 - m // 2
    out[b : b + m, b : b + m, b : b + m] = vol[a : a + m, a : a + m, a : a + m]
    return out


def _integer_padding(n: int, ratio: float, max_extra: int = 64, tol: float = 0.02) -> int:
    """Smallest m >= n with m * ratio within ``tol`` pixels of an integer (m = n if none)."""
    for m in range(n, n + max_extra + 1):
        x = m * ratio
        if abs(x - round(x)) <= tol:
            return m
    return n


def fourier_resample(vol: np.ndarray, apix_in: float, apix_out: float) -> tuple[np.ndarray, float]:
    """Resample a cubic map to a new voxel size by cropping / zero-padding its 3D Fourier transform.

    The map is first zero-padded so that the new size is (nearly) an integer; when downsampling a
    raised-cosine taper (0.9-1.0 of the new Nyquist) avoids ringing from the sharp cut.

    Args:
        vol: (n, n, n) map [z, y, x], centre n // 2.
        apix_in, apix_out: voxel sizes in Å.

    Returns:
        ``(resampled, apix_effective)``: the map (m', m', m'), centre m' // 2, and the exact voxel
        size it has (``m * apix_in / m'``, equal to apix_out up to the rounding of the size).
    """
    n = vol.shape[0]
    ratio = apix_in / apix_out
    if abs(ratio - 1.0) < 1e-6:
        return vol.astype(np.float32), float(apix_in)
    m = _integer_padding(n, ratio)
    v = pad_or_crop(vol.astype(np.float64), m) if m != n else vol.astype(np.float64)
    new = max(2, int(round(m * ratio)))
    spec = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(v)))
    out = np.zeros((new, new, new), dtype=np.complex128)
    k = min(m, new)
    a, b = m // 2 - k // 2, new // 2 - k // 2
    out[b : b + k, b : b + k, b : b + k] = spec[a : a + k, a : a + k, a : a + k]
    if new < m:  # taper towards the new Nyquist
        g = (np.arange(new) - new // 2) / (new / 2.0)
        r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
        t = np.clip((r - 0.9) / 0.1, 0.0, 1.0)
        out *= 0.5 * (1.0 + np.cos(math.pi * t))
    res = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(out))).real * (new / m) ** 3
    return res.astype(np.float32), float(m * apix_in / new)


def sphere_mask(box: int, radius_px: float, edge_px: float) -> np.ndarray:
    """(box, box, box) soft sphere: 1 inside ``radius_px`` of the centre, cosine to 0 over edge."""
    g = np.arange(box) - box // 2
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    t = np.clip((r - radius_px) / max(edge_px, 1e-6), 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(math.pi * t))).astype(np.float32)


def normalise_volume(vol: np.ndarray) -> np.ndarray:
    """Background (median of the outer shell, r > 0.45 box) to 0, negative values clipped to 0, a
    soft spherical mask (radius 0.42 box, edge to 0.48 box), peak scaled to 1."""
    box = vol.shape[0]
    g = np.arange(box) - box // 2
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    shell = vol[r > 0.45 * box]
    bg = float(np.median(shell)) if shell.size else 0.0
    v = np.clip(vol - bg, 0.0, None) * sphere_mask(box, 0.42 * box, 0.06 * box)
    peak = float(v.max())
    if peak <= 0:
        raise ValueError("the map has no positive density above its background")
    return (v / peak).astype(np.float32)


def load_map(
    path: str | PathLike[str], box: int, pixel_size_A: float, map_pixel_size_A: float | None = None
) -> tuple[np.ndarray, dict]:
    """Read an MRC map and bring it to ``box`` voxels of ``pixel_size_A`` Å, peak 1.

    Args:
        path: MRC file (a 3D map; non-cubic maps are zero-padded to a cube).
        box: output box (even).
        pixel_size_A: output voxel size in Å.
        map_pixel_size_A: the map's voxel size if its header has none.

    Returns:
        ``(volume, info)``: float32 (box, box, box) [z, y, x] and a dict with the input box and
        pixel size, the effective pixel size after resampling and the fraction of the map's
        positive density lost by cropping to the box.
    """
    with mrcfile.open(path, permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
        apix_hdr = float(mrc.voxel_size.x)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D map, got shape {data.shape}")
    apix_in = map_pixel_size_A or (apix_hdr if apix_hdr > 0 else None)
    if not apix_in:
        raise ValueError(f"{path}: the header has no voxel size; pass map_pixel_size_A")
    n = max(data.shape)
    if len(set(data.shape)) > 1:
        cube = np.zeros((n, n, n), dtype=np.float32)
        o = [(n - s) // 2 for s in data.shape]
        cube[
            o[0] : o[0] + data.shape[0], o[1] : o[1] + data.shape[1], o[2] : o[2] + data.shape[2]
        ] = data
        data = cube
    res, apix_eff = fourier_resample(data, apix_in, pixel_size_A)
    pos = np.clip(res - np.median(res), 0, None)
    fitted = pad_or_crop(pad_or_crop(pos, box), res.shape[0])
    cut = 1.0 - float(fitted.sum() / max(pos.sum(), 1e-12))
    if cut > 0.02:
        warnings.warn(
            f"box {box} x {pixel_size_A} Å cuts {100 * cut:.0f} % of the map's density; "
            "use a larger box or pixel",
            stacklevel=2,
        )
    vol = normalise_volume(pad_or_crop(res, box))
    info = dict(
        map_input_box=int(n),
        map_input_apix=float(apix_in),
        apix_after_resample=apix_eff,
        map_mass_cut_by_box=round(cut, 4),
    )
    return vol, info
