"""The schedule layer's decisions: annealing factor, re-seeding, the passes that end a job."""

from __future__ import annotations

import pytest

from cryoclass.config import Config
from cryoclass.schedules.annealing import annealing_factor, reseed_due
from cryoclass.schedules.batch import batch_steps
from cryoclass.schedules.passes import FinalPass, final_passes


def test_annealing_factor_falls_linearly_over_the_window():
    cfg = Config(
        n_classes=2,
        batch_size_per_class=50,
        initial_uncertainty_factor=2.0,
        sigma_anneal_start=2,
        sigma_anneal_iters=4,
    )
    mb = cfg.minibatch_size
    assert annealing_factor(cfg, 0) == annealing_factor(cfg, 2 * mb) == 2.0
    assert annealing_factor(cfg, 4 * mb) == pytest.approx(1.0)
    assert annealing_factor(cfg, 6 * mb) == annealing_factor(cfg, 60 * mb) == 0.0
    assert reseed_due(cfg, 1.0) and not reseed_due(cfg, 0.0)
    assert not reseed_due(cfg.model_copy(update={"reseed_empty": False}), 1.0)


@pytest.mark.parametrize(
    "full, hard, expect",
    [
        (2, True, [FinalPass(False, True, merge=True), FinalPass(True, True)]),
        (3, False, [FinalPass(False, True, merge=True)] * 2 + [FinalPass(False, True)]),
        (1, False, [FinalPass(False, True)]),
        (0, True, [FinalPass(True, False)]),  # no full iteration: one assignment pass
    ],
)
def test_final_passes(full, hard, expect):
    cfg = Config(n_online_em_iters=5, n_full_iters=full, hard_classify_last_iter=hard)
    assert final_passes(cfg) == expect
    # duplicates are merged after every updating pass but the last, never when switched off
    off = cfg.model_copy(update={"merge_duplicates": False})
    assert not any(p.merge for p in final_passes(off))
    assert batch_steps(cfg) == 5 + len(expect)
    assert [p.phase for p in expect] == ["full" if full else "assign"] * len(expect)
