"""E-step finds the true pose and class; M-step rebuilds the class; both on noise-free data."""

import copy
import dataclasses

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.em import Engine
from cryoclass.engine.estep import score_best_poses, score_coarse_to_fine
from cryoclass.engine.model import ModelState
from cryoclass.engine.mstep import Assignments, Statistics, accumulate, wiener_averages
from cryoclass.engine.poses import psi_grid, shift_grid
from cryoclass.engine.references import rotated_references
from cryoclass.engine.source import load_batch
from cryoclass.physics.ctf import ctf_2d
from cryoclass.physics.fourier import (
    band_to_image,
    make_band,
    rfft_band,
    rotate_points,
    shell_sum,
    shift_phase,
)

from .conftest import APIX, BOX, make_set, render, state_holding, true_assignments


def _engine(**kw) -> Engine:
    cfg = Config(n_classes=3, max_res_A=7.5, mask_diameter_A=BOX * APIX * 0.9, **kw)
    return Engine(cfg, BOX, APIX)


def _truth_classes() -> torch.Tensor:
    z = np.zeros(3)
    return render(np.arange(3), z, z, z)


def _angle_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + 180) % 360 - 180)


def test_estep_recovers_class_angle_and_shift_without_ctf():
    src, truth = make_set(60, ctf=False, seed=1)
    eng = _engine(skip_ctf=True)
    batch = load_batch(eng, src, np.arange(len(src)))
    band = make_band(BOX, BOX * APIX / 7.5, r_lo=0.5)
    psi = psi_grid(3.0)
    shifts = shift_grid(3.0, 1.0)
    refs = rotated_references(_truth_classes() * eng.mask, band, psi)
    X, ctf = batch.band(band), batch.ctf(band.kx, band.ky)
    inv = torch.ones(band.size)
    for search in ("exhaustive", "coarse_to_fine", "coarse_to_fine_bf16"):
        if search == "exhaustive":
            best, rot, shf = score_best_poses(X, ctf, inv, refs, shifts, band)
        else:
            dt = torch.bfloat16 if search.endswith("bf16") else torch.float32
            best, rot, shf = score_coarse_to_fine(
                X, ctf, inv, refs, shifts, 1.0, band, coarse_dtype=dt
            )
        cls = best.argmax(1).numpy()
        assert (cls == truth["cls"]).mean() > 0.95, search
        ar = np.arange(len(src))
        est_psi = psi[rot[ar, cls]].numpy()
        t = shifts[shf[ar, cls]].numpy()
        ok = cls == truth["cls"]
        assert np.median(_angle_err(est_psi[ok], truth["psi"][ok])) <= 2.0, search
        assert np.mean(np.abs(t[ok, 0] - truth["tx"][ok]) < 0.6) > 0.9, search
        assert np.mean(np.abs(t[ok, 1] - truth["ty"][ok]) < 0.6) > 0.9, search


def test_mstep_rebuilds_classes_from_ctf_affected_particles():
    src, truth = make_set(300, ctf=True, noise_sd=0.05, seed=2)
    eng = _engine()
    batch = load_batch(eng, src, np.arange(len(src)))
    pairs = true_assignments(truth)
    stats = Statistics.zeros(3, eng.grid.size, eng.n_shells, eng.device)
    gmask = eng.grid_mask(eng.r_max)
    accumulate(batch, pairs, eng.half_of(batch.index), eng.grid, gmask, 3, stats)
    sigma2 = torch.full((eng.n_shells,), 1e-3)
    avg = wiener_averages(stats, sigma2, eng.grid, gmask, 2.0)
    imgs = band_to_image(avg.full, eng.grid).real
    # the truth, masked and low-passed to the same band
    true = band_to_image(rfft_band(_truth_classes() * eng.mask, eng.grid) * gmask, eng.grid).real
    for k in range(3):
        a, b = imgs[k].flatten(), true[k].flatten()
        ncc = torch.nn.functional.cosine_similarity((a - a.mean())[None], (b - b.mean())[None])
        assert ncc.item() > 0.97, (k, ncc.item())
        assert (a * b).sum() > 0  # CTF-corrected: same contrast as the truth, not flipped


