"""ParticleResult: concatenation, subsets, overwriting rows."""

from __future__ import annotations

import numpy as np

from cryoclass.engine.particle_result import ParticleResult


def _result(index, k=3) -> ParticleResult:
    n = len(index)
    r = ParticleResult.unprocessed(n, k)
    r.index = np.asarray(index)
    r.cls = np.arange(n) % k
    r.posterior = np.eye(k, dtype=np.float32)[r.cls]
    return r


def test_concat_take_put():
    a, b = _result([4, 5]), _result([7])
    both = ParticleResult.concat([a, b])
    assert len(both) == 3 and list(both.index) == [4, 5, 7] and both.posterior.shape == (3, 3)
    sub = both.take(np.array([2, 0]))
    assert list(sub.index) == [7, 4] and list(sub.cls) == [0, 0]
    assert list(both.take(both.cls > 0).index) == [5]
    store = ParticleResult.unprocessed(4, 3, first_row=10)
    assert list(store.index) == [10, 11, 12, 13] and (store.cls == -1).all()
    store.put(np.array([1, 3]), a, index=False)
    assert list(store.index) == [10, 11, 12, 13] and list(store.cls) == [-1, 0, -1, 1]
    assert set(store.to_dict()) == set(ParticleResult.names())
    assert store.nbytes() > 0
