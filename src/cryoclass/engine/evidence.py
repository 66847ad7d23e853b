"""Signal evidence per class and resolution shell that aligned noise cannot fake.

Noise aligned to a reference looks like the reference ("Einstein from noise"), so a class made of
noise has half-set averages that agree with each other, and an FRC between them reports
resolution where there is none. This test asks a different question: does a particle match the
classes better than the *same particle with its sign flipped* does?

- Each particle is scored against the *other* half-set's averages of every class (so its own
  contribution to a reference cannot help it), over the coarse rotations and shifts, and its best
  (class, pose) is found. The cross term of that best score, shell by shell, is added to that
  class's evidence.
- The control is the particle times -1, searched the same way over every class and pose; its
  best cross term is subtracted from the evidence of the class *it* picks. The control has
  exactly the particle's power spectrum, mask, CTF-shaped noise and pose statistics, and noise is
  symmetric, so for noise both searches are the same lottery and the evidence has zero mean in
  every class and shell, however much the classes have been fitted to noise. Signal has a sign:
  a real particle matches its class, its negative matches nothing.

Tried first and dropped: a control with random phases (it loses the noise's correlation with the
CTF and the mask), and a control scored only on the particle's own class (the particle chose that
class, its control did not): on pure noise both reported signal at 24-36 Å.

Summed per class (``Statistics.evidence`` and ``evidence_sq``), the evidence gives a z-score per
shell; ``significant_resolution`` turns it into the resolution the data support.
"""

from __future__ import annotations

import torch

from cryoclass.physics.fourier import Band, shell_sum, shift_phase

#: A shell holds signal when its summed evidence is this many standard errors above zero.
EVIDENCE_Z = 3.0


def best_cross_by_shell(
    X: torch.Tensor,
    ctf: torch.Tensor,
    inv_sigma2: torch.Tensor,
    refs: torch.Tensor,
    ref_matrix: torch.Tensor,
    shifts: torch.Tensor,
    band: Band,
    n_shells: int,
    chunk: int = 128,
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


def significant_resolution(
    evidence: torch.Tensor, evidence_sq: torch.Tensor, r_max: float, z: float = EVIDENCE_Z
) -> torch.Tensor:
    """(K,) highest shell (Fourier pixels) up to which the classes hold signal; 0 = none.

    evidence, evidence_sq: (K, n_shells) summed evidence and summed squared evidence. A shell is
    significant when evidence / sqrt(evidence_sq) > z; the resolution is the highest shell s
    <= r_max such that shells s - 1 and s are both significant (one lucky shell is not enough).
    """
    zs = evidence / evidence_sq.clamp_min(1e-30).sqrt()
    sig = (zs > z) & (evidence_sq > 0)
    n_shells = sig.shape[1]
    shells = torch.arange(n_shells, device=sig.device)
    sig = sig & (shells >= 1)[None] & (shells <= int(r_max))[None]
    pair = torch.zeros_like(sig)
    pair[:, 2:] = sig[:, 2:] & sig[:, 1:-1]
    last = torch.where(pair, shells[None].expand_as(pair), torch.zeros_like(pair, dtype=torch.long))
    return last.max(1).values
