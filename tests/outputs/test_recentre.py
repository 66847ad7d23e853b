"""Re-centring the written classes: each class moves onto its centre of mass and every particle's
pose changes to match, so the written classes and origins model the particles exactly as the
engine's did."""

from __future__ import annotations

import numpy as np
import torch

from cryoclass.engine.particle_result import ParticleResult
from cryoclass.outputs.recentre import centre_images, centred_poses
from cryoclass.physics.masks import density_centre
from cryoclass.quality.transforms import rotate_images, shift_images

D = 48


def _blob_image(cx: float, cy: float) -> torch.Tensor:
    """An asymmetric object (two Gaussians) with its bigger part near (cx, cy) px off centre."""
    y, x = torch.meshgrid(torch.arange(D) - D // 2, torch.arange(D) - D // 2, indexing="ij")
    big = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 4.0**2))
    small = 0.5 * torch.exp(-((x - cx - 7) ** 2 + (y - cy + 2) ** 2) / (2 * 2.0**2))
    return (big + small).float()


def _result(cls, psi, tx, ty) -> ParticleResult:
    n = len(cls)
    z = np.zeros(n)
    return ParticleResult(
        index=np.arange(n),
        cls=np.asarray(cls),
        psi_deg=np.asarray(psi, float),
        tx=np.asarray(tx, float),
        ty=np.asarray(ty, float),
        max_prob=z + 1,
        n_significant=z + 1,
        log_likelihood=z,
        posterior=np.ones((n, 2)),
    )


def test_written_classes_and_poses_model_the_same_particles():
    classes = torch.stack([_blob_image(6.0, -4.0), _blob_image(-3.0, 5.0)])
    res = _result(
        [0, 1, 0, 1], [30.0, 200.0, 300.0, 75.0], [1.5, -2.0, 0.0, 3.0], [-1.0, 2.5, 2.0, 0.0]
    )
    # each particle as the engine models it: its class turned by -psi, then moved by +t
    particles = torch.stack(
        [
            shift_images(rotate_images(classes[c], -p), (x, y))
            for c, p, x, y in zip(res.cls, res.psi_deg, res.tx, res.ty)
        ]
    )
    moved, m = centre_images(classes, threshold=0.2)
    assert np.all(np.hypot(m[:, 0], m[:, 1]) > 4.0)  # they really were off centre
    np.testing.assert_allclose(density_centre(torch.as_tensor(moved), 0.2).numpy(), 0, atol=0.05)
    new = centred_poses(res, m)
    again = torch.stack(
        [
            shift_images(rotate_images(torch.as_tensor(moved[c]), -p), (x, y))
            for c, p, x, y in zip(new.cls, new.psi_deg, new.tx, new.ty)
        ]
    )
    err = float((again - particles).abs().max() / particles.abs().max())
    assert err < 0.02, f"re-centred classes and poses model the particles {err:.1%} off"
    np.testing.assert_array_equal(new.cls, res.cls)
    np.testing.assert_array_equal(new.psi_deg, res.psi_deg)


def test_moving_never_wraps_density_round_the_box():
    img = torch.zeros(1, D, D)
    img[0, D // 2 - 2 : D // 2 + 3, 2:8] = 1.0  # density near the left edge
    img[0, D // 2 - 2 : D // 2 + 3, 40:46] = 0.2  # a weak part near the right edge
    moved, m = centre_images(img, threshold=0.5)  # only the strong part counts: moves right
    assert m[0, 0] < -15
    assert moved[0, D // 2, D // 2] > 0.9  # the strong part is at the centre now
    # the weak part left the box on the right; a periodic shift would bring it (0.2) in on the
    # left. What is left there is the sub-pixel shift's ringing of these hard edges.
    assert np.abs(moved[0, :, :18]).max() < 0.05


def test_classes_without_signal_stay_where_they_are():
    """A noise class's centre of mass is a noise blob: classes whose resolution shows no signal
    (999 Å) are neither moved nor have their particles' origins changed."""
    from cryoclass.outputs.recentre import centred_classes

    classes = torch.stack([_blob_image(6.0, -4.0), _blob_image(-3.0, 5.0)])
    res = _result([0, 1], [30.0, 200.0], [1.5, -2.0], [-1.0, 2.5])
    moved, new = centred_classes(classes, res, 0.2, has_signal=np.array([True, False]))
    assert np.abs(density_centre(torch.as_tensor(moved[:1]), 0.2).numpy()).max() < 0.05
    np.testing.assert_array_equal(moved[1], classes[1].numpy())
    assert (new.tx[1], new.ty[1]) == (res.tx[1], res.ty[1])
    assert new.tx[0] != res.tx[0]
