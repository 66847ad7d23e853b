"""M-step: sufficient statistics from aligned particles, and class averages from statistics.

Statistics live on the class grid (the half-plane rfft points of the box, DC included, up to
Nyquist; ``Statistics`` below), in two half-sets (for FRC resolution):

    num[h, c, q] = sum_i w_ic CTF_i(k') X_i(k') exp(+2 pi i k'.t_ic / D),   k' = R_psi_ic^-1 q
    den[h, c, q] = sum_i w_ic CTF_i(k')^2

X_i(k') is pulled from the particle's 2x-padded transform by bilinear interpolation and the CTF is
evaluated analytically at k' (its astigmatism angle turned by psi), so no particle is resampled in
real space. A class average is then the Wiener filter num / (den + sigma2 / (tau2_fudge * tau2)).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from cryoclass.engine.batch import ParticleBatch
from cryoclass.physics.fourier import (
    Band,
    PaddedSpectrum,
    rotate_points,
    sample_at,
    sampling_grid,
    shell_sum,
    shift_phase,
)

#: Statistics fields with one entry per class; the first three are per half-set too (2, K, ...).
HALF_SET_FIELDS = ("num", "den", "weight")
EVIDENCE_FIELDS = ("evidence", "evidence_sq", "evidence_n")
PER_CLASS_FIELDS = (*HALF_SET_FIELDS, *EVIDENCE_FIELDS, "offset")
#: The per-class fields that the particles' own images and shifts make (all but the evidence).
PARTICLE_FIELDS = (*HALF_SET_FIELDS, "offset")
#: Particles are grouped by mean defocus, each group with its own noise spectrum
#: (``Config.noise_group_width_um``): this many groups, the last taking every defocus beyond.
NOISE_GROUPS = 64
#: A group's noise spectrum is its residual power plus this many particles' worth of the job's
#: spectrum, so that a group of few particles keeps close to the job's spectrum. Residuals hold
#: the classes' misfit too, seen through each particle's CTF: with 20, a stream whose first
#: updates had 5-10 particles per group weighed them down where their CTF carried the signal and
#: lost a view of the unit tests' micelle set (docs/status.md, session 32).
NOISE_GROUP_PRIOR_PARTICLES = 100.0


@dataclass
class Statistics:
    """Running sufficient statistics (see module docstring).

    num: (2, K, Q) complex; den: (2, K, Q) float; weight: (2, K) float, summed posteriors;
    noise_power, noise_count: (NOISE_GROUPS, n_shells) float, weighted residual power and point
    counts per noise group and shell of the particles' own grid (``noise_groups``); evidence,
    evidence_sq: (K, 2, n_shells) float, summed cross terms by shell and their squares of the
    particles ([:, 0]) and of their sign-flipped controls ([:, 1]) that picked each class,
    evidence_n: (K, 2) float, how many
    (``evidence.py``), for the resolution that aligned noise cannot fake; offset: (K, 3) float,
    summed w u, w v and w (u^2 + v^2) of the pairs' shifts in the class frame, (u, v) = R_psi t
    (pixels), for the prior on translations (``ModelState.shift_prior``).
    """

    num: torch.Tensor
    den: torch.Tensor
    weight: torch.Tensor
    noise_power: torch.Tensor
    noise_count: torch.Tensor
    evidence: torch.Tensor
    evidence_sq: torch.Tensor
    evidence_n: torch.Tensor
    offset: torch.Tensor

    @staticmethod
    def zeros(n_classes: int, n_points: int, n_shells: int, device: torch.device) -> "Statistics":
        return Statistics(
            num=torch.zeros(2, n_classes, n_points, dtype=torch.complex64, device=device),
            den=torch.zeros(2, n_classes, n_points, dtype=torch.float32, device=device),
            weight=torch.zeros(2, n_classes, dtype=torch.float32, device=device),
            noise_power=torch.zeros(NOISE_GROUPS, n_shells, dtype=torch.float32, device=device),
            noise_count=torch.zeros(NOISE_GROUPS, n_shells, dtype=torch.float32, device=device),
            evidence=torch.zeros(n_classes, 2, n_shells, dtype=torch.float32, device=device),
            evidence_sq=torch.zeros(n_classes, 2, n_shells, dtype=torch.float32, device=device),
            evidence_n=torch.zeros(n_classes, 2, dtype=torch.float32, device=device),
            offset=torch.zeros(n_classes, 3, dtype=torch.float32, device=device),
        )

    def scaled(self, factor: float) -> "Statistics":
        return Statistics(
            self.num * factor,
            self.den * factor,
            self.weight * factor,
            self.noise_power * factor,
            self.noise_count * factor,
            self.evidence * factor,
            self.evidence_sq * factor,
            self.evidence_n * factor,
            self.offset * factor,
        )

    def add_(self, other: "Statistics") -> "Statistics":
        self.num += other.num
        self.den += other.den
        self.weight += other.weight
        self.noise_power += other.noise_power
        self.noise_count += other.noise_count
        self.evidence += other.evidence
        self.evidence_sq += other.evidence_sq
        self.evidence_n += other.evidence_n
        self.offset += other.offset
        return self

    @property
    def total_weight(self) -> float:
        return float(self.weight.sum())

    def _of_class(self, c: int, fields: tuple[str, ...] = PER_CLASS_FIELDS) -> list[torch.Tensor]:
        """Views of class c's entries in each named per-class field (the class axis is 1 for
        num, den and weight, 0 for the others)."""
        return [
            getattr(self, f)[:, c] if f in HALF_SET_FIELDS else getattr(self, f)[c] for f in fields
        ]

    def clear_class_(self, c: int) -> "Statistics":
        """Forget class c (every per-class field set to 0); the noise statistics are kept."""
        for t in self._of_class(c):
            t.zero_()
        return self

    def scale_class_(self, c: int, factor: float) -> "Statistics":
        """Class c's statistics times factor, as if its particles weighed factor as much."""
        for t in self._of_class(c):
            t.mul_(factor)
        return self

    def set_class_(
        self,
        c: int,
        source: "Statistics",
        source_class: int,
        factor: float = 1.0,
        fields: tuple[str, ...] = PER_CLASS_FIELDS,
    ) -> "Statistics":
        """Class c's named fields := factor x source's class source_class (source may be self)."""
        for mine, theirs in zip(
            self._of_class(c, fields), source._of_class(source_class, fields), strict=True
        ):
            mine.copy_(theirs * factor)
        return self


