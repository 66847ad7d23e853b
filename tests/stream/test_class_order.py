"""sort_classes off: a streaming job's class numbers stay put between updates, so a person
watching can follow a class; on (the default) the outputs are ordered by particle count."""

from __future__ import annotations

import mrcfile
import numpy as np
import starfile

from cryoclass.outputs.recentre import centre_images
from cryoclass.stream import Stream


def _run(particles, config, out):
    """Stream 320 particles in chunks of 40, writing outputs after every update; returns one
    (engine class images, written class stack, written class numbers) triple per update."""
    seen = []

    def grab(stream, report):
        with mrcfile.open(out / "classes.mrcs", permissive=True) as m:
            written = m.data.copy()
        star = starfile.read(out / "particles.star", always_dict=True)["particles"]
        # recenter (default on) moves each written class with signal onto its centre of mass
        engine, _ = centre_images(stream.state.class_images, stream.config.recenter_threshold)
        noise = (stream.state.resolution_A >= 999.0).numpy()
        engine[noise] = stream.state.class_images.numpy()[noise]
        seen.append((engine, written, star["rlnClassNumber"].to_numpy()))

    with Stream(config, out, outputs_every_s=0.0, on_update=grab) as s:
        for a in range(0, 320, 40):
            s.add_particles(particles.subset(np.arange(a, a + 40)))
        s.finish()
    return seen


def test_unsorted_stream_keeps_each_class_number(particles, config_for, tmp_path):
    seen = _run(particles, config_for(0, sort_classes=False), tmp_path / "unsorted")
    assert len(seen) >= 5
    for engine_images, written, _ in seen:
        # output class k is engine class k at every update: never renumbered
        np.testing.assert_allclose(written, engine_images, atol=1e-5)


def test_sorted_stream_orders_classes_by_count(particles, config_for, tmp_path):
    seen = _run(particles, config_for(0), tmp_path / "sorted")
    for _, _, numbers in seen[2:]:
        counts = np.bincount(numbers)[1:]
        assert list(counts) == sorted(counts, reverse=True)


def test_hard_last_iteration_in_streaming(particles, config_for, tmp_path):
    # hard_classify_last_iter acts in streaming as in batch: the final pass is one-hot, and each
    # class's statistics hold its members with weight exactly 1.
    with Stream(
        config_for(0, hard_classify_last_iter=True), tmp_path / "hard", outputs_every_s=1e9
    ) as s:
        for a in range(0, 320, 40):
            s.add_particles(particles.subset(np.arange(a, a + 40)))
        result = s.finish()
    post = result.particles.posterior
    assert np.all((post == 0) | (post == 1)) and np.all(post.sum(1) == 1)
    members = np.bincount(result.particles.cls, minlength=post.shape[1])
    np.testing.assert_allclose(s.state.stats.weight.sum(0).numpy(), members, atol=1e-3)


def test_duplicate_picks_are_set_aside_in_streaming(particles, config_for, tmp_path):
    # Picks on a 150 Å lattice per micrograph; 6 extra particles are placed a few Å from 6 of
    # them. The stream's outputs list exactly one of each pair (the lower posterior) in rejects.
    import pandas as pd

    n, extra = 160, 6
    sub = particles.subset(np.arange(n + extra))
    table = sub.table.copy()
    slot = np.arange(n) % 40
    table["rlnMicrographName"] = [f"mic{i // 40}.mrc" for i in range(n)] + [
        f"mic{i // 40}.mrc" for i in range(0, 6 * 25, 25)
    ]
    x = np.concatenate([(slot % 8) * 150.0, ((np.arange(0, 150, 25) % 40) % 8) * 150.0 + 4.0])
    y = np.concatenate([(slot // 8) * 150.0, ((np.arange(0, 150, 25) % 40) // 8) * 150.0])
    table["rlnCoordinateX"], table["rlnCoordinateY"] = x / _apix(table), y / _apix(table)
    table["truth_row"] = np.arange(n + extra)
    out = tmp_path / "dups"
    with Stream(config_for(0), out, outputs_every_s=1e9) as s:
        s.add_particles(
            sub.images(np.arange(n + extra)),
            table.drop(columns=[c for c in table.columns if c.startswith("_")]),
            pixel_size_A=_apix(table),
        )
        result = s.finish()
    row_of = dict(zip(result.table["rlnImageName"], result.table["truth_row"]))
    rejects = pd.read_csv(out / "rejects.csv")
    dup = {
        row_of[name]
        for name in rejects.loc[rejects["reason"].str.contains("duplicate pick"), "image_name"]
    }
    star = starfile.read(out / "particles.star", always_dict=True)["particles"]
    kept = {row_of[name] for name in star["rlnImageName"]}
    assert len(dup) == extra and len(kept) == n and not dup & kept
    # the set-aside copy of each pair is the one with the lower posterior
    prob = dict(
        zip(result.table["truth_row"].to_numpy()[result.particles.index], result.particles.max_prob)
    )
    for a, b in zip(range(0, 150, 25), range(n, n + extra)):
        assert (b if prob[b] <= prob[a] else a) in dup  # a tie keeps the first


def _apix(table) -> float:
    return float(table["rlnImagePixelSize"].iloc[0])
