"""Split reproducibility (``engine/class_split.py``): a split between two different shapes is
found again by a 2-class run from a symmetric start; a random split of particles of one shape
(two copies of one view, divided by nothing but chance) is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.engine.conftest import APIX, BOX, make_set, render

from cryoclass.config import Config
from cryoclass.engine import class_split
from cryoclass.engine import em as em_module
from cryoclass.engine.class_merge import SAME_VIEW_RATIO
from cryoclass.engine.class_split import (
    AGREED,
    DIVIDE_TESTS,
    FOUND,
    FOUND_THEN_LOST,
    MAX_SPLIT_ITERATIONS,
    REPRODUCED,
    SETTLED,
    SPLIT_ITERATIONS,
    SPLIT_STARTS,
    STILL_RISING,
    SplitRuns,
    agreement,
    best_agreement,
    division_candidates,
    same_members,
    start_images,
    still_settling,
    two_class_state,
)
from cryoclass.engine.em import Engine
from cryoclass.engine.source import load_batch


def test_agreement_is_one_for_the_same_split_either_way_round_and_near_half_for_chance():
    old = np.array([0, 0, 1, 1, 0, 1])
    assert agreement(old, old) == 1.0
    assert agreement(old, 1 - old) == 1.0
    rng = np.random.default_rng(0)
    assert 0.5 <= agreement(rng.integers(0, 2, 4000), rng.integers(0, 2, 4000)) < 0.53


def test_the_two_starts_differ_only_by_their_own_noise_and_repeat_with_the_seed():
    eng = Engine(Config(n_classes=2), BOX, APIX)
    image = render(np.array([0]), np.zeros(1), np.zeros(1), np.zeros(1))[0] * eng.mask
    a = start_images(image, eng.grid, eng.mask, 6.0, seed=3)
    assert a.shape == (2, BOX, BOX)
    assert torch.equal(a, start_images(image, eng.grid, eng.mask, 6.0, seed=3))
    assert not torch.equal(a, start_images(image, eng.grid, eng.mask, 6.0, seed=4))
    diff = a[0] - a[1]
    assert diff.std() > 0.1 * a.std()  # each class has its own perturbation
    assert abs(float(torch.corrcoef(torch.stack([a[0].flatten(), a[1].flatten()]))[0, 1])) > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_split_between_two_shapes_is_found_again_and_a_random_split_of_one_shape_is_not(seed):
    source, truth = make_set(300, noise_sd=0.5, seed=seed)
    eng = Engine(Config(n_classes=3, max_res_A=8.0, seed=seed), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(300)))  # noise spectrum of the particles
    clean = render(np.arange(3), np.zeros(3), np.zeros(3), np.zeros(3))
    eng.state.class_images = clean * eng.mask
    eng.state.r_work = 12.0

    two_shapes = np.nonzero(truth["cls"] < 2)[0]
    found = eng.split_agreement(load_batch(eng, source, two_shapes), truth["cls"][two_shapes], 0, 1)
    assert found >= REPRODUCED

    one_shape = np.nonzero(truth["cls"] == 0)[0]
    chance = np.random.default_rng(seed).integers(0, 2, one_shape.size)
    copies = eng.split_agreement(load_batch(eng, source, one_shape), chance, 0, 1)
    assert copies < REPRODUCED


def test_a_start_goes_on_past_its_iterations_only_while_its_split_still_rises():
    for done in range(SPLIT_ITERATIONS):  # the first iterations run whatever the agreement
        assert still_settling(done, 0.5, 0.5) and still_settling(done, 0.99, 0.5)
    rising = 0.65
    assert still_settling(SPLIT_ITERATIONS, rising, rising - STILL_RISING - 0.01)
    assert not still_settling(SPLIT_ITERATIONS, rising, rising - STILL_RISING + 0.01)  # level
    assert not still_settling(SPLIT_ITERATIONS, 0.55, 0.6)  # falling
    assert not still_settling(SPLIT_ITERATIONS, SETTLED, SETTLED - 0.2)  # found: settled
    assert not still_settling(MAX_SPLIT_ITERATIONS, rising, 0.5)  # the cap


@pytest.mark.parametrize(
    "trajectory, iterations",
    [
        ([0.5, 0.52, 0.55, 0.6, 0.64, 0.66, 0.67], SPLIT_ITERATIONS),  # levelled off at five
        ([0.5, 0.52, 0.55, 0.6, 0.64, 0.7, 0.76, 0.8, 0.81], SPLIT_ITERATIONS + 3),
        ([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.9], SPLIT_ITERATIONS + 1),  # settled
        ([0.4 + 0.04 * i for i in range(13)], MAX_SPLIT_ITERATIONS),  # the cap
    ],
)
def test_a_split_run_iterates_as_its_agreement_says(monkeypatch, trajectory, iterations):
    source, truth = make_set(60, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=2, max_res_A=8.0), BOX, APIX)
    batch = load_batch(eng, source, np.arange(60))
    eng.initialise(batch)
    monkeypatch.setattr(class_split, "SPLIT_STARTS", 1)
    scripted = list(trajectory)  # agreement of the labels after 0, 1, 2, ... EM iterations
    monkeypatch.setattr(em_module, "agreement", lambda old, new: scripted.pop(0))
    absorbed = []
    real_absorb = Engine.absorb

    def counting_absorb(self, *args, **kwargs):
        absorbed.append(1)
        return real_absorb(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "absorb", counting_absorb)
    eng.split_agreement(batch, (truth["cls"] == 1).astype(int), 0, 1)
    assert len(absorbed) == iterations
    assert len(trajectory) - len(scripted) == iterations + 1  # the labels after the last one


def test_a_two_class_run_keeps_its_pair_resolution_and_gathers_no_evidence():
    source, _ = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=2, max_res_A=8.0), BOX, APIX)
    batch = load_batch(eng, source, np.arange(120))
    main = eng.initialise(batch)
    imgs = start_images(main.class_images[0], eng.grid, eng.mask, 6.0, seed=0)
    eng.state = two_class_state(main, imgs, eng.grid.size, eng.n_shells, 17.0)
    for _ in range(2):
        _, stats, _ = eng.expectation(batch, 0.0)
        assert float(stats.evidence_n.sum()) == 0.0
        eng.absorb(stats, batch.n, batch.n, replace=True)
        assert torch.equal(eng.state.resolution_A, torch.full((2,), 17.0))
        assert torch.equal(eng.state.working_resolution_A, torch.full((2,), 17.0))
    # a measured model of the same particles reports what its evidence supports instead
    eng.state.fixed_resolution_A = None
    _, stats, _ = eng.expectation(batch, 0.0)
    assert float(stats.evidence_n.sum()) == 2 * batch.n  # each particle and its control
    eng.absorb(stats, batch.n, batch.n, replace=True)
    assert not torch.equal(eng.state.resolution_A, torch.full((2,), 17.0))


def test_the_split_runs_hold_the_finer_of_the_pairs_two_resolutions(monkeypatch):
    source, truth = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=3, max_res_A=8.0), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(120)))
    eng.state.resolution_A = torch.tensor([30.0, 14.0, 20.0])
    eng.state.reference_resolution_A = torch.tensor([30.0, 14.0, 20.0])
    held = []
    real = em_module.two_class_state

    def spy(main, imgs, n_points, n_shells, resolution_A):
        held.append(resolution_A)
        return real(main, imgs, n_points, n_shells, resolution_A)

    monkeypatch.setattr(em_module, "two_class_state", spy)
    rows = np.nonzero(truth["cls"] != 2)[0]
    eng.split_agreement(load_batch(eng, source, rows), (truth["cls"][rows] == 1).astype(int), 0, 1)
    assert held and all(r == 14.0 for r in held)


def test_same_members_is_the_jaccard_index_of_two_sets_of_rows():
    assert same_members(np.arange(10), np.arange(10)) == 1.0
    assert same_members(np.arange(10), np.arange(5, 15)) == pytest.approx(5 / 15)
    assert same_members(np.arange(3), np.arange(3, 6)) == 0.0


def test_a_settled_pair_is_tested_again_only_once_it_has_lost_many_of_its_particles():
    source, _ = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=3), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(120)))
    cls = np.repeat([0, 1, 2], 40)
    calls = []

    def split_runs(batch, old, a, b):
        calls.append(a)
        return SplitRuns(SETTLED), []

    eng.split_runs = split_runs  # the 2-class runs are tested above
    ratios = {(0, 1): 0.6}
    assert eng._unreproduced_pairs(ratios, lambda rows: rows, cls) == []
    assert len(calls) == 1 and set(eng.state.settled_splits) == {(0, 1)}
    eng._unreproduced_pairs(ratios, lambda rows: rows, cls)
    assert len(calls) == 1  # settled, same particles: not tested again
    moved = cls.copy()
    moved[:20] = 2  # class 0 loses half its particles: a quarter of the pair's
    eng._unreproduced_pairs(ratios, lambda rows: rows, moved)
    assert len(calls) == 2


def test_a_pair_whose_split_once_came_back_is_merged_later_only_on_a_clear_failure():
    source, _ = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=4), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(120)))
    cls = np.repeat([0, 1, 2, 3], 30)
    # a failure for a pair never found, not for one found
    below = (FOUND_THEN_LOST + REPRODUCED) / 2
    scripted = {(0, 1): [FOUND + 0.02, below, FOUND_THEN_LOST - 0.05], (2, 3): [below]}
    eng.split_runs = lambda batch, old, a, b: (SplitRuns(scripted[(a, b)].pop(0)), [])
    ratios = {(0, 1): 0.6, (2, 3): 0.6}
    merged = eng._unreproduced_pairs(ratios, lambda rows: rows, cls)
    assert [tuple(sorted(pair[:2])) for pair in merged] == [(2, 3)]  # never found: merged
    assert eng.state.split_found[(0, 1)] == FOUND + 0.02
    assert eng._unreproduced_pairs({(0, 1): 0.6}, lambda rows: rows, cls) == []
    merged = eng._unreproduced_pairs({(0, 1): 0.6}, lambda rows: rows, cls)
    assert [tuple(sorted(pair[:2])) for pair in merged] == [(0, 1)]  # a clear failure: merged


def _labels(pattern: str) -> np.ndarray:
    return np.array([int(c) for c in pattern])


def test_the_runs_stop_at_the_old_split_or_at_a_split_two_of_them_find():
    old = _labels("0000011111")
    other = _labels("0101010101")  # agrees with old on 6 particles of 10

    def scripted(*outs):
        calls = []

        def run(_start):
            calls.append(1)
            return outs[len(calls) - 1]

        return run, calls

    run, calls = scripted(old)  # the old split comes back: one run
    assert best_agreement(old, lambda i: None, run) == SplitRuns(1.0)
    assert len(calls) == 1
    run, calls = scripted(other, 1 - other)  # another split, found again (labels swapped)
    assert best_agreement(old, lambda i: None, run) == SplitRuns(0.6, 0, 1.0)
    assert len(calls) == 2
    shuffled = [_labels("0011001100"), _labels("0110011001"), _labels("1000110110")]
    assert max(agreement(a, b) for a in shuffled for b in shuffled if a is not b) < AGREED
    run, calls = scripted(*shuffled)  # every run a split of its own
    assert best_agreement(old, lambda i: None, run).agreed is None
    assert len(calls) == SPLIT_STARTS
    run, calls = scripted(shuffled[0], other, other)  # a class tested alone: no old split
    assert best_agreement(None, lambda i: None, run) == SplitRuns(0.0, 1, 1.0)


def test_division_candidates_are_the_largest_untested_classes_while_one_is_empty():
    weights = np.array([300.0, 120.0, 0.0, 200.0, 80.0, 100.0])  # mean 133
    members = {c: np.arange(int(w)) + 1000 * c for c, w in enumerate(weights)}
    assert division_candidates(weights, members, {}) == [0, 3][:DIVIDE_TESTS]
    assert division_candidates(weights, members, {0: members[0]}) == [3]  # 0 found undivided
    changed = {0: np.arange(150)}  # 0 has taken in many particles since
    assert division_candidates(weights, members, changed)[0] == 0
    full = weights.copy()
    full[2] = 100.0  # no class empty: nothing to fill
    assert division_candidates(full, members, {}) == []
    few = {**members, 0: np.arange(4 * class_split.MIN_SPLIT_MEMBERS - 1)}
    assert 0 not in division_candidates(weights, few, {})


def _mixed_model(seed: int):
    """A model of three shapes whose class 0 holds shapes 0 and 1 (the statistics of both,
    each aligned to its own shape), class 1 is empty and class 2 holds shape 2; and each
    particle's class."""
    source, truth = make_set(300, noise_sd=0.5, seed=seed)
    eng = Engine(Config(n_classes=3, max_res_A=8.0, seed=seed), BOX, APIX)
    batch = load_batch(eng, source, np.arange(300))
    eng.initialise(batch)
    clean = render(np.arange(3), np.zeros(3), np.zeros(3), np.zeros(3))
    eng.state.class_images = clean * eng.mask
    eng.state.r_work = 12.0
    res, stats, _ = eng.expectation(batch, 0.0, hard=True)
    for mixed, moved in zip(stats._of_class(0), stats._of_class(1), strict=True):
        mixed.add_(moved)
    stats.clear_class_(1)
    eng.absorb(stats, batch.n, batch.n, replace=True)
    return eng, source, truth, np.where(res.cls == 1, 0, res.cls)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_class_holding_two_shapes_is_divided_into_the_empty_class_and_a_pure_one_is_not(seed):
    eng, source, truth, cls = _mixed_model(seed)
    # class 0 holds shapes 0 and 1 (with class_score marginal one particle of shape 2 may join
    # them from the E-step that built the fixture)
    in_0 = truth["cls"][cls == 0]
    assert set(cls.tolist()) == {0, 2} and {0, 1} <= set(in_0.tolist())
    assert np.mean(in_0 != 2) > 0.98
    weight = float(eng.state.class_weights.sum())
    load = lambda rows: load_batch(eng, source, rows)  # noqa: E731
    assert eng.divide_classes(load, cls, exclude={0}) == []  # only the pure class tested
    assert list(eng.state.undivided) == [2]
    divided = eng.divide_classes(load, cls)
    assert divided == [(0, 1)]
    assert float(eng.state.class_weights.sum()) == pytest.approx(weight, rel=1e-4)
    assert eng.state.split_found[(0, 1)] >= AGREED
    labels = eng.labels(load_batch(eng, source, np.arange(300)))
    # each shape is now mostly in a class of its own
    major = [np.bincount(labels[truth["cls"] == shape]).argmax() for shape in (0, 1)]
    assert major[0] != major[1]
    for shape in (0, 1):
        assert np.mean(labels[truth["cls"] == shape] == major[shape]) > 0.8
    # nothing empty any more: no further test
    assert eng.divide_classes(load, labels) == []


