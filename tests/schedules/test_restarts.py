"""n_restarts: the online-EM phase run from several random starts, the most likely kept.

A job with restarts ends exactly as its most likely restart would alone: the restart whose first
full pass has the highest mean log-likelihood, run as a job of its own (seed + 1000 x r), gives
the same classes and the same particles; a stream runs its extra restarts at its end and keeps
its own model or the more likely restart in the same way."""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass.schedules.batch import RESTART_SEED_STRIDE, batch_steps, run_batch
from cryoclass.stream import Stream

from .conftest import N
from .conftest import small_config as config

SEED = 2  # a job seed whose restarts are more likely than its own run (batch and stream)


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.particles.cls, b.particles.cls)
    np.testing.assert_allclose(a.particles.psi_deg, b.particles.psi_deg)
    np.testing.assert_allclose(a.particles.tx, b.particles.tx)
    np.testing.assert_allclose(a.state.class_images.numpy(), b.state.class_images.numpy())


def test_a_job_with_restarts_ends_as_its_most_likely_restart_alone(particles):
    res = run_batch(particles, config(n_restarts=3, seed=SEED))
    n_online = 4
    assert len(res.log) == batch_steps(config(n_restarts=3)) == n_online + 2 + 2
    first = res.log[n_online]
    restarts = res.log[n_online + 1 : n_online + 3]
    assert first.phase == "full" and [e.phase for e in restarts] == ["restart", "restart"]
    scores = [first.mean_loglik] + [e.mean_loglik for e in restarts]
    assert len(set(scores)) == 3  # three different starts, three different models
    best = int(np.argmax(scores))
    assert best != 0  # on this set and seed a restart is more likely than the job's own run
    alone = run_batch(particles, config(seed=SEED + RESTART_SEED_STRIDE * best))
    assert alone.log[n_online].mean_loglik == pytest.approx(scores[best])
    _same(res, alone)
    with pytest.raises(AssertionError):  # and it is not what the job alone gives
        _same(res, run_batch(particles, config(seed=SEED)))


def _by_row(result) -> np.ndarray:
    out = np.full(N, -1)
    out[np.asarray(result.particles.index)] = result.particles.cls
    return out


def test_a_stream_keeps_its_own_model_or_a_more_likely_restart(particles, tmp_path):
    def stream(cfg, out):
        with Stream(cfg, out, outputs_every_s=1e9) as s:
            for a in range(0, N, 40):
                s.add_particles(particles.subset(np.arange(a, min(N, a + 40))))
            return s.finish(), list(s.history)

    with_restarts, history = stream(config(n_restarts=3, seed=SEED), tmp_path / "r3")
    plain, plain_history = stream(config(seed=SEED), tmp_path / "r1")
    own = next(h for h in plain_history if h["phase"] == "final")["mean_loglik"]
    scores = [own] + [h["mean_loglik"] for h in history if h["phase"] == "restart"]
    assert len(scores) == 3
    best = int(np.argmax(scores))
    assert best != 0  # on this set and seed a restart is more likely than the stream's model
    alone = run_batch(particles, config(seed=SEED + RESTART_SEED_STRIDE * best))
    np.testing.assert_array_equal(_by_row(with_restarts), _by_row(alone))
    assert not np.array_equal(_by_row(with_restarts), _by_row(plain))
