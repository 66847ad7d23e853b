"""Prepared images are read once and kept in memory within a budget; a source that does not
declare immutable images is never cached."""

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine import prepared_cache
from cryoclass.engine.em import Engine
from cryoclass.engine.source import load_batch
from cryoclass.physics.fourier import make_band

from .conftest import APIX, BOX, make_set


class CountingSource:
    images_immutable = True

    def __init__(self, src) -> None:
        self.src, self.table, self.box, self.pixel_size_A = src, src.table, BOX, APIX
        self.read = 0

    def __len__(self) -> int:
        return len(self.src)

    def images(self, idx):
        self.read += len(idx)
        return self.src.images(idx)

    def ctf_params(self, idx):
        return self.src.ctf_params(idx)


def _engine(min_res=None) -> Engine:
    return Engine(Config(n_classes=3, max_res_A=9.0, min_res_A=min_res), BOX, APIX)


def test_cached_batches_equal_fresh_ones_and_are_read_once():
    src, _ = make_set(50, noise_sd=0.5, seed=2)
    for min_res in (None, 40.0):
        counting, eng = CountingSource(src), _engine(min_res)
        first = load_batch(eng, counting, np.arange(0, 30))
        again = load_batch(eng, counting, np.array([5, 40, 12, 41]))
        assert counting.read == 32  # only rows 40 and 41 were new
        fresh = load_batch(_engine(min_res), src, np.array([5, 40, 12, 41]))
        torch.testing.assert_close(again.images, fresh.images)
        torch.testing.assert_close(again.images[0], first.images[5])
        if min_res:
            torch.testing.assert_close(again.align_images, fresh.align_images)
        for k in fresh.ctf_params:
            torch.testing.assert_close(again.ctf_params[k], fresh.ctf_params[k])


def test_no_cache_over_budget_or_for_mutable_sources(monkeypatch):
    src, _ = make_set(40, noise_sd=0.5, seed=2)
    eng = _engine()
    load_batch(eng, src, np.arange(10))  # the test source does not declare immutability
    assert getattr(eng, "prepared_cache", None) is None
    monkeypatch.setattr(prepared_cache, "DEFAULT_BUDGET_BYTES", 10 * BOX * BOX * 4)
    counting = CountingSource(src)
    load_batch(eng, counting, np.arange(10))
    load_batch(eng, counting, np.arange(10))
    assert counting.read == 20  # 40 particles do not fit in 10 images' worth
    assert not eng.prepared_cache.enabled


def test_fourier_data_are_cached_per_key_and_equal_fresh_values():
    src, _ = make_set(50, noise_sd=0.5, seed=2)
    counting, eng = CountingSource(src), _engine()
    band = make_band(BOX, 8.0, r_lo=0.5)
    calls = []
    cache = None
    for rows in (np.arange(0, 30), np.array([5, 40, 12, 41]), np.array([41, 5])):
        batch = load_batch(eng, counting, rows)
        cache = batch.fourier
        fresh = load_batch(_engine(), src, rows)
        assert fresh.fourier is None  # a source without immutable images
        original = cache.get
        cache.get = lambda name, key, r, compute: original(
            name,
            key,
            r,
            lambda pos: calls.append((name, None if pos is None else len(pos))) or compute(pos),
        )
        torch.testing.assert_close(batch.band(band), fresh.band(band))
        torch.testing.assert_close(batch.band_ctf(band), fresh.band_ctf(band))
        torch.testing.assert_close(
            batch.padded(band.kx.abs().max()).data, fresh.padded(band.kx.abs().max()).data
        )
        cache.get = original
    # the first batch computes everything, the second only its 2 new rows, the third nothing
    assert calls == [
        ("band", None),
        ("band_ctf", None),
        ("padded", None),
        ("band", 2),
        ("band_ctf", 2),
        ("padded", 2),
    ]
    # a different band (working resolution) replaces the entry
    wider = make_band(BOX, 12.0, r_lo=0.5)
    batch = load_batch(eng, counting, np.array([5, 12]))
    torch.testing.assert_close(
        batch.band(wider), load_batch(_engine(), src, np.array([5, 12])).band(wider)
    )
    assert cache.entries["band"].key == (wider.box, wider.size)


def test_fourier_cache_keeps_nothing_over_its_budget():
    cache = prepared_cache.FourierCache(n_rows=100, budget_bytes=100 * 4 * 4 * 3 // 2)
    rows = torch.arange(10)
    n_calls = []

    def compute(pos):
        n_calls.append(pos)
        return torch.ones(10 if pos is None else len(pos), 4)

    cache.get("a", 1, rows, compute)
    cache.get("a", 1, rows, compute)
    assert len(n_calls) == 1  # 100 x 4 float32 fit
    cache.get("b", 1, rows, compute)
    cache.get("b", 1, rows, compute)
    assert len(n_calls) == 3 and "b" not in cache.entries  # a second entry would not