def test_a_pair_whose_runs_agree_on_another_split_takes_it_instead_of_being_merged():
    source, _ = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=3), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(120)))
    cls = np.repeat([0, 1, 2], 40)
    before = eng.state.class_weights.clone()
    run = eng.state.stats.__class__.zeros(2, eng.grid.size, eng.n_shells, eng.device)
    run.weight[:] = torch.tensor([[15.0, 25.0], [15.0, 25.0]])  # 30 and 50 particles
    eng.split_runs = lambda batch, old, a, b: (SplitRuns(0.55, 0, 0.9), [run])
    redrawn = []
    assert eng._unreproduced_pairs({(0, 1): 0.6}, lambda rows: rows, cls, redrawn) == []
    assert redrawn == [(0, 1)]
    assert eng.state.split_found[(0, 1)] == 0.9  # found: merged later only on a clear failure
    w = eng.state.class_weights
    pair = float(before[0] + before[1])
    assert float(w[0]) == pytest.approx(0.375 * pair) and float(w[1]) == pytest.approx(0.625 * pair)
    assert float(w[2]) == float(before[2])
    # runs that agree on nothing: merged as before
    eng.split_runs = lambda batch, old, a, b: (SplitRuns(0.55), [])
    merged = eng._unreproduced_pairs({(0, 1): 0.6}, lambda rows: rows, cls)
    assert [tuple(sorted(pair[:2])) for pair in merged] == [(0, 1)]