def test_coarse_to_fine_refines_to_the_exhaustive_optimum_and_bf16_changes_little():
    # Smooth random references, noisy particles: the local refinement must land on the
    # exhaustive optimum of the classes it refines, and a bfloat16 coarse stage must pick the
    # same best class and pose for nearly every particle (its refinement and scores are float32).
    g = torch.Generator().manual_seed(0)
    band = make_band(48, 8, r_lo=0.5)
    psi, shifts = psi_grid(6.0), shift_grid(4.0, 1.0)
    k, f, n = 5, band.size, 200
    smooth = band_to_image(torch.randn(k, f, dtype=torch.complex64, generator=g), band).real
    refs = rotated_references(smooth, band, psi)
    r = psi.numel()
    truth = torch.randint(0, k * r, (n,), generator=g)
    noise = torch.randn(n, f, dtype=torch.complex64, generator=g)
    X = refs.reshape(k * r, f)[truth] + noise * refs.abs().mean()
    ctf, inv = torch.ones(n, f), torch.ones(f)
    ex = score_best_poses(X, ctf, inv, refs, shifts, band)
    c2f = score_coarse_to_fine(X, ctf, inv, refs, shifts, 1.0, band)
    bf = score_coarse_to_fine(X, ctf, inv, refs, shifts, 1.0, band, coarse_dtype=torch.bfloat16)
    top = ex[0].argmax(1)
    ar = torch.arange(n)
    assert (c2f[0].argmax(1) == top).float().mean() > 0.95
    same_pose = (c2f[1][ar, top] == ex[1][ar, top]) & (c2f[2][ar, top] == ex[2][ar, top])
    assert same_pose.float().mean() > 0.9
    assert (bf[0].argmax(1) == c2f[0].argmax(1)).float().mean() > 0.97
    assert (bf[1][ar, top] == c2f[1][ar, top]).float().mean() > 0.97


def test_coarse_precision_setting_picks_the_gemm_dtype():
    from cryoclass.engine.device import gemm_dtype

    cpu = torch.device("cpu")
    assert gemm_dtype("float32", cpu) == torch.float32
    assert gemm_dtype("bfloat16", cpu) == torch.bfloat16
    assert gemm_dtype("auto", cpu) in (torch.float32, torch.bfloat16)
    assert _engine(coarse_precision="float32").coarse_dtype == torch.float32


def test_an_empty_class_reports_no_resolution():
    src, _ = make_set(60, noise_sd=0.3, seed=3)
    eng = _engine()
    batch = load_batch(eng, src, np.arange(60))
    eng.initialise(batch)
    for _ in range(3):  # the classes must hold signal first: the initial ones are blobs
        eng.absorb(eng.expectation(batch, 0.0)[1], 60, 60)
    st = eng.state
    empty = int(st.class_weights.argmin())
    for t in (st.stats.num, st.stats.den, st.stats.weight):
        t[:, empty] = 0
    eng._rebuild_classes(st.r_work)
    assert float(st.resolution_A[empty]) == 999.0
    others = [c for c in range(3) if c != empty]
    assert float(st.resolution_A[others].max()) < 100.0


