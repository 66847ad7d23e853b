"""Match the class averages of two versions of a job's output (e.g. before and after a streaming
update): classes are renumbered by particle count at every update, so a class keeps its identity
only through its image.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Normalised cross-correlation below which two class averages are not the same class.
MIN_NCC = 0.5


def ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Ka, Kb) normalised cross-correlation (no shift, no rotation) of (Ka, D, D) and (Kb, D, D)
    images; a constant image correlates 0 with everything."""
    fa = _standardise(a)
    fb = _standardise(b)
    return fa @ fb.T / fa.shape[1]


def match_classes(old: np.ndarray, new: np.ndarray, min_ncc: float = MIN_NCC) -> np.ndarray:
    """(K_old,) index into ``new`` of each old class (one-to-one, by the best total correlation),
    -1 where no new class correlates at least ``min_ncc``. Images of different boxes match
    nothing."""
    old = np.asarray(old, np.float64)
    new = np.asarray(new, np.float64)
    out = np.full(old.shape[0], -1, dtype=np.int64)
    if old.shape[0] == 0 or new.shape[0] == 0 or old.shape[1:] != new.shape[1:]:
        return out
    c = ncc_matrix(old, new)
    rows, cols = linear_sum_assignment(-c)
    good = c[rows, cols] >= min_ncc
    out[rows[good]] = cols[good]
    return out


def _standardise(x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    flat = flat - flat.mean(1, keepdims=True)
    sd = flat.std(1, keepdims=True)
    return np.divide(flat, sd, out=np.zeros_like(flat), where=sd > 0)
