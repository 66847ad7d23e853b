"""Signal evidence per class and resolution shell that aligned noise cannot fake.

Noise aligned to a reference looks like the reference ("Einstein from noise"), so a class made of
noise has half-set averages that agree with each other, and an FRC between them reports
resolution where there is none. This test asks a different question: does a particle match the
classes better than the *same particle with its sign flipped* does?

- Each particle is scored against the *other* half-set's averages of every class (so its own
  contribution to a reference cannot help it), over the coarse rotations and shifts, and its best
  (class, pose) is found. The cross term of that best score, shell by shell, is added to that
  class's evidence.
- The control is the particle times -1, searched the same way over every class and pose. It has
  exactly the particle's power spectrum, mask, CTF-shaped noise and pose statistics, and noise is
  symmetric, so for noise both searches are the same lottery: the particles that pick a class and
  the controls that pick it have the same distribution of cross terms, however much the classes
  have been fitted to noise. Signal has a sign: a real particle matches its class, its negative
  matches nothing.
- A class's evidence at a shell is tested two ways, and the class holds signal where either test
  says so (each has zero mean for noise, the mean test up to what it borrows; two tests double the
  rare false alarms, which the two-adjacent-shells rule keeps rare). Summed: the particles' cross
  terms minus the controls' (for noise the same number of each picks a class); it draws strength
  from particles crowding into their class while their controls do not. Mean: the particles' mean
  cross term minus the controls' (a two-sample z-score), for the classes the controls crowd into:
  the controls of real particles are not noise (a negated particle is structured) and they pick
  the few classes that best fit a negated particle. On p2x7_preferred three quarters of the
  controls picked four side-view classes; summed, their cross terms outweighed those classes' own
  particles', and the classes were reported at 999 Å (their references faded at 25 Å) while they
  showed the side view. The mean alone is weak where few controls pick a class (their mean is
  poorly known): a class borrows CONTROL_PRIOR_COUNT controls' worth of the mean over all classes'
  controls, and needs MIN_PARTICLES particles.
  Known optimism of the summed test: a class that draws particles by its coarse signal, and no
  controls, is also credited at fine shells with the noise each particle's best pose fits there.
  The mean test alone avoids it but, as the only test, faded references too early (docs/status.md,
  session 13). The engine fades its references and grows its band by the summed test alone
  (``ModelState.reference_resolution_A``), as before the mean test existed: with both tests there,
  classes drifted slightly for the worse (trpv1_micelle, the suite); the mean test only corrects
  the resolution a class is reported at.

Tried first and dropped: a control with random phases (it loses the noise's correlation with the
CTF and the mask), and a control scored only on the particle's own class (the particle chose that
class, its control did not): on pure noise both reported signal at 24-36 Å.

Summed per class, separately for particles and controls (``accumulate_evidence`` into
``Statistics.evidence``, ``evidence_sq``, ``evidence_n``), the evidence gives two z-scores per
shell (``evidence_z``); ``significant_resolution`` turns them into the resolutions the data
support.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cryoclass.physics.fourier import Band, shell_sum, shift_phase

#: A shell holds signal when a z-score of its evidence (``evidence_z``) is above this.
EVIDENCE_Z = 3.0
#: Controls' worth of the mean over all classes' controls that a class's control mean borrows: a
#: class that (almost) no control picks still has a control mean to be compared with.
CONTROL_PRIOR_COUNT = 10.0
#: Particles a class needs before its mean cross term is compared at all (a t-statistic of a
#: few particles has heavy tails).
MIN_PARTICLES = 20.0


def best_cross_by_shell(
    X: torch.Tensor,
    ctf: torch.Tensor,
    inv_sigma2: torch.Tensor,
    refs: torch.Tensor,
    ref_matrix: torch.Tensor,
    shifts: torch.Tensor,
    band: Band,
    n_shells: int,
    chunk: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (class, rotation, shift) of each particle and of its sign-flipped control, and the
    cross term of each best score by shell.

    X: (n, F) complex band coefficients; ctf: (n, F); inv_sigma2: (F,) (0 = excluded from
    alignment); refs: (K, R, F) complex rotated references; ref_matrix: their
    ``estep.shifted_reference_matrix`` over shifts (S, 2) pixels, in the coarse search's
    precision (it only ranks the poses; the cross terms are then computed in float32).
    Returns cls, cls_control (n,) long and cross, cross_control (n, n_shells) float, where the
    score of a pose is 2 * cross - norm as in ``estep.score_best_poses``. One matrix product
    serves both: the control's cross terms are the particle's, negated.
    """
    n, f = X.shape
    k, r, _ = refs.shape
    s = shifts.shape[0]
    phases = shift_phase(band.kx[None], band.ky[None], shifts[:, :1], shifts[:, 1:], band.box)
    ref_flat = refs.reshape(k * r, f)
    weighted = X * (ctf * inv_sigma2)
    norm_all = (ctf**2 * inv_sigma2) @ (ref_flat.real**2 + ref_flat.imag**2).T  # (n, KR)
    cls = torch.empty(2, n, dtype=torch.long, device=X.device)
    cross = torch.empty(2, n, n_shells, device=X.device)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        m = b - a
        w = torch.view_as_real(weighted[a:b]).reshape(m, 2 * f).to(ref_matrix.dtype)
        # in float32 before the reductions: cheaper than reducing bfloat16 on CPUs, same values
        c = (w @ ref_matrix.T).float().view(m, k * r, s)  # (m, KR, S)
        bottom, top = torch.aminmax(c, dim=2)  # (m, KR); the shift is found for the best only
        rows = torch.arange(m, device=X.device)
        for j, (sign, extreme) in enumerate(((1.0, top), (-1.0, bottom))):
            kr = ((2.0 * sign) * extreme - norm_all[a:b]).argmax(1)  # (m,)
            si = (sign * c[rows, kr]).argmax(1)
            g = (weighted[a:b].conj() * ref_flat[kr] * phases[si]).real
            cls[j, a:b] = kr // r
            cross[j, a:b] = sign * shell_sum(g, band.shell, n_shells)
    return cls[0], cls[1], cross[0], cross[1]