def test_shifting_the_references_or_the_particles_gives_the_same_scores(monkeypatch):
    # The two ways score_best_poses forms the cross term (references moved by every shift once
    # per model, or particles moved per batch) are the same sums in another order.
    import cryoclass.engine.estep as estep

    g = torch.Generator().manual_seed(3)
    band = make_band(40, 7, r_lo=0.5)
    psi, shifts = psi_grid(10.0), shift_grid(3.0, 1.0)
    smooth = band_to_image(torch.randn(4, band.size, dtype=torch.complex64, generator=g), band).real
    refs = rotated_references(smooth, band, psi)
    X = torch.randn(30, band.size, dtype=torch.complex64, generator=g)
    ctf = 0.5 + torch.rand(30, band.size, generator=g)
    inv = torch.rand(band.size, generator=g)
    by_refs = score_best_poses(X, ctf, inv, refs, shifts, band)
    given = score_best_poses(
        X,
        ctf,
        inv,
        refs,
        shifts,
        band,
        ref_matrix=estep.shifted_reference_matrix(refs, shifts, band, torch.float32),
    )
    monkeypatch.setattr(estep, "SHIFTED_REFS_BUDGET", 0)
    by_particles = score_best_poses(X, ctf, inv, refs, shifts, band)
    for a, b in ((by_refs, by_particles), (by_refs, given)):
        torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-4)
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_mstep_pair_layouts_give_the_same_statistics(monkeypatch):
    # Pairs are sampled either from gathered copies of their particles' transforms or in a
    # (particles x pairs) layout straight from them; both must add the same statistics.
    import cryoclass.engine.mstep as mstep

    src, truth = make_set(40, ctf=True, noise_sd=0.3, seed=4)
    eng = _engine()
    batch = load_batch(eng, src, np.arange(len(src)))
    g = torch.Generator().manual_seed(1)
    m = 150  # 0 to 8 pairs per particle
    row = torch.randint(0, len(src), (m,), generator=g)
    pairs = Assignments(
        row=row,
        cls=torch.randint(0, 3, (m,), generator=g),
        psi_deg=psi_grid(6.0)[torch.randint(0, 60, (m,), generator=g)],
        tx=torch.randint(-3, 4, (m,), generator=g).float(),
        ty=torch.randint(-3, 4, (m,), generator=g).float(),
        weight=torch.rand(m, generator=g),
        rot=torch.zeros(m, dtype=torch.long),
        shift=torch.zeros(m, dtype=torch.long),
    )
    gmask = eng.grid_mask(eng.r_max)
    stats = []
    for fill in (0.0, 2.0):  # always the layout, never the layout
        monkeypatch.setattr(mstep, "DENSE_PAIR_FILL", fill)
        st = Statistics.zeros(3, eng.grid.size, eng.n_shells, eng.device)
        accumulate(batch, pairs, eng.half_of(batch.index), eng.grid, gmask, 3, st, chunk=64)
        stats.append(st)
    torch.testing.assert_close(stats[0].num, stats[1].num, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats[0].den, stats[1].den, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats[0].weight, stats[1].weight)
    assert stats[0].num.abs().sum() > 0


