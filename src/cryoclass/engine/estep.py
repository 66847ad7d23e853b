"""E-step: scores of every particle against every class x rotation x shift, and posteriors.

For hypothesis h = (class c, rotation r, shift s) the log-likelihood over the band, up to a
constant per particle, is (sums over the half-plane band, each point standing for a conjugate pair)

    score = sum_k [ 2 Re( conj(P_s(k)) A_cr(k) ) - CTF(k)^2 |A_cr(k)|^2 / sigma2(k) ],
    P_s(k) = X(k) CTF(k) / sigma2(k) * exp(+2 pi i k.t_s / D)       (the particle moved back by t_s),

with A_cr(k) = A_c(R_psi_r k), the class average rotated once per iteration (see
``references.py``). Since conj(P_s) A_cr = conj(X CTF / sigma2) (A_cr moved by +t_s), the cross
term is one real GEMM [n, 2F] x [2F, K*R*S] against the references moved by every shift (built
once per model, ``shifted_reference_matrix``), or [n*S, 2F] x [2F, K*R] with the particles moved
when that matrix would be too large; the norm term is one GEMM [n, F] x [F, K*R]. Frequencies
excluded from alignment (below 1/min_res) carry 1/sigma2 = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryoclass.physics.fourier import Band, shift_phase

#: Largest shifted-reference matrix (bytes) that score_best_poses builds; above it, the shifts are
#: applied to the particles instead (same scores, more elementwise work per particle).
SHIFTED_REFS_BUDGET = 512 << 20


def shifted_matrix_fits(n_rows: int, n_points: int, dtype: torch.dtype) -> bool:
    """Whether a shifted-reference matrix of n_rows (K*R*S) rows over n_points (F) band points
    fits SHIFTED_REFS_BUDGET."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return n_rows * 2 * n_points * itemsize <= SHIFTED_REFS_BUDGET


def shifted_reference_matrix(
    refs: torch.Tensor, shifts: torch.Tensor, band: Band, dtype: torch.dtype
) -> torch.Tensor:
    """Rotated class averages moved by every shift, as the real matrix of the cross-term GEMM.

    refs: (K, R, F) complex; shifts: (S, 2) pixels. Returns (K*R*S, 2F) of dtype, rows ordered
    (class, rotation, shift), each row the interleaved (re, im) of A_cr(k) exp(-2 pi i k.t_s / D).
    """
    k, r, f = refs.shape
    s = shifts.shape[0]
    phases = shift_phase(band.kx[None], band.ky[None], shifts[:, :1], shifts[:, 1:], band.box)
    flat = refs.reshape(k * r, f)
    out = torch.empty(k * r * s, 2 * f, dtype=dtype, device=refs.device)
    step = 16  # references per piece: the complex intermediate stays in cache (2x faster)
    for a in range(0, k * r, step):
        b = min(k * r, a + step)
        moved = flat[a:b, None, :] * phases[None]  # (b-a, S, F)
        out[a * s : b * s] = torch.view_as_real(moved).reshape((b - a) * s, 2 * f)
    return out


