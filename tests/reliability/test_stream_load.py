"""A scaled-down load test of streaming (the full one is benchmarks/stream_load.py): a few thousand
particles arriving in many small files are all classified exactly once, none lost, and the memory
the stream keeps grows only by per-particle metadata, never by the images (bounded by the
minibatch, whatever the number of particles)."""

from __future__ import annotations

import gc
import tracemalloc
import warnings

import numpy as np
import pytest
import starfile

from cryoclass.config import Config
from cryoclass.io import read_particles
from cryoclass.simulate import simulate_dataset
from cryoclass.stream import Stream, read_events

N, PER_FILE, BOX = 2400, 40, 48
#: Bytes the stream may keep per particle (its table row, ledger key, assignment and posterior);
#: one image alone is BOX * BOX * 4 = 9,216 bytes.
MAX_BYTES_PER_PARTICLE = 3000


@pytest.fixture(scope="module")
def arrivals(tmp_path_factory) -> list:
    """2,400 particles as 60 micrographs (files) of 40."""
    out = tmp_path_factory.mktemp("load")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            out,
            n_particles=N,
            box=BOX,
            pixel_size_A=4.0,
            n_views=4,
            snr=1.0,
            particles_per_micrograph=PER_FILE,
            seed=6,
        )
    return [read_particles(p, project_dir=out) for p in sorted((out / "Movies").glob("*.star"))]


@pytest.mark.slow
def test_many_small_files_all_classified_once_with_bounded_memory(arrivals, tmp_path):
    cfg = Config(
        n_classes=4,
        max_res_A=12,
        batch_size_per_class=50,
        n_online_em_iters=6,
        n_full_iters=1,
        device="cpu",
        remove_duplicates=False,
    )
    out = tmp_path / "live"
    retained = []
    tracemalloc.start()
    try:
        with Stream(cfg, out, outputs_every_s=3600) as s:
            for k, pset in enumerate(arrivals):
                s.add_particles(pset)
                if k in (len(arrivals) // 4, len(arrivals) - 1):
                    gc.collect()
                    retained.append((s.n_ingested, tracemalloc.get_traced_memory()[0]))
            result = s.finish()
    finally:
        tracemalloc.stop()
    # nothing lost, nothing twice
    assert len(arrivals) == N // PER_FILE
    assert result.particles.index.size == N and not result.rejects
    parts = starfile.read(out / "particles.star")["particles"]
    assert len(parts) == N and parts["rlnImageName"].is_unique
    ev = read_events(out / "events.jsonl")
    assert sum(e["n_new_ingested"] for e in ev) == N
    assert sum(e.get("n_new", 0) for e in ev) == N
    lat = [e["latency_s"]["max"] for e in ev if e.get("latency_s")]
    assert lat and all(np.isfinite(lat))
    # memory: what the stream keeps grows by metadata per particle, not by images
    (n1, m1), (n2, m2) = retained
    per_particle = (m2 - m1) / (n2 - n1)
    assert per_particle < MAX_BYTES_PER_PARTICLE, f"{per_particle:.0f} bytes kept per particle"
    print(f"\nkept {per_particle:.0f} bytes per particle (an image is {BOX * BOX * 4} bytes)")
