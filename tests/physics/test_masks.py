"""Masks: the class averages' background level is removed before masking."""

import torch

from cryoclass.physics.masks import mask_outside_background, soft_circular_mask


def _disc(box: int, radius: float) -> torch.Tensor:
    c = torch.arange(box, dtype=torch.float32) - box // 2
    return ((c[:, None] ** 2 + c[None, :] ** 2) <= radius**2).float()


def test_the_background_level_is_subtracted_before_masking():
    box = 48
    mask = soft_circular_mask(box, 36.0)
    particle = _disc(box, 10.0)
    halo = 0.3 * torch.ones(box, box)  # a level that runs past the mask edge
    imgs = torch.stack([particle + halo, 2.0 * particle - 0.5])
    out = mask_outside_background(imgs, mask)
    torch.testing.assert_close(out[0], particle * mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], 2.0 * particle * mask, atol=1e-5, rtol=0)
    # masked plainly, the level stays inside the mask and ends in a ring at its edge
    assert float((imgs[0] * mask - particle * mask).abs().max()) > 0.29


def test_a_level_alone_masks_to_nothing_and_leading_axes_are_kept():
    box = 32
    mask = soft_circular_mask(box, 24.0)
    imgs = torch.full((2, 3, box, box), 1.7)
    out = mask_outside_background(imgs, mask)
    assert out.shape == imgs.shape
    assert float(out.abs().max()) < 1e-5