def test_a_prior_on_poses_adds_to_every_pose_score(monkeypatch):
    # The best pose with a (K, R, S) log prior is the best of score + prior over all rotations
    # and shifts, in both layouts of the cross term, in the coarse-to-fine search and in the
    # neighbourhood scores (force_max off).
    import cryoclass.engine.estep as estep

    g = torch.Generator().manual_seed(5)
    band = make_band(40, 7, r_lo=0.5)
    psi, shifts = psi_grid(20.0), shift_grid(3.0, 1.0)
    k, r, s = 4, psi.numel(), shifts.shape[0]
    smooth = band_to_image(torch.randn(k, band.size, dtype=torch.complex64, generator=g), band).real
    refs = rotated_references(smooth, band, psi)
    truth = torch.randint(0, k * r, (30,), generator=g)
    noise = torch.randn(30, band.size, dtype=torch.complex64, generator=g)
    X = refs.reshape(-1, band.size)[truth] + 0.5 * noise * refs.abs().mean()
    ctf = 0.5 + torch.rand(30, band.size, generator=g)
    inv = torch.rand(band.size, generator=g)
    # as the engine's: a Gaussian on the shift in the class frame, R_psi t, around each class's
    # mean (strengthened, so that it moves poses)
    u = torch.stack(rotate_points(shifts[:, 0], shifts[:, 1], psi), 2)  # (R, S, 2)
    centre = torch.randn(k, 2, generator=g)
    prior = -((u[None] - centre[:, None, None]) ** 2).sum(3) / (2 * 1.5**2) * 10.0
    every = torch.stack(
        [
            torch.stack(
                [
                    score_best_poses(X, ctf, inv, refs[:, i : i + 1], shifts[j : j + 1], band)[0]
                    for j in range(s)
                ],
                2,
            )
            for i in range(r)
        ],
        2,
    )  # (n, K, R, S)
    expect_best, where = (every + prior[None]).flatten(2).max(2)
    by_refs = score_best_poses(X, ctf, inv, refs, shifts, band, shift_prior=prior)
    monkeypatch.setattr(estep, "SHIFTED_REFS_BUDGET", 0)
    by_particles = score_best_poses(X, ctf, inv, refs, shifts, band, shift_prior=prior)
    for got in (by_refs, by_particles):
        torch.testing.assert_close(got[0], expect_best, rtol=1e-5, atol=1e-3)
        assert torch.equal(got[1] * s + got[2], where)
    flat = score_best_poses(X, ctf, inv, refs, shifts, band)
    assert not torch.equal(flat[1] * s + flat[2], where)  # the prior moved some best poses
    # the coarse-to-fine search returns score + prior of the pose it settles on
    c2f = score_coarse_to_fine(X, ctf, inv, refs, shifts, 1.0, band, shift_prior=prior)
    cls = torch.arange(k)[None].expand(30, k)
    a = refs[cls, c2f[1]]  # (n, K, F) the chosen rotations
    ph = shift_phase(band.kx, band.ky, -shifts[c2f[2], :1], -shifts[c2f[2], 1:], band.box)
    p = (X * ctf * inv)[:, None] * ph
    direct = 2 * (p.conj() * a).real.sum(2) - ((ctf**2 * inv)[:, None] * a.abs() ** 2).sum(2)
    torch.testing.assert_close(c2f[0], direct + prior[cls, c2f[1], c2f[2]], rtol=1e-4, atol=1e-2)
    assert torch.all(c2f[0] <= expect_best + 1e-2)  # never above the exhaustive optimum
    classes = expect_best.topk(2, dim=1).indices
    args = (X, ctf, inv, refs, shifts, 1.0, band, classes, by_refs[1], by_refs[2])
    with_prior = estep.neighbourhood_scores(*args, shift_prior=prior)
    without = estep.neighbourhood_scores(*args)
    finite = torch.isfinite(without.score)
    cls_n = classes[..., None].expand_as(with_prior.shift)
    added = prior[cls_n, with_prior.rot, with_prior.shift]
    torch.testing.assert_close(
        (with_prior.score - without.score)[finite], added[finite], rtol=1e-4, atol=1e-3
    )


def test_the_pose_volume_is_the_log_sum_over_every_pose(monkeypatch):
    # class_score marginal: best + log_volume is log sum over rotations x shifts of exp(score +
    # prior), in both layouts of the cross term; the coarse-to-fine search sums over its coarse
    # poses (every second rotation, shifts on the lattice of twice the step).
    import cryoclass.engine.estep as estep

    g = torch.Generator().manual_seed(7)
    band = make_band(40, 7, r_lo=0.5)
    psi, shifts = psi_grid(20.0), shift_grid(3.0, 1.0)
    k, r, s, n = 3, psi.numel(), shifts.shape[0], 20
    smooth = band_to_image(torch.randn(k, band.size, dtype=torch.complex64, generator=g), band).real
    refs = rotated_references(smooth, band, psi)
    truth = torch.randint(0, k * r, (n,), generator=g)
    noise = torch.randn(n, band.size, dtype=torch.complex64, generator=g)
    X = refs.reshape(-1, band.size)[truth] + 2.0 * noise * refs.abs().mean()
    ctf = 0.5 + torch.rand(n, band.size, generator=g)
    inv = 0.02 * torch.rand(band.size, generator=g)  # scores a few units apart: many poses count
    prior = -torch.rand(k, r, s, generator=g)
    every = (
        torch.stack(
            [
                torch.stack(
                    [
                        score_best_poses(X, ctf, inv, refs[:, i : i + 1], shifts[j : j + 1], band)[
                            0
                        ]
                        for j in range(s)
                    ],
                    2,
                )
                for i in range(r)
            ],
            2,
        )
        + prior[None]
    )  # (n, K, R, S)
    expect = torch.logsumexp(every.flatten(2), 2)
    volumes = []
    for budget in (estep.SHIFTED_REFS_BUDGET, 0):  # references moved, then particles moved
        monkeypatch.setattr(estep, "SHIFTED_REFS_BUDGET", budget)
        volume = torch.empty(n, k)
        best = score_best_poses(
            X, ctf, inv, refs, shifts, band, shift_prior=prior, log_volume=volume
        )[0]
        torch.testing.assert_close(best + volume, expect, rtol=1e-5, atol=1e-3)
        volumes.append(volume)
    assert float(volumes[0].min()) > 0.5  # the sum is well above the best pose alone here
    coarse_s = estep.coarse_shift_indices(shifts, 1.0)
    coarse = torch.logsumexp(every[:, :, ::2][:, :, :, coarse_s].flatten(2), 2)
    c2f_volume = torch.empty(n, k)
    estep.score_coarse_to_fine(
        X, ctf, inv, refs, shifts, 1.0, band, shift_prior=prior, log_volume=c2f_volume
    )
    coarse_best = every[:, :, ::2][:, :, :, coarse_s].flatten(2).max(2).values
    torch.testing.assert_close(coarse_best + c2f_volume, coarse, rtol=1e-5, atol=1e-3)


