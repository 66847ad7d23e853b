"""Gallery captions of every row, the last included, lie inside the picture."""

import numpy as np
import pytest

from cryoclass.outputs.montage import montage_figure


@pytest.mark.parametrize("lines", [1, 2, 3])
def test_captions_inside_figure(lines):
    imgs = np.random.default_rng(0).standard_normal((20, 32, 32)).astype(np.float32)
    labels = ["\n".join(f"{i}: line {j}" for j in range(lines)) for i in range(20)]
    fig = montage_figure(imgs, labels, title="20 classes")
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [t for ax in fig.axes for t in ax.texts]
    assert len(texts) == 20
    for t in texts:
        ext = t.get_window_extent(renderer)
        assert ext.y0 >= box.y0 and ext.y1 <= box.y1, (lines, t.get_text(), ext, box)
    # captions do not run into the next row's tiles
    tiles = sorted({round(ax.get_position().y0, 6) for ax in fig.axes}, reverse=True)
    row_tops = sorted({round(ax.get_position().y1, 6) for ax in fig.axes}, reverse=True)
    for t in texts:
        ext = t.get_window_extent(renderer).transformed(fig.transFigure.inverted())
        below = [top for top in row_tops if top < ext.y1 - 1e-6]
        if below:
            assert ext.y0 >= below[0] - 1e-6, (lines, t.get_text())
    assert len(tiles) == 4