def accumulate_evidence(
    evidence: torch.Tensor,
    evidence_sq: torch.Tensor,
    evidence_n: torch.Tensor,
    cls: torch.Tensor,
    cls_control: torch.Tensor,
    cross: torch.Tensor,
    cross_control: torch.Tensor,
) -> None:
    """Add ``best_cross_by_shell``'s picks to per-class sums, in place: each particle's cross
    terms (n, n_shells) to evidence[cls, 0] (squares to evidence_sq, 1 to evidence_n), each
    control's to [cls_control, 1]. evidence, evidence_sq: (K, 2, n_shells); evidence_n: (K, 2)."""
    ones = torch.ones_like(cross[:, 0])
    for j, (c, x) in enumerate(((cls, cross), (cls_control, cross_control))):
        evidence[:, j].index_add_(0, c, x)
        evidence_sq[:, j].index_add_(0, c, x * x)
        evidence_n[:, j].index_add_(0, c, ones)


def evidence_z(
    evidence: torch.Tensor, evidence_sq: torch.Tensor, evidence_n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, n_shells) z-scores of each class's signal evidence per shell: summed and mean.

    evidence, evidence_sq: (K, 2, n_shells) summed cross terms and squared cross terms of the
    particles ([:, 0]) and of the controls ([:, 1]) that picked each class
    (``accumulate_evidence``); evidence_n: (K, 2) how many. Summed: (particles' sum - controls' sum)
    / sqrt(sum of squares). Mean: (particle mean - control mean) / its standard error, the control
    mean shrunk towards the mean over all classes' controls by CONTROL_PRIOR_COUNT; 0 for a class
    with fewer than MIN_PARTICLES particles.
    """
    s_p, s_c = evidence[:, 0], evidence[:, 1]  # (K, S)
    q_p, q_c = evidence_sq[:, 0], evidence_sq[:, 1]
    q = q_p + q_c
    z_sum = torch.where(q > 0, (s_p - s_c) / q.clamp_min(1e-30).sqrt(), torch.zeros_like(q))

    n_p = evidence_n[:, 0, None]  # (K, 1)
    n_c = evidence_n[:, 1, None]
    n_all = evidence_n[:, 1].sum().clamp_min(1.0)
    pooled_mean = s_c.sum(0, keepdim=True) / n_all  # (1, S)
    pooled_sq = q_c.sum(0, keepdim=True) / n_all
    mean_p = s_p / n_p.clamp_min(1.0)
    var_p = (q_p / n_p.clamp_min(1.0) - mean_p**2).clamp_min(0.0)
    n_cc = n_c + CONTROL_PRIOR_COUNT
    mean_c = (s_c + CONTROL_PRIOR_COUNT * pooled_mean) / n_cc
    var_c = ((q_c + CONTROL_PRIOR_COUNT * pooled_sq) / n_cc - mean_c**2).clamp_min(0.0)
    se = (var_p / n_p.clamp_min(1.0) + var_c / n_cc).sqrt()
    z_mean = (mean_p - mean_c) / se.clamp_min(1e-30)
    z_mean = torch.where((n_p >= MIN_PARTICLES) & (se > 0), z_mean, torch.zeros_like(z_mean))
    return z_sum, z_mean


class SignalShells(NamedTuple):
    """(K,) highest shells (Fourier pixels) up to which the classes hold signal, 0 = none:
    ``reported`` by either evidence test, ``summed`` by the summed test alone."""

    reported: torch.Tensor
    summed: torch.Tensor


def significant_resolution(
    evidence: torch.Tensor,
    evidence_sq: torch.Tensor,
    evidence_n: torch.Tensor,
    r_max: float,
    z: float = EVIDENCE_Z,
) -> SignalShells:
    """The highest shells up to which the classes hold signal (``SignalShells``).

    evidence, evidence_sq, evidence_n: per-class sums as in ``evidence_z``. A shell is
    significant when a z-score is above z; by each of the two z-scores, the resolution is the
    highest shell s <= r_max such that shells s - 1 and s are both significant (one lucky shell
    is not enough); ``reported`` is the better of the two, ``summed`` the summed test's.
    """
    z_sum, z_mean = evidence_z(evidence, evidence_sq, evidence_n)
    summed = _last_paired_shell(z_sum > z, r_max)
    return SignalShells(torch.maximum(summed, _last_paired_shell(z_mean > z, r_max)), summed)


def _last_paired_shell(sig: torch.Tensor, r_max: float) -> torch.Tensor:
    """(K,) highest shell s in 1..r_max with sig at s - 1 and s of (K, n_shells) sig; 0 = none."""
    n_shells = sig.shape[1]
    shells = torch.arange(n_shells, device=sig.device)
    sig = sig & (shells >= 1)[None] & (shells <= int(r_max))[None]
    pair = torch.zeros_like(sig)
    pair[:, 2:] = sig[:, 2:] & sig[:, 1:-1]
    last = torch.where(pair, shells[None].expand_as(pair), torch.zeros_like(pair, dtype=torch.long))
    return last.max(1).values
