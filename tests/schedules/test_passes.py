"""Full passes report how many particles changed class since the previous full pass (RELION's
rlnChangesOptimalClasses), in the batch log, a stream's history and model.star alike."""

from __future__ import annotations

import numpy as np
import pytest
import starfile

from cryoclass.schedules.batch import run_batch
from cryoclass.schedules.passes import class_changes
from cryoclass.stream import Stream

from .conftest import N, small_config

N_FULL = 4


def config(**overrides):
    """The schedule tests' small job with N_FULL full passes."""
    return small_config(n_full_iters=N_FULL, **overrides)


def test_class_changes_counts_the_particles_that_moved():
    assert class_changes(None, np.array([0, 1])) is None
    assert class_changes(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])) == pytest.approx(0.25)
    assert class_changes(np.array([1, 1]), np.array([1, 1])) == 0.0
    # a stream's later pass has more rows: only the rows of both passes count
    assert class_changes(np.array([0, 1]), np.array([0, 0, 3, 3])) == pytest.approx(0.5)


def test_batch_log_gives_each_full_pass_its_class_changes(particles):
    passes: list[np.ndarray] = []

    def checkpoint(state, point):
        if point.log[-1].phase == "full":
            passes.append(np.asarray(point.final.cls).copy())

    res = run_batch(particles, config(), checkpoint=checkpoint)
    full = [e for e in res.log if e.phase == "full"]
    assert len(full) == len(passes) == N_FULL
    assert all(e.changed is None for e in res.log if e.phase == "online")
    assert full[0].changed is None  # no pass before the first
    measured = [float(np.mean(a != b)) for a, b in zip(passes, passes[1:])]
    assert [e.changed for e in full[1:]] == pytest.approx(measured)
    assert any(m > 0 for m in measured)  # some particles still move between passes


def test_stream_history_and_model_star_give_the_class_changes(particles, tmp_path):
    out = tmp_path / "stream"
    with Stream(config(), out, outputs_every_s=1e9) as s:
        for a in range(0, N, 60):
            s.add_particles(particles.subset(np.arange(a, min(N, a + 60))))
        s.finish()
        history = list(s.history)
    final = [h for h in history if h["phase"] == "final"]
    assert len(final) == N_FULL
    assert final[0]["changed"] is None
    assert all(0.0 <= h["changed"] <= 1.0 for h in final[1:])
    model = starfile.read(out / "model.star")
    assert model["model_general"]["rlnChangesOptimalClasses"] == pytest.approx(
        final[-1]["changed"], abs=1e-6
    )
