"""Streaming ends as good as batch: the same 800 particles, delivered in small chunks (or with a
tiny first chunk), give classes that agree with batch jobs as well as batch jobs agree with each
other, and score as well against the true views.

Figures (ARIs) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cryoclass.engine.em import Engine
from cryoclass.engine.executor import LocalEStep
from cryoclass.engine.source import load_batch
from cryoclass.quality import adjusted_rand_index as ari
from cryoclass.schedules.batch import run_batch
from cryoclass.schedules.online import online_step
from cryoclass.stream import Stream

SEEDS = (0, 1, 2, 3, 4)
MARGIN = 0.1


@pytest.fixture(scope="module")
def batch_classes(particles, config_for):
    """seed -> (800,) classes of a batch job on all particles."""
    return {s: run_batch(particles, config_for(s)).particles.cls for s in SEEDS}


def stream_classes(pset, config, out, first: int, chunk: int, in_order) -> np.ndarray:
    """Deliver pset in random order: a first chunk of `first`, then chunks of `chunk`."""
    order = np.random.default_rng(config.seed + 100).permutation(len(pset))
    cuts = [order[:first]] + [order[a : a + chunk] for a in range(first, len(pset), chunk)]
    with Stream(config, out, outputs_every_s=1e9) as s:
        for c in cuts:
            s.add_particles(pset.subset(c))
        res = s.finish()
    assert s.n_processed == len(pset)
    return in_order(res, pset)


def _compare(name, streamed, batch, truth):
    cross = np.mean([ari(streamed[i], batch[j]) for i in SEEDS for j in SEEDS])
    pairs = np.mean([ari(batch[i], batch[j]) for i, j in itertools.combinations(SEEDS, 2)])
    s_truth = np.mean([ari(truth, streamed[s]) for s in SEEDS])
    b_truth = np.mean([ari(truth, batch[s]) for s in SEEDS])
    print(
        f"\n{name}: ARI stream-vs-batch {cross:.3f}, batch-vs-batch {pairs:.3f}; "
        f"vs truth: stream {s_truth:.3f}, batch {b_truth:.3f}"
    )
    assert cross >= pairs - MARGIN
    assert s_truth >= b_truth - MARGIN


@pytest.mark.slow
def test_small_chunks_equivalent_to_batch(
    particles, truth, batch_classes, config_for, in_order, tmp_path
):
    streamed = {
        s: stream_classes(particles, config_for(s), tmp_path / f"s{s}", 25, 25, in_order)
        for s in SEEDS
    }
    _compare("chunks of 25", streamed, batch_classes, truth)


@pytest.mark.slow
def test_tiny_first_chunk_ends_as_good_as_batch(
    particles, truth, batch_classes, config_for, in_order, tmp_path
):
    """First chunk: 2 particles per class (8), then chunks of 25."""
    streamed = {
        s: stream_classes(particles, config_for(s), tmp_path / f"s{s}", 8, 25, in_order)
        for s in SEEDS
    }
    _compare("first chunk 2 per class", streamed, batch_classes, truth)


def test_one_minibatch_is_the_batch_start(particles, config_for, tmp_path):
    """Once one minibatch has arrived the stream's model is the batch schedule's after its first
    online-EM iteration on those particles (random-subset start, one E-step at the initial
    uncertainty): identical when they arrive at once; same counters when in small chunks."""
    cfg = config_for(0)
    mb = cfg.minibatch_size
    sub = particles.subset(np.arange(mb))
    with Stream(cfg, tmp_path / "one", outputs_every_s=1e9) as s:
        s.add_particles(sub)
        streamed = s.state.class_images.clone()
    engine = Engine(cfg, sub.box, sub.pixel_size_A, "cpu")
    batch = load_batch(engine, sub, np.arange(mb))
    engine.initialise(batch)
    online_step(engine, LocalEStep(), sub, np.arange(mb), mb, batch=batch)
    assert torch.allclose(streamed, engine.state.class_images, atol=1e-5)

    with Stream(cfg, tmp_path / "chunks", outputs_every_s=1e9) as s:
        for a in range(0, mb, 16):
            s.add_particles(sub.subset(np.arange(a, a + 16)))
        assert (s.state.distinct_seen, s.state.processed, s.n_processed) == (mb, mb, mb)


@pytest.mark.slow
def test_tiny_first_chunk_at_default_uncertainty(particles, truth, config_for, in_order, tmp_path):
    """The failure users reported, at the default initial_uncertainty_factor (2; the other tests
    use 8): a first chunk of 2 particles per class, then chunks of 25. At this size (800
    particles, K = 4) batch jobs lose a class on some seeds too (2 of 10 measured, ARI about
    0.65 instead of 0.95), so the test compares mean ARIs against the truth over 10 seeds
    (measured 2026-12-01: stream 0.895, batch 0.897)."""
    seeds = range(10)

    def cfg(s):
        return config_for(s, initial_uncertainty_factor=2.0)

    batch = [ari(truth, run_batch(particles, cfg(s)).particles.cls) for s in seeds]
    stream = [
        ari(truth, stream_classes(particles, cfg(s), tmp_path / f"d{s}", 8, 25, in_order))
        for s in seeds
    ]
    print(
        f"\ndefault uncertainty, first chunk 2 per class: ARI vs truth, stream "
        f"{np.mean(stream):.3f} {np.round(stream, 2)}, batch {np.mean(batch):.3f} "
        f"{np.round(batch, 2)}"
    )
    assert np.mean(stream) >= np.mean(batch) - MARGIN