def score_best_poses(
    X: torch.Tensor,
    ctf: torch.Tensor,
    inv_sigma2: torch.Tensor,
    refs: torch.Tensor,
    shifts: torch.Tensor,
    band: Band,
    max_elements: int = 1 << 25,
    gemm_dtype: torch.dtype = torch.float32,
    ref_matrix: torch.Tensor | None = None,
    shift_prior: torch.Tensor | None = None,
    log_volume: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (rotation, shift) score per particle and class, exhaustively.

    X: (n, F) complex band coefficients; ctf: (n, F) real; inv_sigma2: (F,) real (0 = excluded);
    refs: (K, R, F) complex rotated class averages; shifts: (S, 2) pixels.
    gemm_dtype: precision of the cross-term GEMM inputs (bfloat16 for a fast coarse search on
    hardware with bf16 matrix units; the sums accumulate in float32 either way).
    ref_matrix: ``shifted_reference_matrix(refs, shifts, band, gemm_dtype)`` when the caller keeps
    it for several batches (built here otherwise, if it fits SHIFTED_REFS_BUDGET).
    shift_prior: (K, R, S) log prior of each rotation and shift in each class, added to the
    scores (None: flat).
    log_volume: an (n, K) tensor to fill with log sum_poses exp(score - best score) per
    particle and class (at temperature 1), the log of the class's pose mass relative to its
    best pose: best + log_volume is the class's likelihood summed over the grid's poses (None:
    not computed).
    Returns best_score (n, K), best_rot (n, K), best_shift (n, K).
    """
    n, f = X.shape
    k, r, _ = refs.shape
    s = shifts.shape[0]
    ref_flat = refs.reshape(k * r, f)
    ref_pow = ref_flat.real**2 + ref_flat.imag**2  # (KR, F)
    weighted = X * (ctf * inv_sigma2)  # (n, F)
    norm_all = (ctf**2 * inv_sigma2) @ ref_pow.T  # (n, KR)
    if ref_matrix is None and shifted_matrix_fits(k * r * s, f, gemm_dtype):
        ref_matrix = shifted_reference_matrix(refs, shifts, band, gemm_dtype)
    if ref_matrix is not None:
        # Shifts on the references' side: one GEMM [n, 2F] x [2F, K*R*S] per chunk, and no
        # per-particle shifted copies.
        w_mat = torch.view_as_real(weighted).reshape(n, 2 * f).to(gemm_dtype)
        ref_mat, phases = ref_matrix.T, None
    else:
        ref_mat = torch.view_as_real(ref_flat).reshape(k * r, 2 * f).T.to(gemm_dtype)  # (2F, KR)
        phases = shift_phase(
            band.kx[None], band.ky[None], -shifts[:, :1], -shifts[:, 1:], band.box
        )  # (S, F)

    out_score = torch.empty(n, k, dtype=X.real.dtype, device=X.device)
    out_rot = torch.empty(n, k, dtype=torch.long, device=X.device)
    out_shift = torch.empty(n, k, dtype=torch.long, device=X.device)
    chunk = max(1, max_elements // (s * k * r))
    # the cross term is doubled below, so half the prior goes in before the max over shifts
    half_prior = None if shift_prior is None else 0.5 * shift_prior.float()
    for a in range(0, n, chunk):  # chunks bound memory; all work inside is batched
        b = min(n, a + chunk)
        m = b - a
        if phases is None:
            # without a prior, the max of the GEMM's own dtype, then float: the same values,
            # fewer converted; a prior is added in float32
            cross = (w_mat[a:b] @ ref_mat).view(m, k * r, s)
            if half_prior is not None:
                cross = cross.float() + half_prior.view(1, k * r, s)
            best_over_s, arg_s = cross.max(dim=2)  # (m, KR)
            best_over_s = best_over_s.float()
            if log_volume is not None:
                every = 2.0 * cross.float() - norm_all[a:b, :, None]  # (m, KR, S)
        else:
            p = weighted[a:b, None, :] * phases[None]  # (m, S, F)
            p_mat = torch.view_as_real(p).reshape(m * s, 2 * f).to(gemm_dtype)
            scores = (p_mat @ ref_mat).float().view(m, s, k * r)
            if half_prior is not None:
                scores = scores + half_prior.permute(2, 0, 1).reshape(s, k * r)
            best_over_s, arg_s = scores.max(dim=1)  # (m, KR)
            if log_volume is not None:
                every = 2.0 * scores.transpose(1, 2) - norm_all[a:b, :, None]  # (m, KR, S)
        best_over_s = best_over_s.mul_(2.0).sub_(norm_all[a:b]).view(m, k, r)
        best, arg_r = best_over_s.max(dim=2)  # (m, K)
        if log_volume is not None:
            log_volume[a:b] = torch.logsumexp(every.reshape(m, k, r * s), dim=2) - best
        out_score[a:b] = best
        out_rot[a:b] = arg_r
        out_shift[a:b] = torch.gather(arg_s.view(m, k, r), 2, arg_r[..., None]).squeeze(2)
    return out_score, out_rot, out_shift


def class_posterior(
    best_score: torch.Tensor, log_prior: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over classes of best_score / T + log prior: (n, K) -> posterior (n, K), log Z (n,)."""
    logits = best_score / temperature + log_prior[None, :]
    log_z = torch.logsumexp(logits, dim=1)
    return torch.exp(logits - log_z[:, None]), log_z


def score_spread(best_score: torch.Tensor) -> float:
    """Typical spread of class scores: median over particles of the sd over classes."""
    if best_score.shape[1] < 2:
        return 0.0
    return float(best_score.std(dim=1).median())


OFFSETS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # the 3 x 3 lattice neighbourhood


def _neighbour_table(shifts: torch.Tensor, step: float, centres: torch.Tensor) -> torch.Tensor:
    """(len(centres), 9) indices of the fine shifts centre + OFFSETS x step, -1 where the offset
    leaves the search disc."""
    lat = torch.round(shifts / step).long()  # (S, 2)
    key = {(int(a), int(b)): i for i, (a, b) in enumerate(lat.tolist())}
    table = []
    for c in centres.tolist():
        cx, cy = lat[c].tolist()
        table.append([key.get((cx + dx, cy + dy), -1) for dx, dy in OFFSETS])
    return torch.as_tensor(table, dtype=torch.long, device=shifts.device)


def coarse_shift_indices(shifts: torch.Tensor, shift_step: float) -> torch.Tensor:
    """Indices of the shifts on the lattice of twice the step (the coarse search's shifts)."""
    lat = torch.round(shifts / shift_step).long()
    return torch.nonzero((lat % 2 == 0).all(1)).squeeze(1)


def score_coarse_to_fine(
    X: torch.Tensor,
    ctf: torch.Tensor,
    inv_sigma2: torch.Tensor,
    refs: torch.Tensor,
    shifts: torch.Tensor,
    shift_step: float,
    band: Band,
    top_classes: int = 4,
    chunk: int = 256,
    coarse_dtype: torch.dtype = torch.float32,
    coarse_matrix: torch.Tensor | None = None,
    shift_prior: torch.Tensor | None = None,
    log_volume: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best pose per class by a coarse exhaustive search refined locally.

    Stage 1: every second rotation and the shifts on a lattice of twice the step, as one GEMM
    (about 4x fewer hypotheses). Stage 2: for each particle's top_classes classes, the 3 x 9
    neighbouring fine rotations x shifts around the coarse optimum, as batched small GEMMs.
    Other classes keep their coarse scores (lower bounds of their best score). coarse_dtype: GEMM
    precision of stage 1 only (stage 2 re-scores in float32). coarse_matrix: stage 1's
    ``shifted_reference_matrix`` (refs[:, ::2], the coarse shifts), when the caller keeps it for
    several batches. log_volume: filled as by score_best_poses over stage 1's poses, relative
    to stage 1's best. Arguments and returns as score_best_poses; requires an even number of
    rotations R.
    """
    k, r, f = refs.shape
    n = X.shape[0]
    coarse_s = coarse_shift_indices(shifts, shift_step)
    best, rot_c, shf_c = score_best_poses(
        X,
        ctf,
        inv_sigma2,
        refs[:, ::2],
        shifts[coarse_s],
        band,
        gemm_dtype=coarse_dtype,
        ref_matrix=coarse_matrix,
        shift_prior=None if shift_prior is None else shift_prior[:, ::2][:, :, coarse_s],
        log_volume=log_volume,
    )
    rot = rot_c * 2
    shf = coarse_s[shf_c]
    nbr = _neighbour_table(shifts, shift_step, coarse_s)  # (Sc, 9)
    m_top = min(top_classes, k)
    weighted = X * (ctf * inv_sigma2)
    w_norm = ctf**2 * inv_sigma2
    ref_flat = refs.reshape(k * r, f)
    ref_pow = ref_flat.real**2 + ref_flat.imag**2  # (KR, F)
    phases = shift_phase(
        band.kx[None], band.ky[None], -shifts[coarse_s, :1], -shifts[coarse_s, 1:], band.box
    )  # (Sc, F)
    # Moving by s0 + d is moving by s0, then by d: the 9 offsets d are the same for every
    # particle, so after applying each particle's own s0 they are one GEMM with a fixed (2F, 9),
    # whose rows are interleaved (re, im) like view_as_real: Re(g phi) = g_re phi_re - g_im phi_im.
    off = torch.tensor(OFFSETS, dtype=shifts.dtype, device=X.device) * shift_step
    ph_d = shift_phase(band.kx[None], band.ky[None], -off[:, :1], -off[:, 1:], band.box)
    ph_mat = torch.stack([ph_d.real, -ph_d.imag], dim=-1).reshape(9, 2 * f).T.contiguous()
    drot = torch.tensor([-1, 0, 1], device=X.device)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        m = b - a
        top = best[a:b].topk(m_top, dim=1).indices  # (m, M)
        r0 = torch.gather(rot[a:b], 1, top)  # (m, M)
        s0c = torch.gather(shf_c[a:b], 1, top)
        rc = (r0[..., None] + drot) % r  # (m, M, 3)
        sc = nbr[s0c]  # (m, M, 9)
        flat = top[..., None] * r + rc  # (m, M, 3)
        q = weighted[a:b, None, :] * phases[s0c]  # (m, M, F)
        g = ref_flat[flat].conj_physical_().mul_(q[:, :, None, :])  # (m, M, 3, F)
        cross = torch.view_as_real(g).reshape(-1, 2 * f) @ ph_mat
        cross = cross.view(m, m_top, 3, 9).transpose(2, 3)  # (m, M, 9, 3)
        norm = torch.einsum("mf,mjf->mj", w_norm[a:b], ref_pow[flat.reshape(m, -1)])
        norm = norm.view(m, m_top, 3)
        sc_all = 2.0 * cross - norm[:, :, None, :]
        if shift_prior is not None:  # (m, M, 9 shifts, 3 rotations)
            sc_all = (
                sc_all
                + shift_prior[top[..., None, None], rc[:, :, None, :], sc.clamp_min(0)[..., None]]
            )
        sc_all = sc_all.masked_fill((sc < 0)[..., None], float("-inf")).reshape(m, m_top, 27)
        val, arg = sc_all.max(dim=2)
        best_r = torch.gather(rc, 2, (arg % 3)[..., None]).squeeze(2)
        best_s = torch.gather(sc, 2, (arg // 3)[..., None]).squeeze(2)
        best[a:b].scatter_(1, top, val)
        rot[a:b].scatter_(1, top, best_r)
        shf[a:b].scatter_(1, top, best_s)
    return best, rot, shf


@dataclass
class PoseNeighbourhood:
    """Scores of the poses next to each particle's best pose in its top classes (``force_max``
    off: the poses a particle's weight is spread over).

    cls: (n, M) long classes; score: (n, M, P) float (-inf where a pose leaves the search disc);
    rot, shift: (n, M, P) long indices into the pose grid; P = 3 rotations x 9 shifts.
    """

    cls: torch.Tensor
    score: torch.Tensor
    rot: torch.Tensor
    shift: torch.Tensor


def neighbourhood_scores(
    X: torch.Tensor,
    ctf: torch.Tensor,
    inv_sigma2: torch.Tensor,
    refs: torch.Tensor,
    shifts: torch.Tensor,
    shift_step: float,
    band: Band,
    classes: torch.Tensor,
    rot: torch.Tensor,
    shf: torch.Tensor,
    chunk: int = 64,
    shift_prior: torch.Tensor | None = None,
) -> PoseNeighbourhood:
    """Scores of the 3 x 9 fine rotations x shifts around each particle's best pose in the
    given classes.

    X, ctf: (n, F); inv_sigma2: (F,); refs: (K, R, F) complex rotated class averages; shifts:
    (S, 2) pixels on a lattice of shift_step; classes: (n, M) long; rot, shf: (n, K) best pose
    indices per class; shift_prior: (K, R, S) or None. Scores as ``score_best_poses`` (2 cross -
    norm + prior).
    """
    k, r, f = refs.shape
    n, m_top = classes.shape
    nbr = _neighbour_table(shifts, shift_step, torch.arange(shifts.shape[0], device=X.device))
    phases = shift_phase(band.kx[None], band.ky[None], -shifts[:, :1], -shifts[:, 1:], band.box)
    weighted = X * (ctf * inv_sigma2)
    w_norm = ctf**2 * inv_sigma2
    ref_flat = refs.reshape(k * r, f)
    drot = torch.tensor([-1, 0, 1], device=X.device)
    score = torch.empty(n, m_top, 9, 3, device=X.device)
    rots = torch.empty(n, m_top, 9, 3, dtype=torch.long, device=X.device)
    shfs = torch.empty(n, m_top, 9, 3, dtype=torch.long, device=X.device)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        cls = classes[a:b]
        rc = (torch.gather(rot[a:b], 1, cls)[..., None] + drot) % r  # (m, M, 3)
        sc = nbr[torch.gather(shf[a:b], 1, cls)]  # (m, M, 9)
        refs_n = ref_flat[cls[..., None] * r + rc]  # (m, M, 3, F)
        moved = weighted[a:b, None, None, :] * phases[sc.clamp_min(0)]  # (m, M, 9, F)
        cross = torch.einsum("mjsf,mjrf->mjsr", moved.conj(), refs_n).real
        norm = torch.einsum("mf,mjrf->mjr", w_norm[a:b], refs_n.real**2 + refs_n.imag**2)
        sc_all = 2.0 * cross - norm[:, :, None, :]
        if shift_prior is not None:  # (m, M, 9 shifts, 3 rotations)
            sc_all = (
                sc_all
                + shift_prior[cls[..., None, None], rc[:, :, None, :], sc.clamp_min(0)[..., None]]
            )
        score[a:b] = sc_all.masked_fill((sc < 0)[..., None], float("-inf"))
        rots[a:b] = rc[:, :, None, :].expand(-1, -1, 9, -1)
        shfs[a:b] = sc.clamp_min(0)[..., None].expand(-1, -1, -1, 3)
    flat = (n, m_top, 27)
    return PoseNeighbourhood(classes, score.reshape(flat), rots.reshape(flat), shfs.reshape(flat))
