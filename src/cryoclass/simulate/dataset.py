"""Write a simulated data set to disk, micrograph by micrograph.

Layout of ``out_dir`` (the same as the shared benchmark's ``simulate.py``, so its ``evaluate.py``
can score runs on our data too):

=========================  ===================================================================
``Movies/mic_XXXX.mrcs``   one particle stack per micrograph (float32, protein white)
``Movies/mic_XXXX.star``   RELION 3.1 STAR of that micrograph's particles
``particles.star``         all particles (data_optics + data_particles)
``truth.csv``              per particle: particle, image_name, micrograph (1-based), view
                           (0-based), jitter_deg, psi_deg, shift_x/y_px, shift_x/y_A, defocus_u/v,
                           defocus_angle, RELION rot/tilt/psi3d of the full orientation, snr
``views.mrcs``             the clean projection of each view (no CTF, centred, psi = 0), slice v
``views.csv``              view, rot, tilt, dir_x/y/z, weight, n_particles, psi_period
``sim_params.json``        every parameter and derived value (noise sigma, realised SNR, ...)
``particles_preview.png``  some particles, raw and low-passed to 20 Å
``views_preview.png``      the views
=========================  ===================================================================

Image paths: every STAR file (including ``Movies/mic_XXXX.star``) names images as
``000001@Movies/mic_XXXX.mrcs``, relative to ``out_dir``, as RELION does (paths relative to the
project folder, whatever folder the STAR file is in): run programs from ``out_dir``, or give it
as the project folder (``cryoclass.io.read_particles(star, project_dir=out_dir)``); for
``particles.star`` the STAR's own folder is ``out_dir`` anyway.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

import cryoclass
from cryoclass.io import atomic_write, write_stack, write_star
from cryoclass.outputs.montage import save_montage
from cryoclass.quality.transforms import bandpass_images
from cryoclass.simulate.config import SimulationConfig
from cryoclass.simulate.micrographs import Micrograph, Simulation

__all__ = ["simulate_dataset", "SimulationResult", "write_micrograph"]

ProgressFn = Callable[[int, int], None]

CONVENTIONS = (
    "image centre at pixel (D/2, D/2); x = column, y = row; particle = T(shift) R(-psi) "
    "views[view] before CTF and noise, R(a) turning content counter-clockwise by a in (x, y), "
    "T moving it by +shift_x/y_px; RELION: rlnAnglePsi = psi_deg, rlnOriginX/YAngst = -shift_x/y_A; "
    "CTF = sin(pi lambda dz s^2 - pi/2 Cs lambda^3 s^4 + atan(w/sqrt(1-w^2))) (RELION sign), "
    "B-factor envelope exp(-B s^2/4) applied but rlnCtfBfactor written as 0; protein white "
    "unless invert_contrast"
)


@dataclass
class SimulationResult:
    """What :func:`simulate_dataset` wrote (paths) and a few figures about it."""

    out_dir: Path
    particles_star: Path
    truth_csv: Path
    views_mrcs: Path
    params_json: Path
    preview_png: Path
    views_png: Path
    micrograph_stars: list[Path]
    n_particles: int
    n_micrographs: int
    n_views: int
    noise_sigma: float
    snr_realised: float
    seconds: float


def write_micrograph(out_dir: str | PathLike[str], mic: Micrograph, pixel_size_A: float) -> Path:
    """Write one micrograph's stack and STAR (paths relative to ``out_dir``); returns the STAR."""
    root = Path(out_dir)
    (root / mic.stack_path).parent.mkdir(parents=True, exist_ok=True)
    write_stack(root / mic.stack_path, mic.images, pixel_size_A)
    write_star(root / mic.star_path, mic.table)
    return root / mic.star_path


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def _views_table(sim: Simulation) -> pd.DataFrame:
    counts = np.bincount(sim.view_id, minlength=sim.config.n_views)
    d = sim.views.directions
    return pd.DataFrame(
        {
            "view": np.arange(len(d)),
            "rot": np.round(sim.views.rot_tilt[:, 0], 3),
            "tilt": np.round(sim.views.rot_tilt[:, 1], 3),
            "dir_x": np.round(d[:, 0], 5),
            "dir_y": np.round(d[:, 1], 5),
            "dir_z": np.round(d[:, 2], 5),
            "weight": np.round(np.full(len(d), 1.0 / len(d)), 5),
            "n_particles": counts,
            "psi_period": sim.psi_period,
        }
    )


def _params(sim: Simulation, snr_realised: float, seconds: dict, n_mic: int) -> dict:
    cfg = sim.config
    s = sim.views.similarity.copy()
    np.fill_diagonal(s, -np.inf)
    p = cfg.to_dict()
    p.update(
        cryoclass_version=cryoclass.__version__,
        conventions=CONVENTIONS,
        # the benchmark's names for the same values (its evaluate.py / selfcheck.py read these)
        apix=cfg.pixel_size_A,
        voltage_kv=cfg.voltage_kV,
        cs=cfg.cs_mm,
        amplitude_contrast=cfg.amp_contrast,
        bfactor=cfg.bfactor_A2,
        noise_floor=cfg.noise_floor,
        noise_falloff=cfg.noise_falloff_A,
        noise_sigma=sim.noise_sigma,
        snr_realised_mean=snr_realised,
        n_micrographs=n_mic,
        symmetry="C1" if cfg.map_path is None else "unknown",
        min_view_separation_deg=round(sim.views.min_separation_deg, 2),
        max_view_similarity=round(float(s.max()), 4) if len(s) > 1 else None,
        defocus_u_range=[float(sim.defocus_u.min()), float(sim.defocus_u.max())],
        map_info=sim.map_info,
        seconds=seconds,
        protein_contrast="black" if cfg.invert_contrast else "white",
    )
    return p


