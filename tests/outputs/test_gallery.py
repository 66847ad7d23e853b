"""The PNG gallery: a class without particles is drawn flat, whatever its average holds."""

import numpy as np

from cryoclass.outputs import results
from cryoclass.outputs.results import ClassSummary, write_gallery


def test_class_without_particles_is_drawn_flat(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(results, "save_montage", lambda images, path, **kw: drawn.update(i=images))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, 16, 16)).astype(np.float32) + 1.0
    summary = ClassSummary(
        order=np.arange(3), counts=np.array([5, 2, 0]), resolution_A=np.array([12.0, 20.0, 999.0])
    )
    write_gallery(tmp_path / "g.png", images, summary, "t")
    assert np.array_equal(drawn["i"][:2], images[:2])
    assert np.all(drawn["i"][2] == 0)
