"""The built-in demo: simulate a small data set of the built-in membrane-protein-like phantom
(realistic CTF and defocus spread, coloured noise) and classify it, scoring the result against
the truth. The belt-free phantom at SNR 0.2 is used: with its micelle belt, or at SNR 0.05, this
small particle is not yet classified reliably (see the README's status section)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import starfile

from cryoclass.config import Config
from cryoclass.jobs.classify import classify
from cryoclass.quality.truth import score_against_truth
from cryoclass.simulate import simulate_dataset

DEMO_BOX = 64
DEMO_APIX = 2.0
DEMO_SNR = 0.2


def demo_config(n_classes: int, seed: int) -> Config:
    """Settings for the demo's small box: the defaults, at 8 Å (Nyquist is 4 Å)."""
    return Config(n_classes=n_classes, max_res_A=8.0, seed=seed)


def run_demo(
    out_dir: str | Path,
    n_particles: int = 2000,
    n_classes: int = 10,
    n_views: int = 6,
    seed: int = 0,
    progress: Callable | None = None,
) -> dict:
    """Simulate into out_dir/data, classify into out_dir/classify; returns a summary dict."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    sim = simulate_dataset(
        out / "data",
        n_particles=n_particles,
        box=DEMO_BOX,
        pixel_size_A=DEMO_APIX,
        n_views=n_views,
        snr=DEMO_SNR,
        membrane=False,
        seed=seed,
    )
    t_sim = time.perf_counter() - t0
    cfg = demo_config(n_classes, seed)
    paths = classify(sim.particles_star, cfg, out / "classify", progress=progress).paths
    t_cls = time.perf_counter() - t0 - t_sim
    parts = starfile.read(paths["particles_star"])["particles"]
    import mrcfile

    score = score_against_truth(out / "data", parts, mrcfile.read(paths["classes"]), DEMO_APIX)
    return {
        "particles": sim.n_particles,
        "simulated in (s)": round(t_sim, 1),
        "classified in (s)": round(t_cls, 1),
        "ARI vs true views": round(score.ari, 3),
        "views recovered": f"{score.views_recovered}/{score.n_views}",
        "psi consistency": round(score.psi_R, 3),
        "particle preview": sim.preview_png,
        "class gallery": paths["gallery"],
        "particles STAR": paths["particles_star"],
    }