def test_class_posteriors_sum_over_poses_unless_class_score_is_best_pose():
    # The engine's class posterior at temperature 1 is the softmax of each class's log sum over
    # the poses (marginal, the default, once a full pass has replaced the statistics), or of
    # its best score (best_pose, and marginal in the online phase).
    src, _ = make_set(60, noise_sd=1.0, seed=5)
    for mode in ("marginal", "best_pose"):
        eng = _engine(class_score=mode, class_prior="off")
        batch = load_batch(eng, src, np.arange(60))
        eng.initialise(batch)
        assert eng.score(batch).log_volume is None  # the online phase: best pose
        eng.absorb(eng.expectation(batch, 0.0)[1], 60, 60, replace=True)  # a full pass
        assert eng.state.background_removed
        scored = eng.score(batch)
        assert (scored.log_volume is None) == (mode == "best_pose")
        score = scored.best if mode == "best_pose" else scored.best + scored.log_volume
        torch.testing.assert_close(eng._class_posterior(scored, 1.0), torch.softmax(score, 1))
        if mode == "marginal":
            assert float(scored.log_volume.min()) >= -1e-4
            assert not torch.allclose(torch.softmax(score, 1), torch.softmax(scored.best, 1))


def test_the_prior_on_shifts_is_learnt_from_the_particles():
    # Particles shifted by integers in [-2, 2] on each axis: sd sqrt(2) px. The prior starts
    # at max_shift_px / 2 = 3 px (a flat search over the 6 px disc spreads as much) and must
    # end near the truth. Its class means follow each class's drift off the box centre during
    # the run (classes are re-centred only when written), which is what keeps the sd honest.
    from cryoclass.schedules.batch import run_batch

    src, truth = make_set(240, noise_sd=0.3, seed=4)
    cfg = Config(n_classes=3, max_res_A=7.5, mask_diameter_A=BOX * APIX * 0.9, n_online_em_iters=6)
    cfg = cfg.model_copy(update=dict(batch_size_per_class=40, n_full_iters=2))
    st = run_batch(src, cfg).state
    mean, sd = st.shift_prior(cfg)
    print("prior sd (px):", sd, "class means:", mean.tolist())
    true_sd = np.std(np.r_[truth["tx"], truth["ty"]])
    assert abs(sd - true_sd) < 0.3
    assert float(mean.norm(dim=1).max()) < cfg.max_shift_px / 2


