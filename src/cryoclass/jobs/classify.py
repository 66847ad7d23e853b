"""The batch 2D classification job: read -> set aside bad particles -> classify -> write."""

from __future__ import annotations

import logging

import numpy as np
import time
from pathlib import Path
from typing import Callable

from cryoclass.config import Config
from cryoclass.engine.poses import working_steps
from cryoclass.engine.schedule import ClassificationResult, IterationLog, run_batch
from cryoclass.io import ParticleSet, read_particles
from cryoclass.jobs.duplicates import duplicate_rejects, find_duplicates
from cryoclass.outputs.results import write_results

log = logging.getLogger("cryoclass")


def classify(particles: str | Path | ParticleSet, config: Config, out_dir: str | Path,
             project_dir: str | Path | None = None,
             progress: Callable[[str, int, int, IterationLog | None], None] | None = None,
             ) -> tuple[ClassificationResult, dict[str, Path]]:
    """Classify particles (a STAR/.cs path or a ParticleSet) and write all outputs to out_dir.

    Particles with NaN/Inf or constant images are set aside (listed in rejects.csv), never
    silently dropped. Returns the result and the written paths.
    """
    t0 = time.perf_counter()
    pset = particles if isinstance(particles, ParticleSet) else read_particles(
        particles, project_dir=project_dir)
    pset = pset.scan_images()
    if len(pset) == 0:
        raise ValueError("no usable particles (all were set aside; see rejects)")
    result = run_batch(pset, config, progress)
    if config.remove_duplicates:
        set_aside_duplicates(pset, result, config.min_separation_A)
    res_A = result.state.box * result.state.pixel_size_A / max(result.state.r_work, 1e-6)
    psi_step, shift_step = working_steps(res_A, pset.pixel_size_A, 0.85 * pset.box *
                                         pset.pixel_size_A / 2, config.psi_step_deg,
                                         config.shift_step_px)
    paths = write_results(out_dir, result.state, result.particles, pset.table, config,
                          rejects=pset.rejects, history=[e.__dict__ for e in result.log],
                          accuracy_deg=psi_step, accuracy_A=shift_step * pset.pixel_size_A)
    log.info("classified %d particles in %.1f s", len(pset), time.perf_counter() - t0)
    return result, paths


def micrograph_pixel_size_A(table) -> np.ndarray:
    """Å per pixel of the pick coordinates: the micrograph's pixel size when the table has it,
    else the particles' (coordinates of unbinned extraction)."""
    for col in ("rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize", "rlnImagePixelSize"):
        if col in table.columns:
            return table[col].to_numpy(float)
    return np.ones(len(table))


def set_aside_duplicates(pset: ParticleSet, result: ClassificationResult, min_sep_A: float
                         ) -> None:
    """Move duplicate picks (all but the highest-posterior one of each group) from the result
    into pset.rejects."""
    p = result.particles
    rows = pset.table.iloc[p.index]
    drop, reasons = find_duplicates(rows.reset_index(drop=True), p.max_prob, min_sep_A,
                                    micrograph_pixel_size_A(rows))
    if drop.size == 0:
        return
    pset.rejects.extend(duplicate_rejects(rows.reset_index(drop=True), drop, reasons,
                                         str(pset.source or "")))
    keep = np.setdiff1d(np.arange(p.index.size), drop)
    for f in p.__dataclass_fields__:
        setattr(p, f, getattr(p, f)[keep])
