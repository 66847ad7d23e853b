"""Images given to a stream through the Python API (``Stream.add_particles(images, table)``) are
written to stacks of its own, ``out_dir/stream_stacks/api_NNNNNN.mrcs``, so the stream can revisit
them and resume. Their ledger key is the table's rlnImageName when it has one (adding the same
named particles again is a no-op), else the stored stack + index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cryoclass.io import write_stack
from cryoclass.io.canonical import canonicalize
from cryoclass.stream.pool import KEY
from cryoclass.stream.resume import Bookkeeping

#: Folder in out_dir of the stacks written.
API_STACKS = "stream_stacks"


def store_images(
    out: Path,
    book: Bookkeeping,
    images: np.ndarray,
    table: pd.DataFrame,
    pixel_size_A: float | None,
    known: Callable[[np.ndarray], np.ndarray],
) -> pd.DataFrame:
    """Write the images (n, D, D) not ``known`` to the ledger to the next stack (counted in
    ``book.api_chunks``); canonical rows pointing at it. ``table``: n rows of RELION columns
    (CTF in Å/deg, rlnVoltage kV, rlnSphericalAberration mm, rlnAmplitudeContrast,
    rlnImagePixelSize Å or ``pixel_size_A``)."""
    if images.ndim != 3 or images.shape[0] != len(table):
        raise ValueError(
            f"images must be (n, D, D) with n = {len(table)} table rows, got {images.shape}"
        )
    raw = table.reset_index(drop=True).copy()
    name = f"{API_STACKS}/api_{book.api_chunks + 1:06d}.mrcs"
    if "rlnImageName" in raw.columns:
        keys = ("api:" + raw["rlnImageName"].astype(str)).to_numpy(dtype=object)
        raw["rlnImageOriginalName"] = raw["rlnImageName"].astype(str)
    else:
        keys = np.array([f"api:{name}@{i}" for i in range(len(raw))], dtype=object)
    fresh = ~known(keys)
    raw, images, keys = raw.loc[fresh].reset_index(drop=True), images[fresh], keys[fresh]
    if not len(raw):
        return raw
    if pixel_size_A is not None:
        raw["rlnImagePixelSize"] = float(pixel_size_A)
    apix = float(raw["rlnImagePixelSize"].iloc[0]) if "rlnImagePixelSize" in raw else None
    if apix is None:
        raise ValueError("pixel size unknown: give pixel_size_A or rlnImagePixelSize")
    (out / API_STACKS).mkdir(exist_ok=True)
    write_stack(out / name, images.astype(np.float32), apix)
    book.api_chunks += 1
    raw["rlnImageName"] = [f"{i + 1:06d}@{name}" for i in range(len(raw))]
    raw["rlnImageSize"] = images.shape[-1]
    t = canonicalize(out / name, raw, bases=[out], relion30=False, check_images=True)
    t[KEY] = keys
    return t