@dataclass
class Assignments:
    """Weighted (particle, class, pose) pairs from an E-step, m of them.

    row: (m,) long, row in the ParticleBatch; cls: (m,) long; psi_deg, tx, ty: (m,) pose (degrees,
    pixels); weight: (m,) float; rot, shift: (m,) long indices into the E-step pose grid.
    """

    row: torch.Tensor
    cls: torch.Tensor
    psi_deg: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    weight: torch.Tensor
    rot: torch.Tensor
    shift: torch.Tensor


def accumulate(
    batch: ParticleBatch,
    pairs: Assignments,
    half: torch.Tensor,
    grid: Band,
    grid_mask: torch.Tensor,
    n_classes: int,
    out: Statistics,
    spectral_weight: torch.Tensor | None = None,
    chunk: int = 512,
) -> None:
    """Add the pairs' back-rotated, un-shifted, CTF-weighted particles to out.num/den/weight.

    half: (n,) long 0/1 half-set of each batch particle; grid: the class grid (Q points, integer
    coordinates); grid_mask: (Q,) bool, the points updated (inside the working resolution);
    spectral_weight: (n, n_shells) each particle's weight per shell, sigma2 / its noise group's
    sigma2 (``group_whitening``; None: 1), so that num and den sum CTF X / sigma2_group and
    CTF^2 / sigma2_group up to the common factor sigma2.
    """
    sel = torch.nonzero(grid_mask).squeeze(1)
    qx, qy = grid.kx[sel], grid.ky[sel]
    sel_shell = grid.shell[sel]
    padded = batch.padded(float(torch.sqrt(qx**2 + qy**2).max()) if sel.numel() else 1.0)
    k = n_classes
    num_buf = torch.zeros(2 * k, sel.numel(), dtype=out.num.dtype, device=out.num.device)
    den_buf = torch.zeros(2 * k, sel.numel(), dtype=out.den.dtype, device=out.den.device)
    # Pairs share a few angles (the pose grid): where to read R^-1 q is worked out once per angle.
    angles, which_angle = torch.unique(pairs.psi_deg, return_inverse=True)
    read_at, read_sign = sampling_grid(padded, *rotate_points(qx, qy, -angles))
    # exp(+2 pi i (R^-1 q).t / D) = exp(2 pi i q.(R t) / D) factorises over the integer
    # coordinates of q: one row of exp(2 pi i qx u / D) and one of exp(2 pi i qy v / D) per pair.
    ix = qx.round().long()
    iy = qy.round().long()
    iy_off = int(iy.min()) if sel.numel() else 0
    xs = torch.arange(int(ix.max()) + 1 if sel.numel() else 1, device=qx.device, dtype=qx.dtype)
    ys = torch.arange(
        iy_off, (int(iy.max()) + 1) if sel.numel() else 1, device=qx.device, dtype=qx.dtype
    )
    for part, x in _sampled_chunks(
        padded, pairs.row, read_at, read_sign, which_angle, batch.n, chunk
    ):  # X(R^-1 q)
        row, cls, w = pairs.row[part], pairs.cls[part], pairs.weight[part]
        psi, tx, ty = pairs.psi_deg[part], pairs.tx[part], pairs.ty[part]
        c, s = torch.cos(torch.deg2rad(psi)), torch.sin(torch.deg2rad(psi))
        u, v = c * tx - s * ty, s * tx + c * ty  # R_psi t
        out.offset.index_add_(0, cls, torch.stack([w * u, w * v, w * (u * u + v * v)], 1))
        ph_x = shift_phase(xs[None], 0.0, -u[:, None], 0.0, batch.box)  # (m, Wx)
        ph_y = shift_phase(0.0, ys[None], 0.0, -v[:, None], batch.box)  # (m, Wy)
        unshift = ph_x[:, ix] * ph_y[:, iy - iy_off]
        ctf = batch.ctf(qx, qy, rows=row, extra_angle_deg=psi)  # CTF(R^-1 q)
        slot = half[row] * k + cls
        cw = ctf * w[:, None]
        if spectral_weight is not None:
            cw.mul_(spectral_weight[row][:, sel_shell])
        num_buf.index_add_(0, slot, x.mul_(unshift).mul_(cw))
        den_buf.index_add_(0, slot, cw.mul_(ctf))
        out.weight.view(-1).index_add_(0, slot, w)
    out.num.view(2 * k, -1)[:, sel] += num_buf
    out.den.view(2 * k, -1)[:, sel] += den_buf


