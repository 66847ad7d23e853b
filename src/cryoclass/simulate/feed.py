"""A simulated preprocessing pipeline: writes a simulated data set micrograph by micrograph at a
given rate, as RELION would: each micrograph's stack first, then its STAR, and at the very end
``truth.csv`` and the done marker. ``views.mrcs`` (the true views) is written first, so the data
can be scored (``cryoclass.quality.truth.score_against_truth``) while it streams."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoclass.io import atomic_write, write_stack, write_star
from cryoclass.job_options import JOB
from cryoclass.simulate import Simulation, SimulationConfig


@dataclass
class FeedResult:
    """What was written: folder, particles, micrographs, seconds taken."""

    out_dir: Path
    n_particles: int
    n_micrographs: int
    seconds: float


def feed_simulation(
    out_dir: str | Path,
    config: SimulationConfig,
    rate: float,
    done_marker: str = JOB.done_marker,
    progress: Callable[[int, int], None] | None = None,
) -> FeedResult:
    """Write ``config``'s data set into out_dir at ``rate`` particles per second (micrograph k is
    written when its last particle is due; inf = as fast as possible). Layout as
    ``simulate_dataset`` (Movies/mic_XXXX.mrcs + .star, paths relative to out_dir), without the
    combined particles.star. progress(done, total) after each micrograph."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0 particles/s, got {rate}")
    root = Path(out_dir)
    (root / "Movies").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sim = Simulation(config)
    write_stack(root / "views.mrcs", sim.views.images.astype(np.float32), config.pixel_size_A)
    start = time.monotonic()
    truths = []
    done = 0
    for k in range(sim.n_micrographs):
        mic = sim.micrograph(k)
        done += len(mic.table)
        wait = start + done / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        write_stack(root / mic.stack_path, mic.images, config.pixel_size_A)
        write_star(root / mic.star_path, mic.table)
        truths.append(mic.truth)
        if progress is not None:
            progress(done, config.n_particles)
    with atomic_write(root / "truth.csv") as fh:
        fh.write(pd.concat(truths, ignore_index=True).to_csv(index=False))
    if done_marker:
        with atomic_write(root / done_marker) as fh:
            fh.write(f"{done} particles in {sim.n_micrographs} micrographs\n")
    return FeedResult(root, done, sim.n_micrographs, time.monotonic() - t0)
