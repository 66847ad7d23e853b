"""Signal evidence (engine/evidence.py): zero mean for noise whatever the references look like,
positive where particles hold the references' signal; the resolution it supports."""

import numpy as np
import torch

from cryoclass.engine.estep import shifted_reference_matrix
from cryoclass.engine.evidence import (
    accumulate_evidence,
    best_cross_by_shell,
    evidence_z,
    significant_resolution,
)
from cryoclass.engine.poses import psi_grid, shift_grid
from cryoclass.engine.references import rotated_references
from cryoclass.physics.fourier import make_band, rfft_band, shift_phase

from .conftest import BOX, render


def _evidence(
    particles: torch.Tensor, classes: torch.Tensor, r: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class sums (evidence (K, 2, n_shells), evidence_sq, evidence_n (K, 2)) of the
    particles' and their controls' best cross terms, as ``Engine`` accumulates them."""
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
    k = classes.shape[0]
    ev, ev2 = torch.zeros(k, 2, n_shells), torch.zeros(k, 2, n_shells)
    n = torch.zeros(k, 2)
    accumulate_evidence(ev, ev2, n, cls, cls_c, cross, cross_c)
    return ev, ev2, n


def test_noise_has_no_evidence_however_structured_the_references():
    gen = torch.Generator().manual_seed(0)
    z = np.zeros(3)
    classes = render(np.arange(3), z, z, z)  # structured references ...
    noise = torch.randn(600, BOX, BOX, generator=gen)  # ... and particles of pure noise
    ev, ev2, n = _evidence(noise, classes)
    # summed over classes: particles and controls alike
    total = (ev[:, 0] - ev[:, 1]).sum(0)[1:11] / ev2.sum((0, 1))[1:11].sqrt()
    assert total.abs().max() < 3.5
    for zs in evidence_z(ev, ev2, n):  # summed and mean
        assert zs[:, 1:11].abs().max() < 3.5  # within noise in every class and shell
    assert significant_resolution(ev, ev2, n, 10.0).reported.tolist() == [0, 0, 0]
    pooled = [t.sum(0, keepdim=True) for t in (ev, ev2, n)]  # all classes as one
    assert significant_resolution(*pooled, 10.0).reported.tolist() == [0]


def test_particles_with_the_signal_have_evidence():
    gen = torch.Generator().manual_seed(1)
    z = np.zeros(3)
    classes = render(np.arange(3), z, z, z)
    cls = torch.randint(0, 3, (200,), generator=gen).numpy()
    particles = render(cls, *(np.zeros(200),) * 3)
    particles = particles + 1.0 * torch.randn(200, BOX, BOX, generator=gen)
    ev, ev2, n = _evidence(particles, classes)
    zs = (ev[:, 0] - ev[:, 1]).sum(0) / ev2.sum((0, 1)).clamp_min(1e-30).sqrt()  # all classes
    assert (zs[1:3] > 10).all() and zs[3] > 3
    z_sum, _ = evidence_z(ev, ev2, n)
    assert (z_sum[:, 1:3] > 5).all()  # each class of ~67 particles
    assert (significant_resolution(ev, ev2, n, 10.0).reported >= 2).all()
    pooled = [t.sum(0, keepdim=True) for t in (ev, ev2, n)]  # all classes as one
    assert int(significant_resolution(*pooled, 10.0).reported[0]) >= 3


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


def _sums(means: list[list[float]], n: float, sd: float = 1.0) -> tuple[torch.Tensor, ...]:
    """Per-class sums of n particles with these mean cross terms per shell (sd sd each) and n
    controls of mean 0 (sd sd), as ``evidence_z`` takes them."""
    m = torch.tensor(means)
    k, s = m.shape
    ev = torch.stack([n * m, torch.zeros(k, s)], 1)
    ev2 = torch.stack([n * (m**2 + sd**2), torch.full((k, s), n * sd**2)], 1)
    return ev, ev2, torch.full((k, 2), float(n))


def test_significant_resolution_needs_two_adjacent_shells():
    ev, ev2, n = _sums(
        [
            [0.0, 10, 10, 10, 0, 10, 0, 0],  # shells 1-3, then a lone shell 5
            [0.0, 0, 0, 0, 0, 0, 0, 0],
        ],
        n=25.0,
    )
    out = significant_resolution(ev, ev2, n, r_max=7.0).reported
    assert out.tolist() == [3, 0]
    within_band = significant_resolution(ev, ev2, n, r_max=2.0).reported
    assert within_band.tolist() == [2, 0]


def test_a_class_that_many_controls_pick_keeps_its_evidence():
    """The controls of real particles crowd into the classes that best fit a negated particle.
    Summed, a class that draws five times as many controls as particles looks like anti-signal;
    the mean test judges it by its particles' excess over its controls, not by their number,
    and finds none where the means are equal."""
    shells = 6
    ev = torch.zeros(2, 2, shells)
    ev2 = torch.zeros(2, 2, shells)
    n = torch.tensor([[100.0, 500.0], [100.0, 10.0]])
    for c in range(2):
        ev[c, 0] = 3.0 * n[c, 0]  # particles: mean cross 3 at every shell
        ev[c, 1] = 1.0 * n[c, 1]  # controls: mean 1
        ev2[c, 0] = n[c, 0] * (9.0 + 1.0)  # sd 1
        ev2[c, 1] = n[c, 1] * (1.0 + 1.0)
    z_sum, z = evidence_z(ev, ev2, n)
    assert (z_sum[0] < 0).all()  # summed, class 0 looks like anti-signal
    assert (z[:, 1:] > 5).all()
    assert (significant_resolution(ev, ev2, n, r_max=5.0).reported == 5).all()
    # the references' resolution (the summed test alone) leaves class 0 without signal
    assert significant_resolution(ev, ev2, n, r_max=5.0).summed.tolist() == [0, 5]
    ev[:, 0] = n[:, :1] * 1.0  # particles no better than the controls
    ev2[:, 0] = n[:, :1] * 2.0
    assert evidence_z(ev, ev2, n)[1].abs().max() < 1.0
    assert significant_resolution(ev, ev2, n, r_max=5.0).reported[0] == 0


def test_a_class_no_control_picks_is_compared_with_all_controls():
    """Class 0 draws no control: by the mean test its particles are compared with the mean over
    all controls (CONTROL_PRIOR_COUNT of them), so a class of particles no better than the
    controls elsewhere has no evidence by it, and one far better has."""
    ev = torch.zeros(2, 2, 4)
    ev2 = torch.zeros(2, 2, 4)
    n = torch.tensor([[50.0, 0.0], [50.0, 100.0]])
    ev[1, 1], ev2[1, 1] = 100.0 * 2.0, 100.0 * 5.0  # controls: mean 2, sd 1
    ev[:, 0], ev2[:, 0] = 50.0 * 2.0, 50.0 * 5.0  # particles: mean 2 too
    assert evidence_z(ev, ev2, n)[1].abs().max() < 1.0
    ev[0, 0], ev2[0, 0] = 50.0 * 6.0, 50.0 * 37.0  # class 0's particles: mean 6
    z = evidence_z(ev, ev2, n)[1]
    assert (z[0] > 5).all() and z[1].abs().max() < 1.0
    ev[0, 0], ev2[0, 0], n[0, 0] = 6.0 * 19, 37.0 * 19, 19.0  # too few particles for a mean
    assert (evidence_z(ev, ev2, n)[1][0] == 0).all()