def test_per_class_statistics_are_cleared_scaled_and_copied_in_every_field():
    """Statistics.clear_class_, scale_class_ and set_class_ (merge and re-seed) touch every
    per-class field of the named class and nothing else: no other class, no noise statistics."""
    k, q, shells = 3, 5, 4
    g = torch.Generator().manual_seed(0)

    def filled() -> Statistics:
        s = Statistics.zeros(k, q, shells, torch.device("cpu"))
        for f in dataclasses.fields(Statistics):
            t = getattr(s, f.name)
            t.copy_(torch.rand(t.shape, generator=g) + 1.0)
        return s

    fields = ("num", "den", "weight", "evidence", "evidence_sq", "evidence_n", "offset")
    half_set = ("num", "den", "weight")

    def of(s: Statistics, name: str, c: int) -> torch.Tensor:
        t = getattr(s, name)
        return t[:, c] if name in half_set else t[c]

    a = filled()
    before = a.scaled(1.0)
    a.clear_class_(1)
    for name in fields:
        assert torch.all(of(a, name, 1) == 0), name
        for c in (0, 2):
            assert torch.equal(of(a, name, c), of(before, name, c)), name
    assert torch.equal(a.noise_power, before.noise_power)
    assert torch.equal(a.noise_count, before.noise_count)

    a = filled()
    before = a.scaled(1.0)
    a.scale_class_(2, 0.5)
    for name in fields:
        assert torch.allclose(of(a, name, 2), 0.5 * of(before, name, 2)), name
        assert torch.equal(of(a, name, 0), of(before, name, 0)), name

    a, b = filled(), filled()
    before = a.scaled(1.0)
    a.set_class_(0, b, 2, 3.0, fields=("num", "offset"))
    assert torch.allclose(a.num[:, 0], 3.0 * b.num[:, 2])
    assert torch.allclose(a.offset[0], 3.0 * b.offset[2])
    assert torch.equal(a.den[:, 0], before.den[:, 0])  # fields not named are kept
    assert torch.equal(a.evidence[0], before.evidence[0])
    a.set_class_(1, a, 0)  # from itself, every field
    for name in fields:
        assert torch.equal(of(a, name, 1), of(a, name, 0)), name


def test_a_model_saved_with_the_earlier_evidence_layout_loads_with_its_evidence_restarted():
    """Checkpoints of the earlier layout (evidence (K, n_shells), particles and controls summed
    together, no counts) or without evidence load: the evidence starts again at zero in the
    current layout, every other statistic is kept."""
    k, q, shells = 3, 5, 4
    s = Statistics.zeros(k, q, shells, torch.device("cpu"))
    s.weight.fill_(2.0)
    state = state_holding(s)
    for old in ({"evidence": torch.ones(k, shells), "evidence_sq": torch.ones(k, shells)}, {}):
        d = state.to_dict()
        for name in ("evidence", "evidence_sq", "evidence_n"):
            del d["stats"][name]
        d["stats"].update(old)
        back = ModelState.from_dict(d).stats
        assert back.evidence.shape == back.evidence_sq.shape == (k, 2, shells)
        assert back.evidence_n.shape == (k, 2)
        assert float(back.evidence.abs().sum() + back.evidence_n.sum()) == 0.0
        assert torch.equal(back.weight, s.weight)
    again = ModelState.from_dict(state.to_dict()).stats  # the current layout: as saved
    for f in dataclasses.fields(Statistics):
        assert torch.equal(getattr(again, f.name), getattr(s, f.name)), f.name


def test_labels_are_the_classes_of_an_e_step():
    # Engine.labels (the split test's last step) skips the statistics, not the posterior: the
    # same classes as a full E-step at factor 0, with force_max on and off, prior on and off.
    src, _ = make_set(60, noise_sd=1.0, seed=5)
    for kw in ({}, {"force_max": False, "class_prior": "always"}):
        eng = _engine(**kw)
        batch = load_batch(eng, src, np.arange(60))
        eng.initialise(batch)
        eng.absorb(eng.expectation(batch, 0.0)[1], 60, 60)
        expected = eng.expectation(batch, 0.0)[0].cls
        assert len(set(expected.tolist())) > 1  # a real classification, not one class
        np.testing.assert_array_equal(eng.labels(batch), expected)


def test_the_background_level_is_removed_from_the_first_full_pass_on():
    # Online updates mask the averages as they are; a full pass (replace=True) starts removing
    # each average's level outside the mask before masking, it stays on, and it is saved.
    src, _ = make_set(60, noise_sd=0.5, seed=7)
    eng = _engine()
    batch = load_batch(eng, src, np.arange(60))
    eng.initialise(batch)
    st = eng.state
    level = torch.full((2, BOX, BOX), 0.4)
    eng.absorb(eng.expectation(batch, 0.5)[1], 60, 60)
    assert not st.background_removed
    torch.testing.assert_close(eng._masked(level), level * eng.mask)
    eng.absorb(eng.expectation(batch, 0.0)[1], 60, 60, replace=True)
    assert st.background_removed
    eng.absorb(eng.expectation(batch, 0.0)[1], 30, 30)
    assert st.background_removed
    assert float(eng._masked(level).abs().max()) < 1e-5
    assert ModelState.from_dict(st.to_dict()).background_removed


