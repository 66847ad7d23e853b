"""min_res_A on a micelle-dominated set, in batch and streaming (issue: small membrane proteins).

Without min_res_A the strong belts (drawn independently of the views) dominate the alignment and
views are merged; with min_res_A = 40 Å the belts are left out of the scores and the three views
come apart. Both modes run the same config and must show the same gain."""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass.config import Config
from cryoclass.io.columns import ctf_parameters
from cryoclass.quality.metrics import adjusted_rand_index
from cryoclass.schedules.batch import run_batch
from cryoclass.stream import Stream

from .micelle_data import APIX, BOX, micelle_set

N = 600


class _Arrays:
    def __init__(self, images: np.ndarray, table) -> None:
        self._images, self.table, self.box, self.pixel_size_A = images, table, BOX, APIX

    def __len__(self) -> int:
        return len(self.table)

    def images(self, idx: np.ndarray) -> np.ndarray:
        return self._images[np.asarray(idx)]

    def ctf_params(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return ctf_parameters(self.table.iloc[np.asarray(idx)])


def _config(min_res: float | None) -> Config:
    return Config(
        n_classes=3,
        max_res_A=9.0,
        min_res_A=min_res,
        batch_size_per_class=60,
        n_online_em_iters=8,
        sigma_anneal_iters=5,
        n_full_iters=1,
        mask_diameter_A=BOX * APIX * 0.9,
        seed=0,
        device="cpu",
    )


def views_recovered(view: np.ndarray, cls: np.ndarray, purity: float = 0.7) -> int:
    """Views that are the dominant view (at least `purity` of the members) of some class."""
    found = set()
    for c in np.unique(cls):
        counts = np.bincount(view[cls == c], minlength=3)
        if counts.max() >= purity * counts.sum():
            found.add(int(counts.argmax()))
    return len(found)


def _classify(mode: str, images: np.ndarray, table, config: Config, tmp_path) -> np.ndarray:
    """Final class of each particle, in input order."""
    if mode == "batch":
        res = run_batch(_Arrays(images, table), config)
        out = np.empty(len(table), dtype=int)
        out[res.particles.index] = res.particles.cls
        return out
    table = table.assign(truth_row=np.arange(len(table)))
    with Stream(config, tmp_path / f"stream_{config.min_res_A}", outputs_every_s=1e9) as s:
        for a in range(0, N, 100):
            s.add_particles(
                images[a : a + 100],
                table.iloc[a : a + 100].reset_index(drop=True),
                pixel_size_A=APIX,
            )
        result = s.finish()
    rows = result.table["truth_row"].to_numpy()[result.particles.index]
    out = np.full(len(table), -1)
    out[rows] = result.particles.cls
    assert (out >= 0).all()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_min_res_separates_views_that_the_belt_merges(mode, tmp_path):
    images, table, view, belt = micelle_set(N, belt_amplitude=4.0, noise_sd=0.15, seed=0)
    ari, found = {}, {}
    for min_res in (None, 40.0):
        cls = _classify(mode, images, table, _config(min_res), tmp_path)
        ari[min_res] = adjusted_rand_index(view, cls)
        found[min_res] = views_recovered(view, cls)
        assert abs(adjusted_rand_index(belt, cls)) < 0.1  # nothing tracks the belts' size
    print(mode, "ARI", ari, "views", found)
    assert ari[40.0] > 0.8
    assert ari[40.0] > ari[None] + 0.2
    assert found[40.0] >= found[None] and found[40.0] == 3
