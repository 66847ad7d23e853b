"""Score a classification against simulated ground truth (truth.csv + views.mrcs of a data set
written by ``cryoclass.simulate``): ARI, views recovered, in-plane angle consistency."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from cryoclass.quality.metrics import adjusted_rand_index, psi_consistency, views_recovered


@dataclass
class TruthScore:
    """ari: adjusted Rand index of classes vs true views; views_recovered: true views matched by
    some class average (NCC >= threshold after the band-pass); n_views; psi_R: in-plane angle
    consistency within classes (1 = perfect); n_matched: particles scored."""

    ari: float
    views_recovered: int
    n_views: int
    psi_R: float
    n_matched: int

    def as_dict(self) -> dict:
        return asdict(self)


def _key(name: str) -> str:
    idx, _, path = str(name).partition("@")
    return f"{int(idx)}@{Path(path).name}"


def score_against_truth(
    truth_dir: str | Path,
    particles: pd.DataFrame,
    class_averages: np.ndarray,
    pixel_size_A: float,
    lowpass_A: float = 10.0,
    highpass_A: float = 40.0,
    ncc_threshold: float = 0.8,
) -> TruthScore:
    """Score particles (rlnImageName, rlnClassNumber, rlnAnglePsi) and class averages (K, D, D)."""
    truth_dir = Path(truth_dir)
    truth = pd.read_csv(truth_dir / "truth.csv")
    views = mrcfile.read(truth_dir / "views.mrcs")
    t = truth.assign(_k=truth["image_name"].map(_key)).set_index("_k")
    p = particles.assign(_k=particles["rlnImageName"].map(_key))
    p = p[p["_k"].isin(t.index)]
    tt = t.loc[p["_k"]]
    cls = p["rlnClassNumber"].to_numpy(int)
    ari = adjusted_rand_index(tt["view"].to_numpy(), cls)
    counts = np.bincount(cls - 1, minlength=class_averages.shape[0])
    n_rec, _ = views_recovered(
        class_averages,
        counts,
        views,
        pixel_size_A,
        ncc_threshold=ncc_threshold,
        lowpass_A=lowpass_A,
        highpass_A=highpass_A,
    )
    psi_r = psi_consistency(tt["psi_deg"].to_numpy(), p["rlnAnglePsi"].to_numpy(), cls)
    return TruthScore(
        ari=float(ari),
        views_recovered=int(n_rec),
        n_views=int(views.shape[0]),
        psi_R=float(psi_r),
        n_matched=int(len(p)),
    )
