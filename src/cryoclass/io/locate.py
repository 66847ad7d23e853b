"""Find particle images: parse ``index@path`` names, resolve stack paths, check the stacks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, show_value
from .problems import RowProblems
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


def parse_image_names(
    file: str | PathLike[str], names: pd.Series, problems: RowProblems | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split RELION image names ``"000012@path/stack.mrcs"`` into (paths, 0-based indices).

    The STAR index is 1-based. A name without ``@`` is image 1 of a single-image file.
    A trailing format hint (``stack.mrc:mrcs``) is dropped. An unparsable name raises
    :class:`InputError`, or with ``problems`` is flagged there (path ``""``, index -1).
    """
    # A plain loop: for the 50-row STAR files a stream reads, pandas string methods cost
    # ~50 times more (per-call overhead), and for 100,000 rows they are no faster.
    values = names.to_numpy(dtype=object)
    n = len(values)
    paths = np.full(n, "", dtype=object)
    idx = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            bad[i] = True
            continue
        text = str(v).strip()
        num, at, path = text.partition("@")
        if not at:
            num, path = "1", text
        for hint in _FORMAT_HINTS:
            if path.endswith(hint):
                path = path[: -len(hint)]
        try:
            k = float(num)
        except ValueError:
            k = math.nan
        if not path or not math.isfinite(k) or k < 1 or k != math.floor(k):
            bad[i] = True
            continue
        paths[i], idx[i] = path, int(k)
    if bad.any():
        problems = problems or RowProblems(file, n)
        problems.flag(
            bad,
            lambda row: (
                f"cannot parse rlnImageName {show_value(names.iloc[row])}: "
                "expected 'index@stack' with a 1-based index"
            ),
        )
    return paths, idx - 1


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
    problems: RowProblems | None = None,
) -> ImageLocations:
    """Resolve every particle's stack and, with ``check_images``, validate it.

    Each relative stack path is looked up under ``bases`` in order (the first that
    exists wins). With ``check_images`` every stack must exist, be a valid square MRC
    stack (complete: a stack still being written is truncated) and hold the referenced
    image; otherwise an :class:`InputError` names ``file``, the first bad row and the
    stack. With ``problems`` (collecting) those rows are flagged there instead, and the
    check that all stacks share one box size is left to the caller. Without it all
    stacks must share one box size. ``cs_indices`` words index errors as CryoSPARC
    ``blob/idx`` (0-based).
    """
    raw, index0 = parse_image_names(file, names, problems)
    codes, uniques = pd.factorize(raw)
    n_rows = len(raw)
    resolved = np.empty(len(uniques), dtype=object)
    found = np.zeros(len(uniques), dtype=bool)
    tried: list[list[Path]] = []
    for k, u in enumerate(uniques):
        cands = candidate_paths(str(u), bases) if u else []
        hit = next((c for c in cands if c.is_file()), None)
        found[k] = hit is not None
        resolved[k] = str((hit or (cands[0] if cands else Path(""))).resolve()) if u else ""
        tried.append(cands)
    box_u = np.zeros(len(uniques), dtype=np.int64)
    if check_images and n_rows:
        probs = problems or RowProblems(file, n_rows)
        usable = probs.ok()
        n_u = np.zeros(len(uniques), dtype=np.int64)
        for k, u in enumerate(uniques):
            rows_k = codes == k
            if not (rows_k & usable).any():
                continue  # only rows already set aside refer to it
            if not found[k]:
                looked = ", ".join(str(c) for c in tried[k])
                probs.flag(
                    rows_k,
                    lambda _, u=u, looked=looked: (
                        f"image stack {u} not found (looked for: {looked})"
                    ),
                )
                continue
            try:
                n, d, _ = stack_shape(resolved[k])
            except InputError as err:
                probs.flag(rows_k, lambda _, u=u, why=err.problem: f"image stack {u}: {why}")
                continue
            n_u[k], box_u[k] = n, d

        def out_of_range_reason(row: int) -> str:
            k = codes[row]
            if cs_indices:
                what = f"blob/idx {index0[row]} (0-based)"
            else:
                what = f"image index {index0[row] + 1} (1-based)"
            return f"{what} out of range, stack {uniques[k]} holds {n_u[k]} images"

        probs.flag((box_u[codes] > 0) & (index0 >= n_u[codes]), out_of_range_reason)
        if problems is None:
            _check_one_box(file, codes, uniques, box_u)
    return ImageLocations(
        raw_path=raw,
        stack_path=resolved[codes] if n_rows else np.empty(0, dtype=object),
        stack_index=index0,
        box=box_u[codes] if n_rows else np.empty(0, dtype=np.int64),
        exists=found[codes] if n_rows else np.empty(0, dtype=bool),
    )


def _check_one_box(file: Path, codes: np.ndarray, uniques: np.ndarray, box_u: np.ndarray) -> None:
    """:class:`InputError` unless every opened stack (box > 0) holds images of one size."""
    used = box_u > 0
    if len(np.unique(box_u[used])) <= 1:
        return
    _, first_rows = np.unique(codes, return_index=True)
    k_a = int(np.flatnonzero(used)[0])
    k_b = int(np.flatnonzero(used & (box_u != box_u[k_a]))[0])
    raise InputError(
        f"mixed box sizes: stack {uniques[k_a]} holds {box_u[k_a]}x{box_u[k_a]} px images "
        f"(row {int(first_rows[k_a])}) but stack {uniques[k_b]} holds "
        f"{box_u[k_b]}x{box_u[k_b]} px images",
        file=file,
        row=int(first_rows[k_b]),
    )


def header_pixel_sizes(
    file: Path, locs: ImageLocations, wanted: np.ndarray | None = None
) -> np.ndarray:
    """Pixel size in Å per particle from its stack header; NaN where missing or unset (<= 0).

    ``wanted`` ((n,) bool): only these rows' stacks are opened (the others get NaN).
    """
    out = np.full(len(locs.stack_path), np.nan)
    if not len(out):
        return out
    codes, uniques = pd.factorize(locs.stack_path)
    for k, u in enumerate(uniques):
        rows = codes == k
        if wanted is not None:
            rows = rows & wanted
        if not rows.any() or not locs.exists[rows][0]:
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