def test_a_merged_pair_is_not_divided_again_while_it_keeps_its_particles(monkeypatch):
    source, _ = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=4), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(120)))
    cls = np.repeat([0, 1, 2, 3], 30)
    monkeypatch.setattr(em_module, "populated_ratios", lambda *args: {(0, 1): 0.8})
    eng.split_runs = lambda batch, old, a, b: (SplitRuns(0.55), [])  # a copy: merged
    eng.state.stats.weight[:, 1] *= 0.5  # class 1 the lighter: emptied
    assert eng.merge_duplicates(lambda rows: rows, cls) == [(0, 1, 0.8)]
    assert np.array_equal(eng.state.undivided[0], np.arange(60))
    weights = np.array([60.0, 0.0, 30.0, 30.0])
    members = {0: np.arange(60), 2: np.arange(60, 90), 3: np.arange(90, 120)}
    assert 0 not in division_candidates(weights, members, eng.state.undivided)


def test_averages_that_agree_as_one_view_are_merged_only_when_their_split_does_not_come_back(
    monkeypatch,
):
    source, _ = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=4), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(120)))
    cls = np.repeat([0, 1, 2, 3], 30)
    alike = SAME_VIEW_RATIO + 0.05
    monkeypatch.setattr(em_module, "populated_ratios", lambda *args: {(0, 1): alike})
    tested = []

    def split_runs(found):
        def run(batch, old, a, b):
            tested.append((a, b))
            return SplitRuns(found), []

        return run

    eng.split_runs = split_runs(REPRODUCED + 0.05)  # two similar views: the split comes back
    assert eng.merge_duplicates(lambda rows: rows, cls) == []
    assert tested == [(0, 1)]
    eng.split_runs = split_runs(REPRODUCED - 0.1)  # a copy: it does not
    merged = eng.merge_duplicates(lambda rows: rows, cls)
    assert [tuple(sorted(pair[:2])) for pair in merged] == [(0, 1)]


def test_a_pair_too_small_to_test_is_merged_only_when_its_averages_agree_as_one_view():
    source, _ = make_set(120, noise_sd=0.5, seed=0)
    eng = Engine(Config(n_classes=4), BOX, APIX)
    eng.initialise(load_batch(eng, source, np.arange(120)))
    cls = np.repeat([0, 1, 2, 3], 30)
    cls[30 + class_split.MIN_SPLIT_MEMBERS - 1 : 60] = 2  # class 1 too small to test
    cls[90 + class_split.MIN_SPLIT_MEMBERS - 1 :] = 0  # class 3 too
    eng.split_runs = lambda *args: pytest.fail("a pair too small to test was tested")
    ratios = {(0, 1): SAME_VIEW_RATIO + 0.01, (2, 3): SAME_VIEW_RATIO - 0.01}
    merged = eng._unreproduced_pairs(ratios, lambda rows: rows, cls)
    assert [tuple(sorted(pair[:2])) for pair in merged] == [(0, 1)]
