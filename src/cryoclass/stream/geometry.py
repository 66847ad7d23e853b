"""The box and pixel size a stream keeps: fixed by the particles it ingests first.

When the first particles hold more than one box (or pixel size), the most common one wins; on a
tie, the first micrograph's (the first row's). The other particles are set aside by the stream.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryoclass.io import ParticleSet


def _winner(values: np.ndarray) -> float:
    """The most common value; on a tie, the one that comes first."""
    uniq, first, counts = np.unique(values, return_index=True, return_counts=True)
    best = counts == counts.max()
    return uniq[best][np.argmin(first[best])]


def first_geometry(t: pd.DataFrame) -> tuple[int, float]:
    """(box px, pixel size Å) for a stream whose first rows are ``t`` (canonical rows, with
    ``rlnImageSize`` from the stacks where known)."""
    sizes = t["rlnImageSize"].to_numpy(np.int64) if "rlnImageSize" in t.columns else np.zeros(0)
    known = sizes > 0
    if not known.any():
        box = ParticleSet(table=t).box
        known = np.ones(len(t), dtype=bool)
    else:
        box = int(_winner(sizes[known]))
        known &= sizes == box
    pix = t["rlnImagePixelSize"].to_numpy(np.float64)[known]
    return int(box), float(_winner(pix))
