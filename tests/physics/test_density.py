import torch

from cryoclass.physics.density import nonnegative_density


def _averages() -> torch.Tensor:
    """(3, 16, 16): a positive blob per class plus noise of both signs."""
    g = torch.Generator().manual_seed(0)
    c = torch.arange(16.0) - 8
    blob = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / 8.0)
    return 2.0 * blob + 0.3 * torch.randn(3, 16, 16, generator=g)


def test_density_of_the_other_sign_is_set_to_zero():
    imgs = _averages()
    assert float(imgs.min()) < -0.5
    out = nonnegative_density(imgs)
    assert float(out.min()) == 0.0
    keep = imgs > 0
    torch.testing.assert_close(out[keep], imgs[keep])


def test_a_dark_class_is_clamped_the_other_way_not_erased():
    # dark protein throughout, or a class of ice or contaminants among white particles
    imgs = _averages()
    imgs[1] = -imgs[1]
    out = nonnegative_density(imgs)
    assert float(out[[0, 2]].min()) == 0.0
    assert float(out[1].max()) == 0.0
    assert float(out[1].min()) < -1.5
    dark = imgs[1] < 0
    torch.testing.assert_close(out[1][dark], imgs[1][dark])
