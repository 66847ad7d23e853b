"""Duplicate classes (``engine/class_merge.py``): two averages of one view, turned and moved
against each other, agree as one signal; averages of different views agree less; classes without
signal are not compared; the class with less weight is the one emptied.

The threshold itself (SAME_VIEW_RATIO) was set on the suite's real maps (README, "Duplicate
classes"); these blob shapes are more alike than real views, so here views are checked to rank
below duplicates rather than below the threshold."""

from __future__ import annotations

import numpy as np
import torch
from tests.engine.conftest import render

from cryoclass.engine.class_merge import (
    SAME_VIEW_RATIO,
    kept_and_emptied,
    populated_ratios,
    same_view_ratio,
)

#: (shape, psi deg, tx px, ty px): classes 0/1 and 3/4 show one view each, class 2 another
VIEWS = [(0, 0.0, 0.0, 0.0), (0, 73.0, 2.0, -1.5), (1, 0.0, 0.0, 0.0), (2, 30.0, 1.0, 1.0),
         (2, 200.0, -1.0, 2.0)]  # fmt: skip
DUPLICATES = {(0, 1), (3, 4)}


def _halves(specs, noise: float, seed: int = 0) -> torch.Tensor:
    """Half-set averages (2, K, D, D) of shapes ``specs``, each half with its own white noise
    of sd ``noise`` (the shapes peak at about 1)."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.cat(
        [render(np.array([k]), np.array([p]), np.array([a]), np.array([b]), 2.0)
         for k, p, a, b in specs]
    )  # fmt: skip
    return clean[None] + noise * torch.randn((2, *clean.shape), generator=gen)


def test_one_view_turned_and_moved_agrees_as_one_signal_and_other_views_less():
    for seed in range(3):
        ratios = same_view_ratio(_halves(VIEWS, 0.1, seed), 12.0, 4.0, list(range(5)))
        assert len(ratios) == 10
        duplicates = [ratios[p] for p in DUPLICATES]
        others = [v for p, v in ratios.items() if p not in DUPLICATES]
        assert min(duplicates) >= 0.95 > SAME_VIEW_RATIO
        assert max(others) < min(duplicates) - 0.1


def test_classes_without_signal_are_not_compared():
    assert same_view_ratio(_halves(VIEWS, 2.0), 12.0, 4.0, list(range(5))) == {}
    assert populated_ratios(_halves(VIEWS, 2.0), torch.full((5,), 50.0), 12.0, 4.0) == {}


def test_copies_turned_and_moved_agree_as_one_view_and_the_lighter_class_is_emptied():
    three = [(0, 0.0, 0.0, 0.0), (0, 40.0, 1.0, 0.0), (0, 160.0, 0.0, 1.0), (1, 0.0, 0.0, 0.0)]
    weights = torch.tensor([50.0, 80.0, 60.0, 70.0])
    ratios = populated_ratios(_halves(three, 0.1), weights, r_work=12.0, max_shift_px=4.0)
    copies = [ratios[p] for p in [(0, 1), (0, 2), (1, 2)]]
    assert min(copies) >= 0.95 > SAME_VIEW_RATIO
    assert max(ratios[(c, 3)] for c in range(3)) < min(copies) - 0.2  # another shape
    assert kept_and_emptied(0, 1, weights) == (1, 0)
    assert kept_and_emptied(1, 2, weights) == (1, 2)


def test_empty_classes_are_not_compared():
    halves = _halves(VIEWS[:2], 0.1)
    assert populated_ratios(halves, torch.tensor([40.0, 0.0]), 12.0, 4.0) == {}
    both = populated_ratios(halves, torch.tensor([40.0, 30.0]), 12.0, 4.0)
    assert list(both) == [(0, 1)] and both[(0, 1)] >= SAME_VIEW_RATIO  # two copies of one view