#: When the pairs fill at least this fraction of a (particles x most pairs per particle) layout,
#: they are sampled in that layout, straight from the particles' transforms; otherwise each pair
#: samples a gathered copy of its particle's transform window (which costs more than sampling).
DENSE_PAIR_FILL = 0.6


def _sampled_chunks(
    padded: PaddedSpectrum,
    row: torch.Tensor,
    grid: torch.Tensor,
    sgn: torch.Tensor,
    angle: torch.Tensor,
    n: int,
    chunk: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs in chunks of about ``chunk``, each (positions into the pairs, (m, F) complex samples
    of their particles' transforms at their points), i.e. sample_at by parts.

    row: (M,) particle of each pair; angle: (M,) its angle's row in grid (A, 1, F, 2) and
    sgn (A, F), made by sampling_grid once per angle."""
    m = row.numel()
    if m == 0:
        return
    order = torch.argsort(row, stable=True)
    counts = torch.bincount(row, minlength=n)
    per = int(counts.max())
    if m < DENSE_PAIR_FILL * n * per:
        for a in range(0, m, chunk):
            part = order[a : a + chunk]
            j = angle[part]
            yield part, sample_at(padded, row[part], grid[j], sgn[j])
        return
    srow = row[order]
    rank = torch.arange(m, device=row.device) - (torch.cumsum(counts, 0) - counts)[srow]
    step = max(1, chunk // per)
    bounds = torch.searchsorted(srow, torch.arange(0, n + step, step, device=row.device)).tolist()
    for r0, a, b in zip(range(0, n, step), bounds[:-1], bounds[1:]):
        if a == b:
            continue
        part = order[a:b]
        r1 = min(n, r0 + step)
        layout = grid.new_full((r1 - r0, per, grid.shape[2], 2), -1.0)  # unused: a dummy point
        layout[srow[a:b] - r0, rank[a:b]] = grid[angle[part], 0]
        vals = torch.nn.functional.grid_sample(
            padded.data[r0:r1], layout, mode="bilinear", padding_mode="border", align_corners=True
        )
        vals = vals[srow[a:b] - r0, :, rank[a:b]]  # (m, 2, F)
        yield part, torch.complex(vals[:, 0], vals[:, 1] * sgn[angle[part]])


def accumulate_noise(
    X: torch.Tensor,
    ctf: torch.Tensor,
    refs: torch.Tensor,
    shifts: torch.Tensor,
    band: Band,
    pairs: Assignments,
    n_shells: int,
    out: Statistics,
    group: torch.Tensor,
    spectral_weight: torch.Tensor | None = None,
    chunk: int = 512,
) -> None:
    """Add weighted residual power |X - CTF S_t A_c(R k)|^2 per noise group and shell of the
    particle grid.

    X, ctf: (n, F), whitened by sqrt(spectral_weight) where it is given (as the E-step scores
    them); refs: (K, R, F) complex; shifts: (S, 2) pixels; group: (n,) long, each particle's
    noise group (``noise_groups``); spectral_weight: (n, n_shells) as in ``accumulate``, divided
    out again so that each group's power is that of its own images.
    """
    k, r, f = refs.shape
    flat_refs = refs.reshape(k * r, f)
    table = shift_phase(band.kx[None], band.ky[None], shifts[:, :1], shifts[:, 1:], band.box)
    ref_index = pairs.cls * r + pairs.rot
    power = torch.zeros(NOISE_GROUPS, f, dtype=X.real.dtype, device=X.device)
    for a in range(0, pairs.row.numel(), chunk):  # chunks keep the residuals in cache
        b = a + chunk
        row = pairs.row[a:b]
        res = X[row] - flat_refs[ref_index[a:b]].mul_(table[pairs.shift[a:b]]).mul_(ctf[row])
        res_power = (res.real**2 + res.imag**2).mul_(pairs.weight[a:b, None])
        if spectral_weight is not None:
            res_power.div_(spectral_weight[row][:, band.shell])
        power.index_add_(0, group[row], res_power)
    out.noise_power += shell_sum(power, band.shell, n_shells)
    group_weight = torch.zeros(NOISE_GROUPS, dtype=X.real.dtype, device=X.device)
    group_weight.index_add_(0, group[pairs.row], pairs.weight)
    counts = shell_sum(torch.ones_like(band.kx)[None], band.shell, n_shells)  # (1, n_shells)
    out.noise_count += group_weight[:, None] * counts


@dataclass
class ClassAverages:
    """Fourier coefficients on the class grid: full (K, Q), halves (2, K, Q) complex; plus the
    per-class signal power tau2 (K, n_shells) used by the Wiener filter."""

    full: torch.Tensor
    halves: torch.Tensor
    tau2: torch.Tensor


#: In a shell's signal power estimate, points whose CTF^2 weight (den) is below this fraction of
#: the shell's mean weight count (den / floor)^2 each instead of 1, and a shell whose mean weight
#: is below this fraction of its neighbours' borrows their estimate (see ``wiener_averages``).
LOW_WEIGHT_FRACTION = 0.25


def wiener_averages(
    stats: Statistics,
    sigma2_shell: torch.Tensor,
    grid: Band,
    grid_mask: torch.Tensor,
    tau2_fudge: float,
) -> ClassAverages:
    """Wiener-filtered class averages from statistics.

    tau2 per class and shell is estimated from the data: the power of the unregularised average
    minus its noise power sigma2/den (clamped at 0), so shells without signal are set to zero and
    classes with few particles come out smooth rather than noisy.

    Each point's estimate |num/den|^2 - sigma2/den has a variance that grows as 1/den^2. Where
    the particles of a class share one defocus (nominal defocus, one micrograph, a small class)
    den falls to almost 0 on the CTF's zero rings, a few such points outweigh the rest of their
    shell, tau2 comes out huge, the filter lets num/den through there and the average shows a
    lattice of dots or stripes at that ring's frequency (121 real picks at one nominal defocus,
    K = 5: the main class of 112 drawn so and reported at 11.7 Å, benchmarks/one_defocus_picks.py;
    simulated, three particles at one defocus: power on the zero rings 7x the truth's). So points
    below LOW_WEIGHT_FRACTION of their shell's mean weight count (den / floor)^2 (inverse-variance
    weighting below the floor, equal weights above it, as before). Where the CTF has no
    astigmatism a zero ring can take a whole shell, whose points then all weigh alike: a shell
    whose mean weight is below LOW_WEIGHT_FRACTION of its two neighbours' takes their estimate in
    proportion (trust (mean / floor)^2, the rest from the smaller of the neighbours' own
    estimates: the spectrum falls, and the larger inner one would pass noise on the ring).
    Where no point and no shell is below its floor, as in classes of particles at many defoci,
    the estimate is unchanged.
    """
    n_shells = sigma2_shell.numel()
    sig = sigma2_shell[grid.shell][None, :]  # (1, Q)
    inside = grid_mask[None, :].float()

    def filt(num: torch.Tensor, den: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        has = den > 1e-6
        use = has.float() * inside
        unreg = torch.where(has, num / den.clamp_min(1e-6), torch.zeros_like(num))
        p_u = (unreg.real**2 + unreg.imag**2) * use
        p_n = torch.where(has, sig / den.clamp_min(1e-6), torch.zeros_like(den)) * use
        cnt = shell_sum(use, grid.shell, n_shells).clamp_min(1)
        d_mean = shell_sum(den * use, grid.shell, n_shells) / cnt  # (K, n_shells) mean weight
        floor = LOW_WEIGHT_FRACTION * d_mean
        w = (den / floor[:, grid.shell].clamp_min(1e-30)).clamp(max=1.0) ** 2 * use
        own = (
            shell_sum(w * p_u, grid.shell, n_shells) - shell_sum(w * p_n, grid.shell, n_shells)
        ) / shell_sum(w, grid.shell, n_shells).clamp_min(1)
        # a whole shell with little weight (a zero ring of one shared CTF) borrows the smaller of
        # its neighbours' estimates, in proportion to how far its mean weight falls below theirs
        pad = torch.cat([d_mean[:, :1], d_mean, d_mean[:, -1:]], 1)
        near = 0.5 * (pad[:, :-2] + pad[:, 2:])
        trust = (d_mean / (LOW_WEIGHT_FRACTION * near).clamp_min(1e-30)).clamp(max=1.0) ** 2
        pad_own = torch.cat([own[:, :1], own, own[:, -1:]], 1)
        borrowed = torch.minimum(pad_own[:, :-2], pad_own[:, 2:])
        tau2 = torch.where(trust < 1, trust * own + (1 - trust) * borrowed, own).clamp_min(0)
        t = tau2[:, grid.shell] * tau2_fudge
        reg = torch.where(t > 0, sig / t.clamp_min(1e-20), torch.full_like(t, float("inf")))
        avg = torch.where(torch.isfinite(reg), num / (den + reg), torch.zeros_like(num))
        return avg * inside, tau2

    full, tau2 = filt(stats.num.sum(0), stats.den.sum(0))
    h0, _ = filt(stats.num[0], stats.den[0])
    h1, _ = filt(stats.num[1], stats.den[1])
    return ClassAverages(full=full, halves=torch.stack([h0, h1]), tau2=tau2)


def lowpass_by_class(
    values: torch.Tensor, grid: Band, radius: torch.Tensor, taper: float
) -> torch.Tensor:
    """Class averages (K, Q) complex on the class grid, each kept whole up to its radius (K,)
    (Fourier pixels; inf keeps everything) and faded to 0 over the next ``taper`` pixels by a
    raised cosine."""
    q = torch.sqrt(grid.kx**2 + grid.ky**2)[None, :]
    x = ((q - radius[:, None]) / taper).clamp(0, 1)
    return values * (0.5 * (1 + torch.cos(torch.pi * x))).to(values.dtype)


def noise_spectrum(stats: Statistics, previous: torch.Tensor) -> torch.Tensor:
    """Per-shell noise variance (n_shells,) of all particles from residual statistics; shells
    without data keep their previous value."""
    power, count = stats.noise_power.sum(0), stats.noise_count.sum(0)
    have = count > 1e-6
    est = power / count.clamp_min(1e-6)
    return torch.where(have, est, previous)


def noise_groups(batch: ParticleBatch, width_A: float) -> torch.Tensor:
    """(n,) long noise group of each particle: its mean defocus (Å) in bins of width_A, the last
    of NOISE_GROUPS bins taking every defocus beyond; all in group 0 without defocus."""
    p = batch.ctf_params
    if width_A <= 0 or "defocus_u_A" not in p:
        return torch.zeros(batch.n, dtype=torch.long, device=batch.images.device)
    mean = 0.5 * (p["defocus_u_A"] + p["defocus_v_A"])
    return (mean / width_A).floor().long().clamp(0, NOISE_GROUPS - 1).to(batch.images.device)


def group_whitening(stats: Statistics, sigma2: torch.Tensor, flat: bool = False) -> torch.Tensor:
    """(NOISE_GROUPS, n_shells) sigma2 / sigma2_g: the job's noise spectrum sigma2 (n_shells,)
    over each noise group's own, estimated from its residual power plus
    NOISE_GROUP_PRIOR_PARTICLES particles' worth of sigma2 (1 where a group has no data).
    flat: the ratio of their mean levels over all shells with data, the same in every shell
    (``Config.white_noise``).

    Scoring and averaging each particle with its group's spectrum, as RELION does per group of
    micrographs, is the same as using sigma2 for all on images and CTFs whitened by the square
    root of this ratio: the noise's part that is imaged through the CTF (ice) makes the
    spectrum depend on the defocus, and one spectrum for all lets classes split by defocus.
    """
    total = max(float(stats.weight.sum()), 1.0)
    prior = NOISE_GROUP_PRIOR_PARTICLES * stats.noise_count.sum(0) / total  # (n_shells,)
    power, count = stats.noise_power + prior * sigma2, stats.noise_count + prior
    have = stats.noise_count > 1e-6
    if flat:
        job = (prior * sigma2).sum() / prior.sum().clamp_min(1e-6)
        level = power.sum(1, keepdim=True) / count.sum(1, keepdim=True).clamp_min(1e-6)
        ratio = (job / level.clamp_min(1e-12)).expand_as(power)
        return torch.where(have.any(1, keepdim=True), ratio, 1.0)
    return torch.where(have, sigma2 / (power / count.clamp_min(1e-6)).clamp_min(1e-12), 1.0)
