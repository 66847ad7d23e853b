"""Turn a raw particle table (STAR or .cs) into the canonical, validated table.

Canonical = RELION 3.1 labels, optics merged into every row, units Å / degrees / kV /
mm, plus the internal columns ``_stack_path``, ``_stack_index`` and ``_source_row``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .columns import (
    REQUIRED_COLUMNS,
    SOURCE_ROW,
    STACK_INDEX,
    STACK_PATH,
    normalize_dtypes,
)
from .errors import InputError, show_value
from .locate import ImageLocations, header_pixel_sizes, locate_images
from .problems import RowProblems
from .validate import check_ctf, check_duplicates, defocus_unit_note

log = logging.getLogger("cryoclass.io")

_NUMERIC_REQUIRED = tuple(c for c in REQUIRED_COLUMNS if c != "rlnImageName")
_ORIGINS_PX = (
    ("rlnOriginX", "rlnOriginXAngst"),
    ("rlnOriginY", "rlnOriginYAngst"),
    ("rlnOriginZ", "rlnOriginZAngst"),
)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_numeric(table: pd.DataFrame, col: str, problems: RowProblems) -> None:
    values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    raw = table[col]
    problems.flag(
        ~np.isfinite(values),
        lambda row: f"{col} is not a finite number ({show_value(raw.iloc[row])})",
    )
    table[col] = values


def _pixel_size_from_relion30(table: pd.DataFrame) -> None:
    """RELION 3.0: pixel size from detector pixel (µm) / magnification, or rlnPixelSize."""
    if "rlnImagePixelSize" in table.columns:
        return
    if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(table.columns):
        det = pd.to_numeric(table["rlnDetectorPixelSize"], errors="coerce")
        mag = pd.to_numeric(table["rlnMagnification"], errors="coerce")
        table["rlnImagePixelSize"] = (det * 1e4 / mag).astype(np.float64)
        del table["rlnDetectorPixelSize"], table["rlnMagnification"]
    elif "rlnPixelSize" in table.columns:
        table["rlnImagePixelSize"] = pd.to_numeric(table["rlnPixelSize"], errors="coerce").astype(
            np.float64
        )
        del table["rlnPixelSize"]


def _fill_pixel_size(table: pd.DataFrame, locs: ImageLocations, problems: RowProblems) -> None:
    if "rlnImagePixelSize" in table.columns:
        ps = pd.to_numeric(table["rlnImagePixelSize"], errors="coerce").to_numpy(
            np.float64, na_value=np.nan
        )
    else:
        ps = np.full(len(table), np.nan)
    absurd = np.isfinite(ps) & (ps <= 0)  # given but impossible: set aside, never replaced
    if absurd.any():
        group = table["rlnOpticsGroup"] if "rlnOpticsGroup" in table.columns else None
        problems.flag(
            absurd,
            lambda row: (
                f"rlnImagePixelSize {ps[row]:g} Å"
                + (f" (optics group {group.iloc[row]})" if group is not None else "")
                + " is not a plausible pixel size: expected > 0 Å"
            ),
        )
    missing = ~np.isfinite(ps)
    if missing.any():
        header = header_pixel_sizes(problems.file, locs, wanted=missing & problems.ok())
        ps = np.where(missing, header, ps)
        still = ~(np.isfinite(ps) & (ps > 0))
        problems.flag(
            still,
            lambda row: (
                "no pixel size: no rlnImagePixelSize (optics), rlnDetectorPixelSize + "
                f"rlnMagnification or rlnPixelSize, and stack {locs.raw_path[row]} has none in its header"
                + ("" if locs.exists[row] else " (stack not found)")
            ),
        )
    table["rlnImagePixelSize"] = ps


def _fill_box(
    table: pd.DataFrame, locs: ImageLocations, check_images: bool, problems: RowProblems
) -> None:
    if "rlnImageSize" not in table.columns:
        table["rlnImageSize"] = locs.box  # 0 where the stack was not opened (unknown)
        return
    raw = table["rlnImageSize"]
    size = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    problems.flag(
        ~np.isfinite(size),
        lambda row: f"rlnImageSize is not a number ({show_value(raw.iloc[row])})",
    )
    size = np.where(np.isfinite(size), size, 0).astype(np.int64)
    if check_images:
        group = table["rlnOpticsGroup"] if "rlnOpticsGroup" in table.columns else None
        problems.flag(
            (locs.box > 0) & (size != locs.box),
            lambda row: (
                f"rlnImageSize {size[row]} px (optics group "
                f"{group.iloc[row] if group is not None else 1}) does not match stack "
                f"{locs.raw_path[row]}, which holds {locs.box[row]}x{locs.box[row]} px images"
            ),
        )
    table["rlnImageSize"] = size


def _origins_to_angstrom(table: pd.DataFrame) -> None:
    """RELION 3.0 rlnOriginX/Y/Z (pixels) -> rlnOriginX/Y/ZAngst (Å)."""
    for px, angst in _ORIGINS_PX:
        if px in table.columns and angst not in table.columns:
            loc = table.columns.get_loc(px)
            values = (
                pd.to_numeric(table[px], errors="coerce").to_numpy(np.float64)
                * table["rlnImagePixelSize"].to_numpy()
            )
            del table[px]
            table.insert(loc, angst, values)


def _assign_optics_groups(table: pd.DataFrame, relion30: bool) -> None:
    if "rlnOpticsGroup" in table.columns:
        return
    if relion30 and len(table):
        keys = [
            "rlnVoltage",
            "rlnSphericalAberration",
            "rlnAmplitudeContrast",
            "rlnImagePixelSize",
            "rlnImageSize",
        ]
        table["rlnOpticsGroup"] = table.groupby(keys, sort=False).ngroup().to_numpy(np.int64) + 1
    else:
        table["rlnOpticsGroup"] = np.ones(len(table), dtype=np.int64)


def canonicalize(
    file: Path,
    raw: pd.DataFrame,
    *,
    bases: list[Path],
    relion30: bool,
    check_images: bool,
    defaults: Mapping[str, float | int | str] | None = None,
    cs_indices: bool = False,
    problems: RowProblems | None = None,
    check_values: bool = False,
) -> pd.DataFrame:
    """Validate ``raw`` (read from ``file``) and return the canonical particle table.

    ``bases``: folders to resolve relative stack paths against, in order.
    ``relion30``: apply RELION 3.0 conversions (pixel size from detector pixel /
    magnification, origins px -> Å, optics groups from distinct optics values).
    ``check_images``: open every stack header (existence, completeness, index range, box).
    ``defaults``: values for columns the file lacks (e.g. ``{"rlnAmplitudeContrast": 0.1}``).
    ``check_values``: also flag absurd CTF values (validate.py) and, when collecting,
    particles whose image is listed twice (the first is kept).
    ``problems``: a collecting :class:`RowProblems` (``n = len(raw)``) receives every
    per-particle problem and those rows are left out of the result (their ``_source_row``
    is kept by the others); without it the first one raises :class:`InputError`.
    Whole-file problems (missing columns, mixed box sizes) always raise.
    """
    table = raw.reset_index(drop=True).copy()
    table[SOURCE_ROW] = np.arange(len(table), dtype=np.int64)
    probs = problems if problems is not None else RowProblems(file, len(table))
    for col, value in (defaults or {}).items():
        if col not in table.columns:
            table[col] = value
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        where = "data_particles" if relion30 else "data_optics or data_particles"
        if file.suffix == ".cs":
            where = "the .cs fields"
        hint = ""
        if missing == ["rlnAmplitudeContrast"]:
            hint = (
                "; if it is known, pass defaults={'rlnAmplitudeContrast': 0.1} (or the right value)"
            )
        raise InputError(
            f"missing required column(s) {', '.join(missing)} (looked in {where}){hint}", file=file
        )
    for col in _NUMERIC_REQUIRED:
        _check_numeric(table, col, probs)
    if relion30:
        _pixel_size_from_relion30(table)
    locs = locate_images(
        file,
        table["rlnImageName"],
        bases,
        check_images=check_images,
        cs_indices=cs_indices,
        problems=problems,
    )
    table[STACK_PATH] = locs.stack_path.astype(str) if len(table) else pd.Series([], dtype=str)
    table[STACK_INDEX] = locs.stack_index
    _fill_pixel_size(table, locs, probs)
    _fill_box(table, locs, check_images, probs)
    if problems is not None and check_images:
        _check_one_box(file, table, locs, probs.ok())
    if relion30:
        _origins_to_angstrom(table)
    if check_values:
        check_ctf(table, probs)
        note = defocus_unit_note(table, table[SOURCE_ROW].to_numpy())
        if note:
            log.warning("%s: %s", file, note)
    for col in ("rlnPhaseShift", "rlnCtfBfactor"):
        if col not in table.columns:
            table[col] = 0.0
        else:
            table[col] = pd.to_numeric(table[col], errors="coerce").fillna(0.0)
    _assign_optics_groups(table, relion30)
    og = pd.to_numeric(table["rlnOpticsGroup"], errors="coerce")
    if og.isna().any():
        row = _first_bad(og.isna().to_numpy())
        raise InputError(
            f"rlnOpticsGroup is not an integer ({show_value(table['rlnOpticsGroup'].iloc[row])})",
            file=file,
            row=row,
        )
    table["rlnOpticsGroup"] = og
    if check_values and problems is not None:
        check_duplicates(table, probs)
    if problems is not None and problems.reasons:
        table = table.loc[probs.ok()].reset_index(drop=True)
    normalize_dtypes(table)
    return table


def _check_one_box(file: Path, table: pd.DataFrame, locs: ImageLocations, ok: np.ndarray) -> None:
    """Whole-file error unless the usable rows' stacks hold images of one size."""
    box = locs.box
    sizes = np.unique(box[ok & (box > 0)])
    if len(sizes) <= 1:
        return
    a = _first_bad(ok & (box == sizes[0]))
    b = _first_bad(ok & (box == sizes[1]))
    a, b = min(a, b), max(a, b)
    raise InputError(
        f"mixed box sizes: stack {locs.raw_path[a]} holds {box[a]}x{box[a]} px images (row {a}) "
        f"but stack {locs.raw_path[b]} holds {box[b]}x{box[b]} px images; give the optics groups "
        "their rlnImageSize, or classify them separately",
        file=file,
        row=b,
    )
