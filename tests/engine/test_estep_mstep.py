"""E-step finds the true pose and class; M-step rebuilds the class; both on noise-free data."""

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.em import Engine
from cryoclass.engine.estep import score_best_poses, score_coarse_to_fine
from cryoclass.engine.mstep import Assignments, Statistics, accumulate, wiener_averages
from cryoclass.engine.poses import psi_grid, shift_grid
from cryoclass.engine.references import rotated_references
from cryoclass.engine.schedule import load_batch
from cryoclass.physics.fourier import band_to_image, make_band, rfft_band

from .conftest import APIX, BOX, make_set, render


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
    for search in ("exhaustive", "coarse_to_fine"):
        if search == "exhaustive":
            best, rot, shf = score_best_poses(X, ctf, inv, refs, shifts, band)
        else:
            best, rot, shf = score_coarse_to_fine(X, ctf, inv, refs, shifts, 1.0, band)
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
    n = len(src)
    f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    pairs = Assignments(row=torch.arange(n), cls=torch.as_tensor(truth["cls"]),
                        psi_deg=f(truth["psi"]), tx=f(truth["tx"]), ty=f(truth["ty"]),
                        weight=torch.ones(n), rot=torch.zeros(n, dtype=torch.long),
                        shift=torch.zeros(n, dtype=torch.long))
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
