"""Class averages as PNG images for the page."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: Images smaller than this (px) are enlarged server-side (smooth, not blocky, in the browser).
MIN_SIZE = 128


def to_png(image: np.ndarray) -> bytes:
    """One (D, D) class average as an 8-bit greyscale PNG, scaled between its 0.5th and 99.5th
    percentiles (protein white), enlarged to at least MIN_SIZE px."""
    a = np.asarray(image, np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5]) if a.size else (0.0, 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    g = np.clip((a - lo) * scale, 0, 255).astype(np.uint8)
    img = Image.fromarray(g, mode="L")
    if img.width < MIN_SIZE:
        img = img.resize((MIN_SIZE, MIN_SIZE), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