def test_the_class_prior_acts_from_the_second_full_pass_on():
    # class_prior full_passes: uniform in the online phase and in the first full pass, then
    # log(class weight) is added to every class score; never in the split test's 2-class runs;
    # always: from the start; off: never.
    src, _ = make_set(60, noise_sd=1.0, seed=5)
    eng = _engine(class_prior="full_passes")
    batch = load_batch(eng, src, np.arange(60))
    eng.initialise(batch)
    eng.absorb(eng.expectation(batch, 0.5)[1], 60, 60)
    assert not eng.uses_class_prior
    eng.absorb(eng.expectation(batch, 0.0)[1], 60, 60, replace=True)
    assert eng.uses_class_prior
    scored = eng.score(batch)
    st = eng.state
    st.stats.scale_class_(0, 50.0)  # class 0 now holds most of the weight
    with_prior = eng._class_posterior(scored, 1.0)
    uniform = torch.softmax(scored.best + scored.log_volume, dim=1)  # class_score marginal
    assert float((with_prior[:, 0] - uniform[:, 0]).min()) > 0
    st.fixed_resolution_A = st.resolution_A.clone()  # as in a split test's run
    assert not eng.uses_class_prior
    torch.testing.assert_close(eng._class_posterior(scored, 1.0), uniform)
    st.fixed_resolution_A = None
    for mode, expected in (("off", False), ("always", True)):
        other = _engine(class_prior=mode)
        other.state = st
        assert other.uses_class_prior is expected
    fresh = _engine(class_prior="always")
    fresh.initialise(batch)
    assert fresh.uses_class_prior


def test_references_are_clamped_to_nonnegative_density_from_the_first_full_pass_on():
    # nonnegative_references: not in the online phase (the solvent is not yet at 0), from the
    # first full pass on (background removed); never with skip_ctf; and off leaves them as
    # they were (the same statistics give the same averages but for the clamp).
    src, _ = make_set(60, noise_sd=1.0, seed=5)
    eng = _engine()
    batch = load_batch(eng, src, np.arange(60))
    eng.initialise(batch)
    eng.absorb(eng.expectation(batch, 0.5)[1], 60, 60)
    assert not eng.clamps_density
    _, stats, _ = eng.expectation(batch, 0.0)
    off = _engine(nonnegative_references=False)
    off.state = copy.deepcopy(eng.state)
    eng.absorb(stats, 60, 60, replace=True)
    off.absorb(stats, 60, 60, replace=True)
    assert eng.clamps_density and not off.clamps_density
    clamped, plain = eng.state.class_images, off.state.class_images
    assert float(plain.min()) < -0.01 * float(plain.max())
    for c, p in zip(clamped, plain):  # each class of one sign, its own, and the rest kept
        sign = 1.0 if float(p.sum()) >= 0 else -1.0
        assert float((sign * c).min()) == 0.0
        torch.testing.assert_close(c, sign * (sign * p).clamp_min(0.0))
    skip = _engine(skip_ctf=True)
    skip.state = eng.state
    assert not skip.clamps_density


