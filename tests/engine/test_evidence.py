"""Signal evidence (engine/evidence.py): zero mean for noise whatever the references look like,
positive where particles hold the references' signal; the resolution it supports."""

import numpy as np
import torch

from cryoclass.engine.estep import shifted_reference_matrix
from cryoclass.engine.evidence import best_cross_by_shell, significant_resolution
from cryoclass.engine.poses import psi_grid, shift_grid
from cryoclass.engine.references import rotated_references
from cryoclass.physics.fourier import make_band, rfft_band, shift_phase

from .conftest import BOX, render


def _evidence(particles: torch.Tensor, classes: torch.Tensor, r: float = 10.0) -> torch.Tensor:
    """(n_shells,) evidence summed over the particles (all classes together)."""
    band = make_band(BOX, r, r_lo=0.5)
    psi = psi_grid(15.0, "cpu")
    shifts = shift_grid(2.0, 1.0, "cpu")
    refs = rotated_references(classes, band, psi)
    matrix = shifted_reference_matrix(refs, shifts, band, torch.float32)
    X = rfft_band(particles, band)
    ctf = torch.ones_like(X.real)
    inv = torch.ones(band.size)
    n_shells = BOX // 2 + 1
    cls, cls_c, cross, cross_c = best_cross_by_shell(
        X, ctf, inv, refs, matrix, shifts, band, n_shells
    )
    assert cls.shape == cls_c.shape == (particles.shape[0],)
    return cross.sum(0) - cross_c.sum(0), (cross**2).sum(0) + (cross_c**2).sum(0)


def test_noise_has_no_evidence_however_structured_the_references():
    gen = torch.Generator().manual_seed(0)
    z = np.zeros(3)
    classes = render(np.arange(3), z, z, z)  # structured references ...
    noise = torch.randn(600, BOX, BOX, generator=gen)  # ... and particles of pure noise
    ev, ev2 = _evidence(noise, classes)
    zs = ev[1:11] / ev2[1:11].sqrt()
    assert zs.abs().max() < 3.5  # within noise at every shell
    assert int(significant_resolution(ev[None], ev2[None], 10.0)[0]) == 0


def test_particles_with_the_signal_have_evidence():
    gen = torch.Generator().manual_seed(1)
    z = np.zeros(3)
    classes = render(np.arange(3), z, z, z)
    cls = torch.randint(0, 3, (200,), generator=gen).numpy()
    particles = render(cls, *(np.zeros(200),) * 3)
    particles = particles + 1.0 * torch.randn(200, BOX, BOX, generator=gen)
    ev, ev2 = _evidence(particles, classes)
    zs = ev / ev2.clamp_min(1e-30).sqrt()
    assert (zs[1:3] > 10).all() and zs[3] > 3
    assert int(significant_resolution(ev[None], ev2[None], 10.0)[0]) >= 3


def test_the_best_poses_of_particle_and_control_are_those_of_a_brute_force_search():
    """Each particle's best (class, rotation, shift) by 2 cross - norm, and its sign-flipped
    control's by -2 cross - norm, over every pose, with the cross terms of those poses."""
    gen = torch.Generator().manual_seed(2)
    band = make_band(BOX, 8.0, r_lo=0.5)
    psi = psi_grid(30.0, "cpu")
    shifts = shift_grid(2.0, 1.0, "cpu")
    z = np.zeros(3)
    refs = rotated_references(render(np.arange(3), z, z, z), band, psi)  # (K, R, F)
    matrix = shifted_reference_matrix(refs, shifts, band, torch.float32)
    cls = torch.randint(0, 3, (40,), generator=gen).numpy()
    z40 = np.zeros(40)
    X = rfft_band(render(cls, z40, z40, z40), band)
    X = X + rfft_band(2.0 * torch.randn(40, BOX, BOX, generator=gen), band)
    ctf = 0.5 + torch.rand(40, band.size, generator=gen)
    inv = 0.5 + torch.rand(band.size, generator=gen)
    n_shells = BOX // 2 + 1
    got = best_cross_by_shell(X, ctf, inv, refs, matrix, shifts, band, n_shells, chunk=16)

    phases = shift_phase(band.kx[None], band.ky[None], shifts[:, :1], shifts[:, 1:], band.box)
    moved = refs[:, :, None, :] * phases[None, None]  # (K, R, S, F)
    cross = torch.einsum("nf,krsf->nkrs", (X * ctf * inv).conj(), moved).real
    norm = torch.einsum("nf,krf->nkr", ctf**2 * inv, refs.real**2 + refs.imag**2)
    k, r, s = moved.shape[:3]
    for sign, want_cls, want_cross in ((1.0, got[0], got[2]), (-1.0, got[1], got[3])):
        score = (2.0 * sign * cross - norm[..., None]).reshape(40, -1)
        best = score.argmax(1)
        assert torch.equal(want_cls, best // (r * s))
        expect = sign * cross.reshape(40, -1)[torch.arange(40), best]
        assert torch.allclose(want_cross.sum(1), expect, rtol=1e-4, atol=1e-3)


def test_significant_resolution_needs_two_adjacent_shells():
    ev = torch.tensor(
        [
            [0.0, 10, 10, 10, 0, 10, 0, 0],  # shells 1-3, then a lone shell 5
            [0.0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    ev2 = torch.ones_like(ev)
    out = significant_resolution(ev, ev2, r_max=7.0)
    assert out.tolist() == [3, 0]
    assert significant_resolution(ev, ev2, r_max=2.0).tolist() == [2, 0]  # within the band
