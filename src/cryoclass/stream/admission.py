"""Which found rows a stream may ingest, and which ingested stacks it can no longer read: each
problem as the reason rejects.csv gives (the stream sets those particles aside)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryoclass.io import InputError, ParticleSet, Reject
from cryoclass.io.columns import SOURCE_ROW, STACK_INDEX, STACK_PATH
from cryoclass.io.stacks import stack_info
from cryoclass.io.validate import unusable_images
from cryoclass.stream.pool import SOURCE_FILE

#: The reason of a row naming the image of an earlier row.
LISTED_TWICE = "listed twice: the same image as an earlier row"


def row_reject(t: pd.DataFrame, i: int, source: str, reason: str) -> Reject:
    """Row ``i`` of ``t`` set aside for ``reason``, naming its STAR file (else ``source``) and
    row."""
    row = int(t[SOURCE_ROW].iloc[i]) if SOURCE_ROW in t.columns else int(i)
    src = str(t[SOURCE_FILE].iloc[i]) if SOURCE_FILE in t.columns else source
    return Reject(source=src, row=row, image_name=str(t["rlnImageName"].iloc[i]), reason=reason)


def row_problems(t: pd.DataFrame, box: int, pixel_size_A: float) -> list[str]:
    """Per row of ``t`` why it cannot be ingested ('' if it can): another box or pixel size than
    the stream's, an unreadable image, or one with NaN/Inf pixels or constant."""
    reasons = [""] * len(t)
    sizes = t["rlnImageSize"].to_numpy(np.int64)
    pix = t["rlnImagePixelSize"].to_numpy(np.float64)
    for i in np.flatnonzero((sizes > 0) & (sizes != box)):
        reasons[i] = f"box {sizes[i]} px differs from the stream's {box} px"
    for i in np.flatnonzero(~np.isclose(pix, pixel_size_A, rtol=1e-5, atol=0)):
        reasons[i] = f"pixel size {pix[i]:g} Å differs from the stream's {pixel_size_A:g} Å"
    cand = np.flatnonzero([not r for r in reasons])
    if not cand.size:
        return reasons
    try:
        imgs = ParticleSet(table=t).images(cand)
    except Exception as err:  # unreadable: reject them all, say why
        for i in cand:
            reasons[i] = f"cannot read image: {err}"
        return reasons
    if imgs.shape[-1] != box:
        for i in cand:
            reasons[i] = f"box {imgs.shape[-1]} px differs from the stream's {box} px"
        return reasons
    for j, what in unusable_images(imgs, with_value=False):
        reasons[cand[j]] = f"image {what}"
    return reasons


def unreadable_stacks(table: pd.DataFrame, box: int) -> dict[str, str]:
    """Stack path -> why the ingested particles of ``table`` can no longer be read from it
    (deleted, moved, truncated or damaged since ingestion)."""
    bad: dict[str, str] = {}
    for path, idx in table.groupby(STACK_PATH, sort=False)[STACK_INDEX].max().items():
        try:
            info = stack_info(path)
        except InputError as err:
            bad[path] = err.problem
            continue
        if int(idx) >= info.n:
            bad[path] = f"stack now holds {info.n} images, fewer than when ingested"
        elif info.box != box:
            bad[path] = f"stack now holds {info.box} px images, the stream's are {box} px"
    return bad
