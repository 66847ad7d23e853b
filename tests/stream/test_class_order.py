"""sort_classes off: a streaming job's class numbers stay put between updates, so a person
watching can follow a class; on (the default) the outputs are ordered by particle count."""

from __future__ import annotations

import mrcfile
import numpy as np
import starfile

from cryoclass.stream import Stream


def _run(particles, config, out):
    """Stream 320 particles in chunks of 40, writing outputs after every update; returns one
    (engine class images, written class stack, written class numbers) triple per update."""
    seen = []

    def grab(stream, report):
        with mrcfile.open(out / "classes.mrcs", permissive=True) as m:
            written = m.data.copy()
        star = starfile.read(out / "particles.star", always_dict=True)["particles"]
        seen.append((stream.state.class_images.numpy().copy(), written,
                     star["rlnClassNumber"].to_numpy()))

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
    with Stream(config_for(0, hard_classify_last_iter=True), tmp_path / "hard",
                outputs_every_s=1e9) as s:
        for a in range(0, 320, 40):
            s.add_particles(particles.subset(np.arange(a, a + 40)))
        result = s.finish()
    post = result.particles.posterior
    assert np.all((post == 0) | (post == 1)) and np.all(post.sum(1) == 1)
    members = np.bincount(result.particles.cls, minlength=post.shape[1])
    np.testing.assert_allclose(s.state.stats.weight.sum(0).numpy(), members, atol=1e-3)
