"""Agreement of two 2D classifications of the same particles (e.g. cryoclass against RELION's
Class2D ``run_itNNN_data.star``): particles matched by image, adjusted Rand index, and the
particles-per-class-pair table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryoclass.io.locate import parse_image_names
from cryoclass.quality.metrics import adjusted_rand_index


@dataclass
class Agreement:
    """n_a, n_b: particles in each table; n_common: particles in both (matched by image);
    ari: adjusted Rand index of their classes over the common particles (1 = same partition);
    counts: (classes of a) x (classes of b) table of common particles (1-based class numbers);
    best_match: each class of a -> the class of b holding most of its particles."""

    n_a: int
    n_b: int
    n_common: int
    ari: float
    counts: pd.DataFrame
    best_match: dict[int, int]


def image_keys(table: pd.DataFrame) -> pd.Series:
    """``stack path|0-based index`` of each row (so ``1@a.mrcs`` and ``000001@a.mrcs`` match)."""
    paths, idx = parse_image_names("table", table["rlnImageName"])
    return pd.Series([f"{p}|{i}" for p, i in zip(paths, idx)], index=table.index)


def class_agreement(a: pd.DataFrame, b: pd.DataFrame) -> Agreement:
    """Compare tables ``a`` and ``b`` (rlnImageName, rlnClassNumber), e.g. the ``particles``
    blocks of two particles.star files. A particle listed twice in one table counts once."""
    ka = pd.Series(a["rlnClassNumber"].to_numpy(np.int64), index=image_keys(a).to_numpy())
    kb = pd.Series(b["rlnClassNumber"].to_numpy(np.int64), index=image_keys(b).to_numpy())
    ka = ka[~ka.index.duplicated()]
    kb = kb[~kb.index.duplicated()]
    common = ka.index.intersection(kb.index)
    ca, cb = ka.loc[common].to_numpy(), kb.loc[common].to_numpy()
    counts = pd.crosstab(pd.Series(ca, name="class_a"), pd.Series(cb, name="class_b"))
    best = {int(r): int(counts.loc[r].idxmax()) for r in counts.index} if len(common) else {}
    ari = adjusted_rand_index(ca, cb) if len(common) else float("nan")
    return Agreement(
        n_a=len(ka), n_b=len(kb), n_common=len(common), ari=ari, counts=counts, best_match=best
    )
