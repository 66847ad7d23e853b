"""CryoSPARC 4.4+ parameters: the minimum alignment resolution band, hard last iteration."""

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.em import Engine
from cryoclass.engine.source import load_batch
from cryoclass.physics.fourier import lowpass_images
from cryoclass.schedules.annealing import annealing_factor
from cryoclass.schedules.batch import run_batch

from .conftest import APIX, BOX, make_set


def _assign(eng: Engine, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    res, _, _ = eng.expectation(batch, 0.0)
    return res.cls, res.psi_deg, np.stack([res.tx, res.ty], 1)


def test_min_res_band_ignores_low_frequency_patterns():
    src, _ = make_set(80, noise_sd=0.3, ctf=True, seed=5)
    rng = np.random.default_rng(0)
    # a strong pattern made only of frequencies below 1/60 Å (well inside 1/40 Å)
    pattern = lowpass_images(
        torch.as_tensor(rng.standard_normal((80, BOX, BOX)), dtype=torch.float32) * 20,
        APIX,
        60.0,
        0.5,
    )
    changed = {}
    for min_res in (40.0, None):
        cfg = Config(
            n_classes=3,
            max_res_A=7.5,
            min_res_A=min_res,
            max_shift_px=3.0,
            mask_diameter_A=BOX * APIX * 0.9,
            init_res_A=7.5,
        )
        eng = Engine(cfg, BOX, APIX)
        clean = load_batch(eng, src, np.arange(80))
        eng.initialise(clean)
        eng.absorb(eng.expectation(clean, 0.0)[1], 80, 80, replace=True)  # a full pass
        assert eng.highpass_active == (min_res is not None)
        before = _assign(eng, clean)
        src.add(pattern)
        after = _assign(eng, load_batch(eng, src, np.arange(80)))
        src.add(-pattern)
        changed[min_res] = [
            float(np.mean(np.any(np.atleast_2d(a != b).reshape(80, -1), 1)))
            for a, b in zip(before, after)
        ]
    assert changed[40.0] == [0.0, 0.0, 0.0]  # class, angle and shift all unchanged
    assert max(changed[None]) > 0.05  # without min_res the pattern moves them


def test_min_res_starts_when_the_annealing_ends():
    """Classes are first built on the full band (at low SNR the high-passed band alone holds too
    little to start from); the minimum alignment resolution applies from the end of the
    annealing, counted in minibatches of particles processed (the same in streaming)."""
    src, _ = make_set(60, noise_sd=0.3, ctf=True, seed=5)
    cfg = Config(
        n_classes=3,
        max_res_A=7.5,
        min_res_A=40.0,
        batch_size_per_class=20,
        sigma_anneal_start=1,
        sigma_anneal_iters=2,
        mask_diameter_A=BOX * APIX * 0.9,
    )
    eng = Engine(cfg, BOX, APIX)
    batch = load_batch(eng, src, np.arange(60))
    eng.initialise(batch)
    active = []
    for _ in range(4):  # minibatches of 60 particles: 1, 2, 3, 4
        _, inv = eng.alignment_band()
        active.append(bool((inv == 0).any()))
        factor = annealing_factor(cfg, eng.state.processed)
        eng.absorb(eng.expectation(batch, factor)[1], 60, 60)
    assert active == [False, False, False, True]
    assert eng.state.r_work >= 2.5 * eng.r_min - 1e-6


def test_hard_classify_last_iteration_is_one_hot():
    src, _ = make_set(150, noise_sd=0.8, ctf=True, seed=6)
    cfg = Config(
        n_classes=3,
        max_res_A=9.0,
        batch_size_per_class=40,
        n_online_em_iters=3,
        n_full_iters=1,
        hard_classify_last_iter=True,
        mask_diameter_A=BOX * APIX * 0.9,
    )
    res = run_batch(src, cfg)
    post = res.particles.posterior
    assert np.all((post == 0) | (post == 1)) and np.all(post.sum(1) == 1)
    assert np.all(res.particles.max_prob == 1)
    # The averages are built from each member with weight exactly 1 (plain means before the
    # Wiener filter): per class, the summed weight is the member count.
    members = np.bincount(res.particles.cls, minlength=3)
    np.testing.assert_allclose(res.state.stats.weight.sum(0).numpy(), members, atol=1e-3)


def test_band_grows_once_per_minibatch_of_particles_processed(monkeypatch):
    """A stream updates in chunks of any size; the working band follows the classes once per
    minibatch of particles processed (as the batch schedule's one update per minibatch), not
    once per update, so small updates cannot walk the band out ahead of the classes."""
    src, _ = make_set(60, noise_sd=0.3, ctf=True, seed=5)
    cfg = Config(
        n_classes=3, max_res_A=7.5, batch_size_per_class=20, mask_diameter_A=BOX * APIX * 0.9
    )
    eng = Engine(cfg, BOX, APIX)
    grown = []
    real = Engine._update_working_resolution
    monkeypatch.setattr(
        Engine,
        "_update_working_resolution",
        lambda self: (grown.append(self.state.processed), real(self))[1],
    )
    batch = load_batch(eng, src, np.arange(60))
    eng.initialise(batch)
    eng.absorb(eng.expectation(batch, 1.0)[1], 60, 60)  # one minibatch: grows
    for a in range(0, 60, 10):  # the next one in six chunks
        part = load_batch(eng, src, np.arange(a, a + 10))
        eng.absorb(eng.expectation(part, 1.0)[1], 10, 0)
    eng.absorb(eng.expectation(batch, 1.0)[1], 60, 0, replace=True)  # a full pass: grows
    assert grown == [60.0, 120.0, 60.0]
