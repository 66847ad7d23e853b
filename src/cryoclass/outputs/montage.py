"""PNG montages of image stacks (particles, views, class averages) with matplotlib (Agg).

Each tile is contrast-normalised on its own (grey scale from its 0.5th to 99.5th percentile), shown
with row 0 at the top (as RELION's display and most viewers do), x = column to the right. Uses
the object-oriented matplotlib API (no pyplot state), so it is safe in worker threads.
"""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cryoclass.io import atomic_write

__all__ = ["save_montage", "montage_figure", "normalise_tile"]

CAPTION_FONTSIZE = 7
CAPTION_LINE_INCHES = 0.13  # one line of 7-point text with matplotlib's default line spacing


def normalise_tile(img: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Scale one (H, W) image to [0, 1] between its lo/hi percentiles (clipped); flat -> 0.5."""
    a = np.asarray(img, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.full(a.shape, 0.5)
    lo, hi = np.percentile(finite, [lo_pct, hi_pct])
    if not hi > lo:
        return np.full(a.shape, 0.5)
    return np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0.0, 1.0)


def montage_figure(
    images: np.ndarray,
    labels: Sequence[str] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    tile_inches: float = 1.3,
    dpi: int = 100,
) -> Figure:
    """A matplotlib Figure with the images in a grid; arguments as save_montage.

    Each caption gets as many text lines of room as the longest label has, so multi-line
    captions (count and resolution) of the last row stay inside the picture.
    """
    imgs = np.asarray(images)
    if imgs.ndim == 2:
        imgs = imgs[None]
    if imgs.ndim != 3 or imgs.shape[0] == 0:
        raise ValueError(f"images must have shape (n, H, W) with n >= 1, got {imgs.shape}")
    n = imgs.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    cols = int(ncols) if ncols else min(n, max(1, min(10, math.ceil(math.sqrt(n)))))
    rows = math.ceil(n / cols)
    cap = 0.0
    if labels is not None:  # room for the longest caption's lines
        cap = 0.08 + CAPTION_LINE_INCHES * max(str(lab).count("\n") + 1 for lab in labels)
    head = 0.35 if title else 0.0
    height = rows * (tile_inches + cap) + head
    fig = Figure(figsize=(cols * tile_inches, height), dpi=dpi)
    FigureCanvasAgg(fig)
    for i in range(n):
        r, c = divmod(i, cols)
        left = c / cols
        bottom = 1.0 - (head + (r + 1) * (tile_inches + cap) - cap) / height
        ax = fig.add_axes((left + 0.02 / cols, bottom, 0.96 / cols, tile_inches * 0.96 / height))
        ax.imshow(
            normalise_tile(imgs[i]),
            cmap="gray",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            origin="upper",
        )
        ax.set_axis_off()
        if labels is not None:
            ax.text(
                0.5,
                -0.03,
                str(labels[i]),
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=CAPTION_FONTSIZE,
            )
    if title:
        fig.text(0.5, 1.0 - 0.5 * head / height, title, ha="center", va="center", fontsize=10)
    return fig


def save_montage(
    images: np.ndarray,
    path: str | PathLike[str],
    labels: Sequence[str] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    tile_inches: float = 1.3,
    dpi: int = 100,
) -> Path:
    """Write a grid of images as a PNG.

    Args:
        images: (n, H, W) array (a single (H, W) image is accepted), any real dtype.
        path: output PNG path (written atomically: temp file, then rename).
        labels: optional n captions, drawn under each tile (may hold several lines).
        ncols: tiles per row (default: about sqrt(n), at most 10 unless more are asked for).
        title: optional title over the grid.
        tile_inches: size of one tile in inches.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    fig = montage_figure(images, labels, ncols, title, tile_inches, dpi)
    out = Path(path)
    with atomic_write(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, facecolor="white")
    return out
