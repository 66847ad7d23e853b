"""Duplicate picks: particles on one micrograph closer than a minimum separation.

Needs rlnMicrographName and rlnCoordinateX/Y (pixels of the micrograph, as RELION writes them;
CryoSPARC's location/* are converted to these on reading). Of each group of duplicates the particle
with the highest posterior is kept; the others are set aside with the reason, when the outputs are
written (batch: once at the end; streaming: at each output, as posteriors change).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from cryoclass.engine.particle_result import ParticleResult
from cryoclass.io.particles import Reject


def find_duplicates(
    table: pd.DataFrame,
    score: np.ndarray,
    min_separation_A: float,
    micrograph_pixel_size_A: np.ndarray | float,
) -> tuple[np.ndarray, list[str]]:
    """Rows (into table) to set aside as duplicates, and a reason for each.

    score: (n,) higher is better (e.g. max class posterior); micrograph_pixel_size_A: Å per pixel of
    the coordinates (per row or one value).
    """
    need = {"rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"}
    if not need <= set(table.columns) or len(table) < 2:
        return np.zeros(0, dtype=int), []
    xy = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    xy = xy * np.broadcast_to(np.asarray(micrograph_pixel_size_A, float), (len(table),))[:, None]
    drop: list[int] = []
    reasons: list[str] = []
    names = table["rlnImageName"].astype(str).to_numpy() if "rlnImageName" in table else None
    for _, rows in table.groupby("rlnMicrographName", sort=False).indices.items():
        if rows.size < 2:
            continue
        tree = cKDTree(xy[rows])
        pairs = tree.query_pairs(min_separation_A, output_type="ndarray")
        if pairs.size == 0:
            continue
        # visit particles best first; a particle is dropped if a kept one lies within range
        order = rows[np.argsort(-score[rows], kind="stable")]
        kept: set[int] = set()
        neighbours: dict[int, list[int]] = {}
        for a, b in pairs:
            ra, rb = int(rows[a]), int(rows[b])
            neighbours.setdefault(ra, []).append(rb)
            neighbours.setdefault(rb, []).append(ra)
        for r in order:
            r = int(r)
            near = [k for k in neighbours.get(r, []) if k in kept]
            if near:
                drop.append(r)
                d = float(np.hypot(*(xy[r] - xy[near[0]])))
                other = names[near[0]] if names is not None else f"row {near[0]}"
                reasons.append(f"duplicate pick: {d:.1f} Å from {other} (kept, higher posterior)")
            else:
                kept.add(r)
    return np.asarray(drop, dtype=int), reasons


def duplicate_rejects(
    table: pd.DataFrame, rows: np.ndarray, reasons: list[str], source: str
) -> list[Reject]:
    """Reject records for the duplicate rows (file row from the table's _source_row if known)."""
    out = []
    for r, why in zip(rows, reasons):
        src = source
        row = int(table["_source_row"].iloc[r]) if "_source_row" in table else int(r)
        out.append(
            Reject(source=src, row=row, image_name=str(table["rlnImageName"].iloc[r]), reason=why)
        )
    return out


def micrograph_pixel_size_A(table) -> np.ndarray:
    """Å per pixel of the pick coordinates: the micrograph's pixel size when the table has it,
    else the particles' (coordinates of unbinned extraction)."""
    for col in ("rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize", "rlnImagePixelSize"):
        if col in table.columns:
            return table[col].to_numpy(float)
    return np.ones(len(table))


def without_duplicate_picks(
    rows: pd.DataFrame, result: ParticleResult, min_separation_A: float, source: str = ""
) -> tuple[ParticleResult, list[Reject]]:
    """``result`` less its duplicate picks (same micrograph, closer than min_separation_A: all
    but the highest-posterior one of each group), and rejects naming them (``source``: the
    particle file). rows: the particle table's rows of ``result.index``, in that order."""
    rows = rows.reset_index(drop=True)
    drop, reasons = find_duplicates(
        rows, result.max_prob, min_separation_A, micrograph_pixel_size_A(rows)
    )
    if drop.size == 0:
        return result, []
    keep = np.setdiff1d(np.arange(len(result)), drop)
    return result.take(keep), duplicate_rejects(rows, drop, reasons, source)