def _one_defocus_class(n: int, noise_rel: float, seed: int, ctf: torch.Tensor | None = None):
    """Statistics of one class of n particles that share one CTF (by default 2 µm, 300 kV, box
    48 at 3.4 Å, so the band crosses several CTF zero rings; or ctf (Q,) on the band): signal +
    white noise of sd noise_rel x the signal's mean amplitude at shells 8-16.
    Returns (stats, sigma2, grid, truth (Q,), ctf (Q,))."""
    box, apix = 48, 3.4
    grid = make_band(box, box / 2, include_dc=True)
    yy, xx = torch.meshgrid(torch.arange(box) - box / 2, torch.arange(box) - box / 2, indexing="ij")
    image = torch.exp(-((xx - 4) ** 2 + yy**2) / 30) + 0.7 * torch.exp(
        -((xx + 6) ** 2 + (yy - 3) ** 2) / 18
    )
    truth = rfft_band(image[None], grid)[0]
    if ctf is None:
        ctf = ctf_2d(grid.kx / (box * apix), grid.ky / (box * apix), 2e4, 2e4, 0.0, 300.0, 2.7, 0.1)
        ctf = ctf[0]
    mid = (grid.shell >= 8) & (grid.shell <= 16)
    sigma = noise_rel * float(truth[mid].abs().mean())
    gen = torch.Generator().manual_seed(seed)
    noise = torch.complex(
        torch.randn(n, grid.size, generator=gen), torch.randn(n, grid.size, generator=gen)
    ) * (sigma / 2**0.5)
    num = (ctf * (ctf * truth + noise)).sum(0)
    stats = Statistics.zeros(1, grid.size, box // 2 + 2, "cpu")
    stats.num[:, 0] = num / 2
    stats.den[:, 0] = n * ctf**2 / 2
    sigma2 = torch.full((box // 2 + 2,), sigma**2)
    return stats, sigma2, grid, truth, ctf


def test_a_small_class_at_one_defocus_is_not_amplified_on_the_ctf_zero_rings():
    # On the zero rings den is almost 0: the Wiener average there should be shrunk towards 0,
    # never blown up. Before the low-weight points were down-weighted, three particles gave 7x
    # the truth's power there (median of ten draws), up to 30x.
    ratios = []
    for seed in range(10):
        stats, sigma2, grid, truth, ctf = _one_defocus_class(3, 3.0, seed)
        avg = wiener_averages(stats, sigma2, grid, torch.ones(grid.size, dtype=torch.bool), 2.0)
        rings = (ctf**2 < 0.02) & (grid.shell >= 4)  # beyond the low-frequency plateau
        ratios.append(
            float((avg.full[0, rings].abs() ** 2).sum() / (truth[rings].abs() ** 2).sum())
        )
    ratios = torch.tensor(ratios)
    assert ratios.median() < 1.0, ratios
    assert ratios.max() < 3.0, ratios


def test_the_signal_power_is_the_plain_shell_mean_where_no_point_is_below_the_floor():
    stats, sigma2, grid, truth, ctf = _one_defocus_class(50, 1.0, 0)
    stats.den[:] = 25.0  # one weight for every point: no point below the floor
    avg = wiener_averages(stats, sigma2, grid, torch.ones(grid.size, dtype=torch.bool), 2.0)
    num, den = stats.num.sum(0)[0], stats.den.sum(0)[0]
    per_point = (num.abs() ** 2) / den**2 - sigma2[grid.shell] / den
    n_shells = sigma2.numel()
    plain = (
        shell_sum(per_point[None], grid.shell, n_shells)
        / shell_sum(torch.ones(1, grid.size), grid.shell, n_shells).clamp_min(1)
    ).clamp_min(0)[0]
    torch.testing.assert_close(avg.tau2[0], plain, rtol=1e-5, atol=1e-6)


def test_a_whole_shell_with_little_ctf_weight_borrows_its_neighbours_signal_power():
    # Without astigmatism a CTF zero ring can cover a whole shell: its points all weigh alike,
    # so down-weighting points within the shell cannot help. Before the shell borrowed its
    # neighbours' estimate, three particles with CTF 0.01 on shell 8 gave up to 104x the truth's
    # power there over ten draws.
    ring = make_band(48, 24, include_dc=True).shell == 8
    ctf = torch.where(ring, 0.01, 1.0)
    ratios = []
    for seed in range(10):
        stats, sigma2, grid, truth, _ = _one_defocus_class(3, 3.0, 100 + seed, ctf)
        avg = wiener_averages(stats, sigma2, grid, torch.ones(grid.size, dtype=torch.bool), 2.0)
        ratios.append(float((avg.full[0, ring].abs() ** 2).sum() / (truth[ring].abs() ** 2).sum()))
    assert max(ratios) < 1.0, ratios
