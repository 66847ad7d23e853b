"""Find particle images: parse ``index@path`` names, resolve stack paths, check the stacks."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, show_value
from .stacks import stack_pixel_size_A, stack_shape

_FORMAT_HINTS = (":mrcs", ":mrc", ":spi")


@dataclass
class ImageLocations:
    """Where each particle's image is, plus what the stack headers say (when opened)."""

    raw_path: np.ndarray  # (n,) str: stack path as written in the file
    stack_path: np.ndarray  # (n,) str: absolute resolved path
    stack_index: np.ndarray  # (n,) int64: 0-based image index
    box: np.ndarray  # (n,) int64: image size D in px from the header, 0 if not opened
    exists: np.ndarray  # (n,) bool: stack file found


def parse_image_names(file: str | PathLike[str], names: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Split RELION image names ``"000012@path/stack.mrcs"`` into (paths, 0-based indices).

    The STAR index is 1-based. A name without ``@`` is image 1 of a single-image file.
    A trailing format hint (``stack.mrc:mrcs``) is dropped.
    """
    s = names.astype(str).str.strip()
    has_at = s.str.contains("@", regex=False)
    parts = s.str.split("@", n=1, expand=True) if len(s) else pd.DataFrame({0: s, 1: s})
    if parts.shape[1] == 1:
        parts[1] = s
    idx_text = parts[0].where(has_at, "1")
    paths = parts[1].where(has_at, s).fillna("")
    for hint in _FORMAT_HINTS:
        paths = paths.where(~paths.str.endswith(hint), paths.str.slice(0, -len(hint)))
    idx = pd.to_numeric(idx_text, errors="coerce")
    bad = idx.isna() | (idx < 1) | (idx != np.floor(idx)) | (paths.str.len() == 0) | names.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"cannot parse rlnImageName {show_value(names.iloc[row])}: expected 'index@stack' with a 1-based index",
            file=file,
            row=row,
        )
    return paths.to_numpy(dtype=object), idx.to_numpy(dtype=np.int64) - 1


def candidate_paths(raw: str, bases: list[Path]) -> list[Path]:
    """Where a stack path from a metadata file may be: absolute, or relative to each base."""
    p = Path(raw)
    if p.is_absolute():
        return [p]
    out: list[Path] = []
    for base in bases:
        c = base / p
        if c not in out:
            out.append(c)
    return out


def locate_images(
    file: Path,
    names: pd.Series,
    bases: list[Path],
    *,
    check_images: bool,
    cs_indices: bool = False,
) -> ImageLocations:
    """Resolve every particle's stack and, with ``check_images``, validate it.

    Each relative stack path is looked up under ``bases`` in order (the first that
    exists wins). With ``check_images`` every stack must exist, be a valid square MRC
    stack, hold the referenced image, and all stacks must share one box size;
    otherwise an :class:`InputError` names ``file``, the first bad row and the stack.
    ``cs_indices`` words index errors as CryoSPARC ``blob/idx`` (0-based).
    """
    raw, index0 = parse_image_names(file, names)
    codes, uniques = pd.factorize(raw)
    n_rows = len(raw)
    resolved = np.empty(len(uniques), dtype=object)
    found = np.zeros(len(uniques), dtype=bool)
    tried: list[list[Path]] = []
    for k, u in enumerate(uniques):
        cands = candidate_paths(str(u), bases)
        hit = next((c for c in cands if c.is_file()), None)
        found[k] = hit is not None
        resolved[k] = str((hit or cands[0]).resolve())
        tried.append(cands)
    box_u = np.zeros(len(uniques), dtype=np.int64)
    if check_images and n_rows:
        _, first_rows = np.unique(codes, return_index=True)
        n_u = np.zeros(len(uniques), dtype=np.int64)
        for k, u in enumerate(uniques):
            row = int(first_rows[k])
            if not found[k]:
                looked = ", ".join(str(c) for c in tried[k])
                raise InputError(f"image stack {u} not found (looked for: {looked})", file=file, row=row)
            try:
                n, d, _ = stack_shape(resolved[k])
            except InputError as err:
                raise InputError(f"image stack {u}: {err.problem}", file=file, row=row) from None
            n_u[k], box_u[k] = n, d
        out_of_range = index0 >= n_u[codes]
        if out_of_range.any():
            row = int(np.flatnonzero(out_of_range)[0])
            k = codes[row]
            what = (
                f"blob/idx {index0[row]} (0-based)"
                if cs_indices
                else f"image index {index0[row] + 1} (1-based)"
            )
            raise InputError(
                f"{what} out of range, stack {uniques[k]} holds {n_u[k]} images", file=file, row=row
            )
        sizes = np.unique(box_u)
        if len(sizes) > 1:
            k_a = int(np.flatnonzero(box_u == box_u[codes[0]])[0])
            k_b = int(np.flatnonzero(box_u != box_u[codes[0]])[0])
            raise InputError(
                f"mixed box sizes: stack {uniques[k_a]} holds {box_u[k_a]}x{box_u[k_a]} px images "
                f"(row {int(first_rows[k_a])}) but stack {uniques[k_b]} holds "
                f"{box_u[k_b]}x{box_u[k_b]} px images",
                file=file,
                row=int(first_rows[k_b]),
            )
    return ImageLocations(
        raw_path=raw,
        stack_path=resolved[codes] if n_rows else np.empty(0, dtype=object),
        stack_index=index0,
        box=box_u[codes] if n_rows else np.empty(0, dtype=np.int64),
        exists=found[codes] if n_rows else np.empty(0, dtype=bool),
    )


def header_pixel_sizes(file: Path, locs: ImageLocations) -> np.ndarray:
    """Pixel size in Å per particle from its stack header; NaN where missing or unset (<= 0)."""
    out = np.full(len(locs.stack_path), np.nan)
    if not len(out):
        return out
    codes, uniques = pd.factorize(locs.stack_path)
    for k, u in enumerate(uniques):
        rows = codes == k
        if not locs.exists[rows][0]:
            continue
        try:
            ps = stack_pixel_size_A(u)
        except InputError as err:
            raise InputError(
                f"image stack {locs.raw_path[rows][0]}: {err.problem}",
                file=file,
                row=int(np.flatnonzero(rows)[0]),
            ) from None
        if ps > 0:
            out[rows] = ps
    return out
