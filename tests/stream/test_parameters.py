"""Every parameter acts in streaming as in batch (one engine): max_res_A, min_res_A,
white_noise and skip_ctf, under both streaming policies."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from cryoclass.engine.em import Engine
from cryoclass.stream import Stream

N = 320
POLICIES = ["online", "live"]


def run_stream(particles, config, out):
    """Stream the first N particles in chunks of 40 and finish; returns the Stream."""
    with Stream(config, out, outputs_every_s=1e9) as s:
        for a in range(0, N, 40):
            s.add_particles(particles.subset(np.arange(a, a + 40)))
        s.finish()
    return s


def fast(config_for, policy, **kw):
    # live: initial 2D run on 2 x 80 particles, then a full pass every 160
    return config_for(
        0,
        stream_policy=policy,
        n_online_em_iters=2 if policy == "live" else 4,
        sigma_anneal_iters=2,
        n_full_iters=1,
        **kw,
    )


def radial_power(images: np.ndarray) -> np.ndarray:
    """(D//2 + 1,) power of the images' 2D spectra summed over rings of radius r (px)."""
    f = np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1))
    p = (np.abs(f) ** 2).sum(0)
    d = images.shape[-1]
    y, x = np.indices((d, d)) - d // 2
    r = np.rint(np.hypot(x, y)).astype(int)
    return np.bincount(r.ravel(), p.ravel())[: d // 2 + 1]


@pytest.fixture
def spy(monkeypatch):
    """Records every alignment band weight vector and every E-step batch the engine sees."""
    seen = {"inv": [], "radius": [], "skip_ctf": []}
    real_band, real_score = Engine.alignment_band, Engine.score

    def band(self):
        b, inv = real_band(self)
        seen["inv"].append(inv.clone())
        seen["radius"].append(np.hypot(b.kx.numpy(), b.ky.numpy()))
        return b, inv

    def score(self, batch, *a, **k):  # every E-step (minibatch shards, full-pass chunks) scores
        seen["skip_ctf"].append(batch.skip_ctf)
        return real_score(self, batch, *a, **k)

    monkeypatch.setattr(Engine, "alignment_band", band)
    monkeypatch.setattr(Engine, "score", score)
    return seen


@pytest.mark.parametrize("policy", POLICIES)
def test_max_res_no_power_beyond(policy, particles, config_for, tmp_path):
    """Class averages carry no power beyond 1/max_res_A (25 Å = 6.4 px here) but do at 12.5 Å
    (12.8 px): between the two limits, 8 <= r < 13 px, they carry ten times more."""
    frac, between = {}, {}
    for max_res in (25.0, 12.5):
        s = run_stream(
            particles, fast(config_for, policy, max_res_A=max_res), tmp_path / f"{max_res}"
        )
        assert s.state.r_work <= 32 * 5.0 / max_res + 1e-6
        p = radial_power(mrcfile.read(tmp_path / f"{max_res}" / "classes.mrcs"))
        frac[max_res] = p[8:].sum() / p.sum()  # beyond 6.4 px + the soft mask's spread
        between[max_res] = p[8:13].sum() / p.sum()
    assert frac[25.0] < 1e-3
    assert between[12.5] > 10 * between[25.0]


@pytest.mark.parametrize("policy", POLICIES)
def test_white_noise_used_flat(policy, particles, config_for, tmp_path, spy):
    run_stream(particles, fast(config_for, policy, white_noise=True), tmp_path / "w")
    assert spy["inv"] and all(float(v.std() / v.mean()) < 1e-6 for v in spy["inv"])
    spy["inv"].clear()
    run_stream(particles, fast(config_for, policy), tmp_path / "c")
    assert any(float(v.std() / v.mean()) > 0.05 for v in spy["inv"])


@pytest.mark.parametrize("policy", POLICIES)
def test_skip_ctf(policy, particles, config_for, tmp_path, spy):
    a = run_stream(particles, fast(config_for, policy, skip_ctf=True), tmp_path / "skip")
    assert spy["skip_ctf"] and all(spy["skip_ctf"])
    spy["skip_ctf"].clear()
    b = run_stream(particles, fast(config_for, policy), tmp_path / "ctf")
    assert not any(spy["skip_ctf"])
    assert not np.allclose(a.state.class_images.numpy(), b.state.class_images.numpy())


def test_min_res_left_out_of_alignment(particles, config_for, tmp_path, spy):
    """As in batch: the full band until the annealing has ended (the same number of particles
    processed), the minimum alignment resolution from then on, final passes included."""
    cfg = fast(config_for, "online", min_res_A=40.0)
    s = run_stream(particles, cfg, tmp_path / "m")
    r_min = 32 * 5.0 / 40.0
    high_passed = [
        bool((inv.numpy()[r < r_min] == 0).all()) for inv, r in zip(spy["inv"], spy["radius"])
    ]
    assert not high_passed[0] and high_passed[-1]
    first = high_passed.index(True)
    assert all(high_passed[first:])  # once on, it stays on
    for inv, r in zip(spy["inv"][first:], spy["radius"][first:]):
        assert (inv.numpy()[r >= r_min] > 0).all()
    assert s.state.highpass_on


@pytest.mark.parametrize("policy", POLICIES)
def test_pure_noise_claims_no_resolution(policy, particles, config_for, tmp_path):
    """As in batch: a stream of pure noise (the data set's CTFs, its images replaced by noise)
    ends with every class at 999 Å and the working band where it started."""
    table = particles.table.iloc[:N].reset_index(drop=True)
    table = table.drop(columns=[c for c in table.columns if c.startswith("_")])
    table = table.drop(columns=["rlnImageName"], errors="ignore")
    noise = np.random.default_rng(3).standard_normal((N, 32, 32)).astype(np.float32)
    cfg = fast(config_for, policy)
    with Stream(cfg, tmp_path / "noise", outputs_every_s=1e9) as s:
        for a in range(0, N, 40):
            s.add_particles(
                noise[a : a + 40], table.iloc[a : a + 40].reset_index(drop=True), pixel_size_A=5.0
            )
        res = s.finish()
    assert (res.state.resolution_A.numpy() == 999.0).all()
    assert res.state.r_work <= 32 * 5.0 / cfg.init_res_A + 1e-6