def _preview(out: Path, images: np.ndarray, apix: float, n: int = 12) -> None:
    """Montage: n raw particles over the same n low-passed to 20 Å."""
    raw = images[:n]
    low = bandpass_images(raw, apix, lowpass_A=20.0).numpy()
    labels = [f"#{i + 1}" for i in range(len(raw))] + [f"#{i + 1} 20 Å" for i in range(len(raw))]
    save_montage(
        np.concatenate([raw, low]),
        out,
        labels=labels,
        ncols=min(len(raw), 6),
        title="particles: raw (top) and low-passed to 20 Å (bottom)",
    )


def simulate_dataset(
    out_dir: str | PathLike[str],
    n_particles: int = 2000,
    box: int = 64,
    pixel_size_A: float = 3.0,
    n_views: int = 12,
    snr: float = 0.05,
    membrane: bool = False,
    belt_density: float = 0.4,
    map_path: str | PathLike[str] | None = None,
    particles_per_micrograph: int | tuple[int, int] = (100, 300),
    seed: int = 0,
    invert_contrast: bool = False,
    progress: ProgressFn | None = None,
    ctf: bool = True,
    **options,
) -> SimulationResult:
    """Simulate a particle data set with ground truth and write it to ``out_dir``.

    Args:
        out_dir: output folder (created; existing files of the same names are replaced).
        n_particles: number of particles.
        box: image size in pixels (even).
        pixel_size_A: pixel size in Å.
        n_views: number of distinct view directions.
        snr: signal variance inside the particle mask / noise variance (``math.inf``: no noise).
        membrane: add a micelle-like belt around the transmembrane region.
        belt_density: belt density as a fraction of the protein's peak.
        map_path: MRC map to project instead of the built-in phantom.
        particles_per_micrograph: an int, or a (min, max) range.
        seed: random seed; the same seed gives the same data set.
        invert_contrast: write protein black (negated images) instead of white.
        progress: called as ``progress(particles_done, n_particles)`` after each micrograph.
        ctf: apply the CTF (False: CTF-free images; the STAR still lists the drawn defoci).
        **options: any other :class:`SimulationConfig` field (e.g. ``jitter_deg``,
            ``ice_fraction``, ``defocus_range_um``).

    Returns:
        :class:`SimulationResult` (paths and summary figures).
    """
    t0 = time.perf_counter()
    cfg = SimulationConfig(
        n_particles=n_particles,
        box=box,
        pixel_size_A=pixel_size_A,
        n_views=n_views,
        snr=snr,
        membrane=membrane,
        belt_density=belt_density,
        map_path=str(map_path) if map_path else None,
        particles_per_micrograph=particles_per_micrograph,
        seed=seed,
        invert_contrast=invert_contrast,
        ctf=ctf,
        **options,
    )
    root = Path(out_dir)
    (root / "Movies").mkdir(parents=True, exist_ok=True)
    sim = Simulation(cfg)
    t_setup = time.perf_counter()
    tables, truths, stars = [], [], []
    first: np.ndarray | None = None
    done = 0
    for mic in sim:
        stars.append(write_micrograph(root, mic, cfg.pixel_size_A))
        tables.append(mic.table)
        truths.append(mic.truth)
        if first is None:
            first = mic.images[:12].copy()
        done += len(mic.table)
        if progress is not None:
            progress(done, cfg.n_particles)
    t_parts = time.perf_counter()
    truth = pd.concat(truths, ignore_index=True)
    write_star(root / "particles.star", pd.concat(tables, ignore_index=True))
    _write_text(root / "truth.csv", truth.to_csv(index=False))
    write_stack(root / "views.mrcs", sim.views.images.astype(np.float32), cfg.pixel_size_A)
    _write_text(root / "views.csv", _views_table(sim).to_csv(index=False))
    assert first is not None
    _preview(root / "particles_preview.png", first, cfg.pixel_size_A)
    save_montage(
        sim.views.images,
        root / "views_preview.png",
        labels=[f"view {v}" for v in range(cfg.n_views)],
        title="views (clean, psi = 0)",
    )
    snr_real = float(truth["snr"].mean()) if sim.noise_sigma > 0 else math.inf
    t_end = time.perf_counter()
    seconds = dict(
        setup=round(t_setup - t0, 2),
        particles=round(t_parts - t_setup, 2),
        outputs=round(t_end - t_parts, 2),
        total=round(t_end - t0, 2),
    )
    params = _params(sim, snr_real if math.isfinite(snr_real) else "inf", seconds, len(stars))
    _write_text(root / "sim_params.json", json.dumps(params, indent=1, default=float) + "\n")
    return SimulationResult(
        out_dir=root,
        particles_star=root / "particles.star",
        truth_csv=root / "truth.csv",
        views_mrcs=root / "views.mrcs",
        params_json=root / "sim_params.json",
        preview_png=root / "particles_preview.png",
        views_png=root / "views_preview.png",
        micrograph_stars=stars,
        n_particles=cfg.n_particles,
        n_micrographs=len(stars),
        n_views=cfg.n_views,
        noise_sigma=sim.noise_sigma,
        snr_realised=snr_real,
        seconds=seconds["total"],
    )
