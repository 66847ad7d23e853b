"""The one EM engine. Schedules (``cryoclass.schedules``: batch online EM + full passes,
streaming) call three things:

- ``initialise(batch)``: random-subset classes and the first noise spectrum;
- ``expectation(batch, factor)``: E-step for a batch -> per-particle results + the
  batch's sufficient statistics;
- ``absorb(batch_stats, n_new, replace=...)``: blend statistics into the model and rebuild the class
  averages (Wiener), noise spectrum, priors, resolution and working band (classes are
  re-centred only when written, ``outputs/recentre.py``).

Temperatures: the posterior over classes is softmax(score / T + log prior) with
T = max(1, f * spread / 4), spread the typical sd of a particle's class scores and f the annealing factor
(``initial_uncertainty_factor`` falling linearly to 0 over the annealing window, measured in
minibatches of particles processed, so batch and streaming anneal identically; the schedules
decide it, ``cryoclass.schedules.annealing``, and when to re-seed empty classes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.batch import ParticleBatch, highpass
from cryoclass.engine.class_merge import (
    SAME_VIEW_RATIO,
    kept_and_emptied,
    populated_ratios,
)
from cryoclass.engine.class_split import (
    FOUND,
    FOUND_THEN_LOST,
    MIN_SPLIT_MEMBERS,
    REPRODUCED,
    SAME_MEMBERS,
    SETTLED,
    SPLIT_TEST_RATIO,
    SplitRuns,
    agreement,
    best_agreement,
    division_candidates,
    empty_classes,
    pair_split,
    same_members,
    start_images,
    still_changing,
    still_settling,
    two_class_state,
)
from cryoclass.engine.device import gemm_dtype
from cryoclass.engine.estep import (
    PoseNeighbourhood,
    class_posterior,
    coarse_shift_indices,
    neighbourhood_scores,
    score_best_poses,
    score_coarse_to_fine,
    score_spread,
    shifted_matrix_fits,
    shifted_reference_matrix,
)
from cryoclass.engine.evidence import (
    accumulate_evidence,
    best_cross_by_shell,
    significant_resolution,
)
from cryoclass.engine.model import ModelState
from cryoclass.engine.mstep import (
    EVIDENCE_FIELDS,
    PARTICLE_FIELDS,
    Assignments,
    Statistics,
    accumulate,
    accumulate_noise,
    group_whitening,
    lowpass_by_class,
    noise_groups,
    noise_spectrum,
    wiener_averages,
)
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.poses import PoseGrid, psi_grid, shift_grid, working_steps
from cryoclass.engine.prepared_cache import PreparedCache
from cryoclass.engine.references import RotatedReferences, rotated_references
from cryoclass.physics.density import nonnegative_density
from cryoclass.physics.fourier import (
    Band,
    band_to_image,
    make_band,
    rfft_band,
    rotate_points,
    shell_frc,
    shell_sum,
)
from cryoclass.physics.masks import mask_outside_background, soft_circular_mask

MAX_CLASSES_PER_PARTICLE = 8  # pairs kept per particle in the M-step (renormalised)
MIN_PAIR_WEIGHT = 1e-2
# T = factor x UNCERTAINTY_SCALE x spread: with the CryoSPARC default factor 2 the first
# temperature is half the spread of class scores (best ARI on the bench's TRPV1 sets among
# factor x scale in 0.3 ... 2).
UNCERTAINTY_SCALE = 0.25
# force_max off: a particle's weight is spread over the poses next to its best one in this many
# of its best classes; poses below MIN_POSE_WEIGHT of the particle's best pose are dropped.
MARGINAL_CLASSES = 4
MIN_POSE_WEIGHT = 1e-2
MARGINAL_POSES = 4  # most probable poses kept per class (the M-step's cost grows with them)
EMPTY_CLASS_RESOLUTION_A = 999.0
MIN_BAND_RATIO = 2.5  # working radius >= this x the min_res radius once the high-pass applies
REFERENCE_TAPER = 6.0  # class references fade out over this many shells beyond their resolution


def pairs_weight_table(pairs: Assignments, n: int, k: int) -> torch.Tensor:
    """(n, K) summed pair weights of each particle and class."""
    out = torch.zeros(n * k, device=pairs.weight.device)
    return out.index_add_(0, pairs.row * k + pairs.cls, pairs.weight).view(n, k)


def _at_poses(
    row: torch.Tensor,
    cls: torch.Tensor,
    rot: torch.Tensor,
    shift: torch.Tensor,
    weight: torch.Tensor,
    poses: PoseGrid,
) -> Assignments:
    """(particle row, class, weight) pairs at pose-grid indices rot / shift (all (P,)), with the
    angles (degrees) and shifts (pixels) those indices stand for."""
    t = poses.shifts[shift]
    return Assignments(
        row=row,
        cls=cls,
        psi_deg=poses.psi[rot],
        tx=t[:, 0],
        ty=t[:, 1],
        weight=weight,
        rot=rot,
        shift=shift,
    )


@dataclass
class Scored:
    """A batch scored against the current classes (``Engine.score``), for ``Engine.conclude``.

    band: the alignment band (F points); poses: the pose grid; refs: the rotated class averages
    ((K, R, F) complex ``refs.values``); X: (n, F) complex particle coefficients; ctf: (n, F);
    both whitened by sqrt(spectral_weight) where it is given; inv_sigma2: (F,) the alignment
    weights (0 below min_res_A once it applies);
    best: (n, K) best score per class; rot, shf: (n, K) long indices of that pose in the grid;
    nearby: with force_max off, the scores of the poses around the best ones (else None);
    spectral_weight: ``Engine.spectral_weight`` of the batch (None: one spectrum for all);
    log_volume: where ``Engine.uses_marginal_class_scores``, (n, K) log sum over the coarse
    search's poses of exp(score - that search's best score) (``estep.score_best_poses``), else
    None.
    """

    band: Band
    poses: PoseGrid
    refs: RotatedReferences
    X: torch.Tensor
    ctf: torch.Tensor
    inv_sigma2: torch.Tensor
    best: torch.Tensor
    rot: torch.Tensor
    shf: torch.Tensor
    nearby: PoseNeighbourhood | None = None
    spectral_weight: torch.Tensor | None = None
    log_volume: torch.Tensor | None = None


class Engine:
    """Maximum-likelihood 2D classification engine for one box / pixel size."""

    def __init__(
        self, config: Config, box: int, pixel_size_A: float, device: torch.device | str = "cpu"
    ) -> None:
        self.cfg = config
        self.box = int(box)
        self.apix = float(pixel_size_A)
        self.device = torch.device(device)
        d_mask_A = config.mask_diameter_A or 0.85 * box * pixel_size_A
        d_mask_px = min(d_mask_A / pixel_size_A, box - 2.0)
        outer_px = (
            config.mask_diameter_outer_A / pixel_size_A if config.mask_diameter_outer_A else None
        )
        self.mask_radius_px = d_mask_px / 2.0
        self.particle_radius_A = d_mask_px * pixel_size_A / 2.0
        self.mask = soft_circular_mask(box, d_mask_px, outer_px, self.device)
        self.n_shells = box // 2 + 1
        self.grid = make_band(box, box / 2.0, include_dc=True, device=self.device)
        self.r_max = min(box * pixel_size_A / config.max_res_A, box / 2.0 - 1.0)
        self.r_min = (box * pixel_size_A / config.min_res_A) if config.min_res_A else 0.0
        self.rng = np.random.default_rng(config.seed)
        self.coarse_dtype = gemm_dtype(config.coarse_precision, self.device)
        self.state: ModelState | None = None
        # prepared images kept between iterations (``engine/source.py:load_batch``)
        self.prepared_cache: PreparedCache | None = None

    # ------------------------------------------------------------------ set-up
    def res_A(self, r: float) -> float:
        """Resolution (Å) of a Fourier radius r (pixels)."""
        return self.box * self.apix / max(r, 1e-6)

    def half_of(self, index: torch.Tensor) -> torch.Tensor:
        """Fixed half-set (0/1) of each particle, from its row number (for FRC)."""
        return (index % 2).long()

    def initialise(self, batch: ParticleBatch) -> ModelState:
        """Random-subset initial classes (unaligned, CTF-corrected, low-passed) and noise model.

        Each class averages a distinct random group of the batch's particles; the first noise
        spectrum is the particles' own power spectrum (signal included, an over-estimate that errs
        on the side of uncertainty).
        """
        k = self.cfg.n_classes
        n = batch.n
        # The minimum alignment resolution starts once the annealing has ended
        # (``_update_highpass``): until then the classes are built on the full band.
        r_init = min(self.box * self.apix / self.cfg.init_res_A, self.r_max)
        full = make_band(self.box, self.box / 2.0, r_lo=0.5, device=self.device)
        X = rfft_band(batch.images, full)
        power = shell_sum((X.real**2 + X.imag**2).mean(0, keepdim=True), full.shell, self.n_shells)[
            0
        ]
        counts = shell_sum(torch.ones(1, full.size, device=self.device), full.shell, self.n_shells)[
            0
        ]
        sigma2 = power / counts.clamp_min(1)
        sigma2[0] = sigma2[1] if self.n_shells > 1 else 1.0
        sigma2 = sigma2.clamp_min(1e-6)

        order = torch.as_tensor(self.rng.permutation(n), device=self.device)
        per = max(1, min(20, n // k))
        cls = torch.arange(k, device=self.device).repeat_interleave(per)
        rows = order.repeat(math.ceil(k * per / n))[: k * per] if n < k * per else order[: k * per]
        m = rows.numel()
        zeros = torch.zeros(m, device=self.device)
        pairs = Assignments(
            row=rows,
            cls=cls[:m],
            psi_deg=zeros,
            tx=zeros,
            ty=zeros,
            weight=torch.ones(m, device=self.device),
            rot=zeros.long(),
            shift=zeros.long(),
        )
        stats = Statistics.zeros(k, self.grid.size, self.n_shells, self.device)
        r_lp = min(self.box * self.apix / self.cfg.init_lowpass_A, self.r_max)
        gmask = self.grid_mask(r_lp)
        accumulate(batch, pairs, self.half_of(batch.index), self.grid, gmask, k, stats)
        self.state = ModelState(
            box=self.box,
            pixel_size_A=self.apix,
            class_images=torch.zeros(k, self.box, self.box, device=self.device),
            stats=stats,
            sigma2=sigma2,
            r_work=r_init,
            resolution_A=torch.full((k,), float(self.cfg.init_lowpass_A), device=self.device),
        )
        self._rebuild_classes(r_lp)
        # The initial statistics only seed the classes; they are not data evidence.
        self.state.stats = Statistics.zeros(k, self.grid.size, self.n_shells, self.device)
        return self.state

    def grid_mask(self, r: float) -> torch.Tensor:
        """(Q,) bool: class-grid points with |q| <= r (Fourier pixels)."""
        return torch.sqrt(self.grid.kx**2 + self.grid.ky**2) <= r + 1e-6

    # ------------------------------------------------------------------ E-step
    def pose_grid(self) -> PoseGrid:
        """Rotation/shift grid for the current working resolution."""
        psi_step, shift_step = working_steps(
            self.res_A(self.state.r_work),
            self.apix,
            self.particle_radius_A,
            self.cfg.psi_step_deg,
            self.cfg.shift_step_px,
        )
        return PoseGrid(
            psi_grid(psi_step, self.device),
            shift_grid(self.cfg.max_shift_px, shift_step, self.device),
            shift_step,
        )

    @property
    def groups_noise(self) -> bool:
        """Whether each noise group has its own spectrum (``Config.noise_group_width_um``; with
        white_noise its own flat level)."""
        return self.cfg.noise_group_width_um > 0

    def noise_group(self, batch: ParticleBatch) -> torch.Tensor:
        """(n,) long noise group of each particle of the batch (``mstep.noise_groups``)."""
        return noise_groups(batch, 1e4 * self.cfg.noise_group_width_um)

    def spectral_weight(self, batch: ParticleBatch) -> torch.Tensor | None:
        """(n, n_shells) each particle's sigma2 / its noise group's sigma2
        (``mstep.group_whitening``), or None where all share one spectrum."""
        w = self.state.noise_whitening
        if w is None or not self.groups_noise:
            return None
        return w[self.noise_group(batch)]

    def alignment_band(self) -> tuple[Band, torch.Tensor]:
        """Particle-grid band up to the working radius, and (F,) 1/sigma2 weights with the
        frequencies below 1/min_res_A (if set) weighted 0."""
        band = make_band(self.box, self.state.r_work, r_lo=0.5, device=self.device)
        sig = self.state.sigma2
        if self.cfg.white_noise:
            cnt = shell_sum(
                torch.ones(1, band.size, device=self.device), band.shell, self.n_shells
            )[0]
            flat = float((sig * cnt).sum() / cnt.sum())
            inv = torch.full((band.size,), 1.0 / flat, device=self.device)
        else:
            inv = 1.0 / sig[band.shell]
        if self.highpass_active:
            r = torch.sqrt(band.kx**2 + band.ky**2)
            inv = torch.where(r < self.r_min, torch.zeros_like(inv), inv)
        return band, inv

    @property
    def highpass_active(self) -> bool:
        """Whether the minimum alignment resolution applies now (set, and the annealing over)."""
        return self.r_min > 0 and self.state is not None and self.state.highpass_on

    def expectation(
        self, batch: ParticleBatch, factor: float, hard: bool = False, noise: bool = True
    ) -> tuple[ParticleResult, Statistics, float]:
        """E-step on a batch and its sufficient statistics (not yet absorbed).

        factor: annealing factor (``cryoclass.schedules.annealing``); hard: one-hot posteriors.
        Returns per-particle results, the batch statistics, and the temperature used.
        Same as ``conclude(batch, s, batch_temperature(factor, s.best))`` with ``s = score(batch)``:
        a sharded E-step scores the shards, takes the temperature of all their scores, then
        concludes each shard (``cryoclass.distributed``).
        """
        scored = self.score(batch)
        return self.conclude(
            batch, scored, self.batch_temperature(factor, scored.best), hard, noise
        )

    def score(self, batch: ParticleBatch, refs: RotatedReferences | None = None) -> "Scored":
        """First half of the E-step: best pose and score of every particle in every class.
        refs: ``Scored.refs`` of another batch scored with the same model, to reuse its rotated
        class averages (the same values) instead of rotating them again."""
        band, inv_sigma2 = self.alignment_band()
        poses = self.pose_grid()
        if refs is None:
            refs = RotatedReferences(rotated_references(self.alignment_images(), band, poses.psi))
        X = batch.band(band, highpassed=self.highpass_active)
        ctf = batch.band_ctf(band)
        weight = self.spectral_weight(batch)
        if weight is not None:  # each particle scored with its noise group's spectrum
            whiten = weight.sqrt()[:, band.shell]
            X, ctf = X * whiten, ctf * whiten
        prior = self.shift_log_prior(poses)
        volume = None
        if self.uses_marginal_class_scores:
            volume = torch.empty(batch.n, self.state.n_classes, device=self.device)
        if self.cfg.exhaustive_search or poses.n_rot % 2 or poses.n_shift < 9:
            best, rot, shf = score_best_poses(
                X,
                ctf,
                inv_sigma2,
                refs.values,
                poses.shifts,
                band,
                shift_prior=prior,
                log_volume=volume,
            )
        else:
            best, rot, shf = score_coarse_to_fine(
                X,
                ctf,
                inv_sigma2,
                refs.values,
                poses.shifts,
                poses.shift_step,
                band,
                coarse_dtype=self.coarse_dtype,
                coarse_matrix=self._coarse_matrix(refs, poses, band),
                shift_prior=prior,
                log_volume=volume,
            )
        nearby = None
        if not self.cfg.force_max:
            top = best.topk(min(MARGINAL_CLASSES, best.shape[1]), dim=1).indices
            nearby = neighbourhood_scores(
                X,
                ctf,
                inv_sigma2,
                refs.values,
                poses.shifts,
                poses.shift_step,
                band,
                top,
                rot,
                shf,
                shift_prior=prior,
            )
        return Scored(band, poses, refs, X, ctf, inv_sigma2, best, rot, shf, nearby, weight, volume)

    def shift_log_prior(self, poses: PoseGrid) -> torch.Tensor:
        """(K, R, S) log prior of each rotation and shift of the pose grid in each class: a
        Gaussian on the shift in the class frame, R_psi t (``ModelState.shift_prior``)."""
        mean, sd = self.state.shift_prior(self.cfg)
        u, v = rotate_points(poses.shifts[:, 0], poses.shifts[:, 1], poses.psi)  # (R, S) each
        d2 = (u[None] - mean[:, 0, None, None]) ** 2 + (v[None] - mean[:, 1, None, None]) ** 2
        return -d2 / (2.0 * sd * sd)

    def _coarse_matrix(
        self, refs: RotatedReferences, poses: PoseGrid, band: Band
    ) -> torch.Tensor | None:
        """The coarse search's shifted-reference matrix, built once per model; None when it
        would exceed SHIFTED_REFS_BUDGET (the search then shifts the particles instead)."""
        k, r, f = refs.values.shape
        coarse_s = coarse_shift_indices(poses.shifts, poses.shift_step)
        if not shifted_matrix_fits(k * (r // 2) * coarse_s.numel(), f, self.coarse_dtype):
            return None
        return refs.memo(
            ("coarse", self.coarse_dtype),
            lambda: shifted_reference_matrix(
                refs.values[:, ::2], poses.shifts[coarse_s], band, self.coarse_dtype
            ),
        )

    def alignment_images(self) -> torch.Tensor:
        """(K, D, D) class images the particles are aligned to. With min_res_A they are
        high-passed *before* masking, as the particles' alignment copies are: masking first
        would turn a strong low-resolution belt's cut edge into high-frequency ringing."""
        st = self.state
        return st.class_images if st.alignment_images is None else st.alignment_images

    def alignment_copy(self, unmasked: torch.Tensor) -> torch.Tensor | None:
        """The alignment images (ModelState.alignment_images) of unmasked class images
        (K, D, D): high-passed at min_res_A, then masked; None without min_res_A."""
        return highpass(unmasked, self.r_min) * self.mask if self.highpass_active else None

    def batch_temperature(self, factor: float, best: torch.Tensor) -> float:
        """Temperature of an E-step at annealing factor ``factor`` on particles whose best
        scores per class are ``best`` (n, K)."""
        return max(1.0, factor * UNCERTAINTY_SCALE * score_spread(best))

    def conclude(
        self,
        batch: ParticleBatch,
        scored: "Scored",
        temperature: float,
        hard: bool = False,
        noise: bool = True,
    ) -> tuple[ParticleResult, Statistics, float]:
        """Second half of the E-step: posteriors at ``temperature`` and the batch statistics.
        Returns as ``expectation``."""
        st = self.state
        k = st.n_classes
        band, poses, refs, X, ctf = scored.band, scored.poses, scored.refs, scored.X, scored.ctf
        best, rot, shf = scored.best, scored.rot, scored.shf
        near = scored.nearby
        post = self._class_posterior(scored, temperature)
        if hard:
            post = torch.nn.functional.one_hot(post.argmax(1), k).float()
        pairs = self._pairs(post, rot, shf, poses)
        if near is not None and not hard:
            pairs = self._spread_over_poses(pairs, post, near, temperature, poses)
        stats = Statistics.zeros(k, self.grid.size, self.n_shells, self.device)
        weight = scored.spectral_weight
        gmask = self.grid_mask(st.r_work)
        accumulate(batch, pairs, self.half_of(batch.index), self.grid, gmask, k, stats, weight)
        if noise:
            group = self.noise_group(batch)
            accumulate_noise(
                X, ctf, refs.values, poses.shifts, band, pairs, self.n_shells, stats, group, weight
            )
        top = post.argmax(1)
        self._accumulate_evidence(batch, scored, stats)
        ar = torch.arange(batch.n, device=self.device)
        t = poses.shifts[shf[ar, top]]
        result = ParticleResult(
            index=batch.index.cpu().numpy(),
            cls=top.cpu().numpy(),
            psi_deg=poses.psi[rot[ar, top]].cpu().numpy(),
            tx=t[:, 0].cpu().numpy(),
            ty=t[:, 1].cpu().numpy(),
            max_prob=post.max(1).values.cpu().numpy(),
            n_significant=(post > 0.01).sum(1).cpu().numpy(),
            log_likelihood=best[ar, top].cpu().numpy(),
            posterior=post.cpu().numpy(),
        )
        return result, stats, temperature

    def _class_posterior(self, scored: "Scored", temperature: float) -> torch.Tensor:
        """(n, K) posterior over classes of scored particles at ``temperature``: each class's
        score summed over the coarse search's poses where ``uses_marginal_class_scores``
        (best + log_volume, the volume taken at temperature 1), else its best score, or with
        force_max off its scores summed over the poses kept; plus the log class prior where
        ``uses_class_prior``."""
        k = self.state.n_classes
        log_prior = (
            self.state.log_prior() if self.uses_class_prior else torch.zeros(k, device=self.device)
        )
        class_score, near = scored.best, scored.nearby
        if scored.log_volume is not None:
            class_score = class_score + scored.log_volume
        elif near is not None:
            class_score = class_score.scatter(
                1, near.cls, temperature * torch.logsumexp(near.score / temperature, dim=2)
            )
        return class_posterior(class_score, log_prior, temperature)[0]

    @property
    def uses_marginal_class_scores(self) -> bool:
        """Whether classes score particles by their likelihood summed over the poses now
        (``Config.class_score`` marginal): once a full pass has replaced the statistics
        (``ModelState.background_removed``). Not in the online phase, where the classes are
        still forming: there one class that fits loosely at many poses drew the particles of
        two views (tests/jobs/test_min_res_micelle.py, batch: ARI 0.50 against 0.96 with the
        best pose; docs/status.md, session 33)."""
        return self.cfg.class_score == "marginal" and self.state.background_removed

    @property
    def uses_class_prior(self) -> bool:
        """Whether class posteriors include the log class prior now (``Config.class_prior``):
        always, or with full_passes once a full pass has replaced the statistics
        (``ModelState.background_removed`` marks it) and outside the split test's 2-class runs
        (``ModelState.fixed_resolution_A``), which start from equal classes."""
        mode = self.cfg.class_prior
        if mode == "always":
            return True
        st = self.state
        return mode == "full_passes" and st.background_removed and st.fixed_resolution_A is None

    def labels(self, batch: ParticleBatch) -> np.ndarray:
        """(n,) most probable class of each particle of the batch at annealing factor 0: the
        classes ``expectation(batch, 0.0)`` gives, without its statistics."""
        scored = self.score(batch)
        return self.scored_labels(scored, self.batch_temperature(0.0, scored.best))

    def scored_labels(self, scored: "Scored", temperature: float) -> np.ndarray:
        """(n,) most probable class of each scored particle at ``temperature``: the classes
        ``conclude(batch, scored, temperature)`` gives, without its statistics."""
        return self._class_posterior(scored, temperature).argmax(1).cpu().numpy()

    def _accumulate_evidence(
        self, batch: ParticleBatch, scored: "Scored", stats: Statistics
    ) -> None:
        """Add the batch's signal evidence (``evidence.py``) to the statistics: each particle
        searched over the other half-set's averages of every class, on the coarse pose grid
        (every second rotation, shifts on the lattice of twice the step), against its
        sign-flipped control."""
        st = self.state
        if st.half_images is None or st.fixed_resolution_A is not None or batch.n == 0:
            return
        band, poses = scored.band, scored.poses
        psi = poses.psi[::2] if poses.n_rot % 2 == 0 else poses.psi
        shifts = poses.shifts[coarse_shift_indices(poses.shifts, poses.shift_step)]
        k = st.n_classes
        halves = scored.refs.memo(
            ("halves", psi.numel()),
            lambda: rotated_references(
                st.half_images.reshape(2 * k, self.box, self.box), band, psi
            ),
        )  # (2K, R, F)
        other = 1 - self.half_of(batch.index)
        for h in (0, 1):
            rows = torch.nonzero(other == h).squeeze(1)
            if rows.numel() == 0:
                continue
            refs = halves[h * k : (h + 1) * k]
            matrix = scored.refs.memo(
                ("halves_matrix", h, psi.numel()),
                lambda: shifted_reference_matrix(refs, shifts, band, self.coarse_dtype),
            )
            cls, cls_c, cross, cross_c = best_cross_by_shell(
                scored.X[rows],
                scored.ctf[rows],
                scored.inv_sigma2,
                refs,
                matrix,
                shifts,
                band,
                self.n_shells,
            )
            accumulate_evidence(
                stats.evidence, stats.evidence_sq, stats.evidence_n, cls, cls_c, cross, cross_c
            )

    def _pairs(
        self, post: torch.Tensor, rot: torch.Tensor, shf: torch.Tensor, poses: PoseGrid
    ) -> Assignments:
        """(particle, class) pairs with their best pose, top classes only, renormalised."""
        n, k = post.shape
        top = min(k, MAX_CLASSES_PER_PARTICLE)
        w, cls = post.topk(top, dim=1)
        w = torch.where(w >= MIN_PAIR_WEIGHT * w[:, :1], w, torch.zeros_like(w))
        w = w / w.sum(1, keepdim=True)
        rows = torch.arange(n, device=self.device)[:, None].expand(n, top)
        keep = w > 0
        row, c, ww = rows[keep], cls[keep], w[keep]
        return _at_poses(row, c, rot[row, c], shf[row, c], ww, poses)

    def _spread_over_poses(
        self,
        pairs: Assignments,
        post: torch.Tensor,
        near: PoseNeighbourhood,
        temperature: float,
        poses: PoseGrid,
    ) -> Assignments:
        """force_max off: pairs of the classes in ``near`` are replaced by their neighbourhood's
        MARGINAL_POSES most probable poses, weighted by the class weight x softmax(pose score /
        T); poses under MIN_POSE_WEIGHT of the particle's largest weight are dropped, weights
        renormalised."""
        n, m_top, p = near.score.shape
        local = (pairs.cls[:, None] == near.cls[pairs.row]).any(1)  # (pairs,)
        w_cls = torch.gather(pairs_weight_table(pairs, n, post.shape[1]), 1, near.cls)
        w = w_cls[:, :, None] * torch.softmax(near.score / temperature, dim=2)  # (n, M, P)
        w, top_p = w.topk(min(MARGINAL_POSES, p), dim=2)  # (n, M, P')
        shape = top_p.shape
        keep_pairs = ~local
        row = torch.cat(
            [
                pairs.row[keep_pairs],
                torch.arange(n, device=self.device)[:, None, None].expand(shape).reshape(-1),
            ]
        )
        c = torch.cat([pairs.cls[keep_pairs], near.cls[:, :, None].expand(shape).reshape(-1)])
        r_i = torch.cat([pairs.rot[keep_pairs], torch.gather(near.rot, 2, top_p).reshape(-1)])
        s_i = torch.cat([pairs.shift[keep_pairs], torch.gather(near.shift, 2, top_p).reshape(-1)])
        ww = torch.cat([pairs.weight[keep_pairs], w.reshape(-1)])
        top = torch.zeros(n, device=self.device).scatter_reduce_(0, row, ww, "amax")
        keep = ww >= MIN_POSE_WEIGHT * top[row]
        row, c, r_i, s_i, ww = row[keep], c[keep], r_i[keep], s_i[keep], ww[keep]
        total = torch.zeros(n, device=self.device).index_add_(0, row, ww)
        return _at_poses(row, c, r_i, s_i, ww / total[row].clamp_min(1e-30), poses)

    # ------------------------------------------------------------------ M-step
    def absorb(
        self, batch_stats: Statistics, n_new: int, n_new_distinct: int, replace: bool = False
    ) -> None:
        """Blend a batch's statistics into the model and rebuild the classes.

        Online EM: stats <- (p_old / p_new) stats + batch, p = particles processed, so a particle's
        weight is (count when it was processed) / (count now), independent of how the particles
        were chunked; then rescaled so the total weight never exceeds the distinct particles seen
        (the Wiener filter must not trust revisits as new evidence). replace=True (a full pass)
        takes the batch statistics as they are.
        """
        st = self.state
        st.distinct_seen += n_new_distinct
        if replace:
            st.stats = batch_stats
            st.processed = float(st.distinct_seen)
            st.background_removed = True
        else:
            p_old, p_new = st.processed, st.processed + n_new
            st.stats = st.stats.scaled(p_old / p_new).add_(batch_stats)
            st.processed = p_new
            total = st.stats.total_weight
            if total > st.distinct_seen > 0:
                st.stats = st.stats.scaled(st.distinct_seen / total)
        st.sigma2 = noise_spectrum(st.stats, st.sigma2)
        if self.groups_noise:
            st.noise_whitening = group_whitening(st.stats, st.sigma2, self.cfg.white_noise)
        st.iteration += 1
        self._update_highpass(full_pass=replace)
        self._rebuild_classes(st.r_work)
        # The band follows the classes once per minibatch of particles processed (and after
        # every full pass), not once per update: a stream makes many small updates, and a band
        # that grew at each would outrun the classes' signal (batch == stream by construction).
        due = min(self.cfg.minibatch_size, max(st.distinct_seen, 1))
        if replace or st.processed - st.band_grown_at >= due - 0.5:
            self._update_working_resolution()
            st.band_grown_at = st.processed

    def _update_highpass(self, full_pass: bool = False) -> None:
        """Start the minimum alignment resolution once the annealing has ended (in minibatches
        of particles processed, so batch and streaming start it at the same point), or after a
        full pass (full passes run unannealed). At low SNR most of a particle's signal is below
        1/min_res: classes first built in the high-passed band alone are noise, so they are built
        on the full band first. From then on the band reaches at least MIN_BAND_RATIO x the
        min_res radius, to leave something to align on."""
        st = self.state
        if self.r_min <= 0 or st.highpass_on:
            return
        p = st.processed / float(self.cfg.minibatch_size)
        if full_pass or p >= self.cfg.sigma_anneal_start + self.cfg.sigma_anneal_iters:
            st.highpass_on = True
            st.r_work = min(max(st.r_work, MIN_BAND_RATIO * self.r_min), self.r_max)

    def _rebuild_classes(self, r: float) -> None:
        """Class averages, half-set averages and resolutions from the statistics, in the band
        of radius r (Fourier pixels). Each class's reference (``class_images``, what particles
        are aligned to and what is written) is whole up to its own resolution
        (``reference_radius``) and fades out over the next REFERENCE_TAPER shells, and is clamped
        to density of its own sign when ``clamps_density``; the half-set averages keep the whole
        band, unclamped, so the evidence for finer shells can still build up."""
        st = self.state
        gmask = self.grid_mask(r)
        avg = wiener_averages(st.stats, st.sigma2, self.grid, gmask, self.cfg.tau2_fudge)
        halves = band_to_image(avg.halves.reshape(-1, self.grid.size), self.grid)
        halves = self._masked(halves.view(2, st.n_classes, self.box, self.box).real.float())
        st.half_images = halves
        if st.fixed_resolution_A is not None:
            st.resolution_A = st.fixed_resolution_A.clone()
            st.reference_resolution_A = st.fixed_resolution_A.clone()
        else:
            self._measure_resolution(halves, r)
        full = lowpass_by_class(avg.full, self.grid, self.reference_radius(r), REFERENCE_TAPER)
        imgs = band_to_image(full, self.grid).real.float()
        st.class_images = self._masked(imgs)
        if self.clamps_density:
            st.class_images = nonnegative_density(st.class_images)
        st.alignment_images = self.alignment_copy(imgs)

    @property
    def clamps_density(self) -> bool:
        """Whether the references are clamped to non-negative density now
        (``nonnegative_references``): from the first full pass on, once their background level
        is removed (before it the solvent is not at 0), and not with skip_ctf, whose averages
        keep the CTF's negative fringes."""
        cfg = self.cfg
        return cfg.nonnegative_references and not cfg.skip_ctf and self.state.background_removed

    def _masked(self, images: torch.Tensor) -> torch.Tensor:
        """(..., D, D) averages masked as the model is now (``ModelState.background_removed``).

        The averages carry a broad positive halo out to the mask edge (likely because the
        particles are masked before the CTF is divided out); masked plainly, every class holds
        the same ring at the edge, which draws the particles of look-alike views into a few
        classes (strudel6272 fell from ten classes started at the true views to four). Subtracting
        the level outside the mask first removes the ring. During the online phase the
        subtraction cost the channels in micelles (two side views merged on p2x7_micelle),
        so it starts with the full passes (docs/status.md, session 21)."""
        if self.state.background_removed:
            return mask_outside_background(images, self.mask)
        return images * self.mask

    def _measure_resolution(self, halves: torch.Tensor, r: float) -> None:
        """The classes' resolution_A and reference_resolution_A from their half-set averages
        halves ((2, K, D, D)) and signal evidence, in the band of radius r (Fourier pixels)."""
        st = self.state
        res = self._frc_resolution(halves[0], halves[1], r)
        # The FRC of half-sets aligned to one average is inflated by aligned noise: report no
        # better than the shells whose signal evidence is significant (evidence.py). A class
        # without evidence, or without particles, has no resolution: 999 Å, as RELION writes.
        # Reported: either evidence test; references and band: the summed test alone (evidence.py).
        s = st.stats
        shells = significant_resolution(s.evidence, s.evidence_sq, s.evidence_n, r)
        no_particles = s.weight.sum(0) <= 0.5

        def limited(shell: torch.Tensor) -> torch.Tensor:
            at = torch.maximum(res, self.box * self.apix / shell.clamp_min(1).float())
            empty = no_particles | (shell == 0)
            return torch.where(empty, torch.full_like(at, EMPTY_CLASS_RESOLUTION_A), at)

        st.resolution_A = limited(shells.reported)
        st.reference_resolution_A = limited(shells.summed)

    def reference_radius(self, r: float) -> torch.Tensor:
        """(K,) radius (Fourier pixels) up to which each class reference is whole (it fades out
        over the next REFERENCE_TAPER shells): its resolution, at least the radius of
        init_res_A, at most r. With min_res_A the references stay whole (inf): above the
        high-pass the evidence builds up slowly, and references cut at it starved the alignment
        (tests/jobs/test_min_res_micelle.py: ARI 0.4-0.6 instead of > 0.8, batch and
        streaming).

        Beyond a class's resolution its average holds noise aligned to it, which the Wiener
        filter's power estimate takes for signal: particles aligned to it again make it
        stronger (small classes of real data turn into stripe patterns) and it draws particles
        by their noise. Refinement filters its reference at its resolution for the same
        reason; the soft edge keeps some of the weak signal beyond it and lets a class's
        resolution grow."""
        st = self.state
        if self.r_min > 0:
            return torch.full_like(st.resolution_A, float("inf"))
        floor = min(self.box * self.apix / self.cfg.init_res_A, r)
        own = self.box * self.apix / st.working_resolution_A
        return own.clamp(min=floor, max=r)

    def _frc_resolution(self, a: torch.Tensor, b: torch.Tensor, r: float) -> torch.Tensor:
        """(K,) resolution (Å) where the FRC of the half-set averages falls below 0.143."""
        band = make_band(self.box, r, r_lo=0.5, device=self.device)
        frc = shell_frc(rfft_band(a, band), rfft_band(b, band), band.shell, self.n_shells)
        shells = torch.arange(self.n_shells, device=self.device)
        valid = (shells >= 1) & (shells <= int(r))
        below = (frc < 0.143) & valid[None]
        below[:, int(r) + 1 :] = True
        below[:, 0] = False
        first = torch.argmax(below.int(), dim=1).clamp_min(1)
        last_good = (first - 1).clamp_min(1).float()
        return self.box * self.apix / last_good

    def _update_working_resolution(self) -> None:
        """Grow the working band to follow the classes' resolution, never beyond max_res_A."""
        st = self.state
        w = self.state.class_weights
        if float(w.sum()) <= 0:
            return
        res = st.working_resolution_A
        best_A = float(res[w > 0.2 * w.mean()].min()) if (w > 0).any() else 1e9
        r_est = self.box * self.apix / best_A
        r_new = min(self.r_max, max(st.r_work, 1.25 * r_est + 2.0))
        st.r_work = r_new

    def merge_duplicates(
        self,
        load: Callable[[np.ndarray], ParticleBatch],
        cls: np.ndarray,
        redrawn: list[tuple[int, int]] | None = None,
    ) -> list[tuple[int, int, float]]:
        """Empty one class of every pair that shows one view: the class with less weight loses
        its statistics, so its particles go to the other at the next E-step. Given the pass's
        classes cls ((n,) by particle row) and load (rows -> their prepared batch), a pair
        shows one view when its averages look alike and a new 2-class run does not find their
        split again (``_unreproduced_pairs``); a pair whose runs agree on another split takes
        that split instead (appended to redrawn, when given). A merged pair's kept class
        counts as undivided (``ModelState.undivided``: ``divide_classes`` does not split it
        again while it keeps most of the pair's particles). Returns (kept, emptied, ratio) per
        pair."""
        st = self.state
        if st.half_images is None:
            return []
        w = st.class_weights
        ratios = populated_ratios(st.half_images, w, st.r_work, self.cfg.max_shift_px)
        pairs = self._unreproduced_pairs(ratios, load, cls, redrawn)
        for keep, drop, _ in pairs:
            st.stats.clear_class_(drop)
            # found to show one view: not divided again while so
            st.undivided[keep] = np.nonzero((cls == keep) | (cls == drop))[0]
            st.undivided.pop(drop, None)
        if pairs:
            self._rebuild_classes(st.r_work)
        return pairs

    def _unreproduced_pairs(
        self,
        ratios: dict[tuple[int, int], float],
        load: Callable[[np.ndarray], ParticleBatch],
        cls: np.ndarray,
        redrawn: list[tuple[int, int]] | None = None,
    ) -> list[tuple[int, int, float]]:
        """Pairs whose ratio is at least SPLIT_TEST_RATIO and whose split a new run does not
        reproduce (``class_split.best_agreement`` below REPRODUCED, or below FOUND_THEN_LOST for
        a pair whose split once came back at FOUND or more, ``ModelState.split_found``), most
        alike first, each class in at most one merged pair: (kept, emptied, ratio), the kept
        class the one with more weight. Averages that agree as one signal
        (``class_merge.SAME_VIEW_RATIO``) are tested too: similar distinct views reach it
        (docs/status.md, session 31). A pair whose runs agree with each other on another split
        is not merged but takes that split (``take_split``; appended to redrawn). A pair with
        fewer than MIN_SPLIT_MEMBERS particles in a class (cls, (n,) by row) is not tested: it
        is merged at SAME_VIEW_RATIO and kept below. Nor is a settled pair
        (``ModelState.settled_splits``) that keeps SAME_MEMBERS of its particles; load(rows)
        prepares a batch."""
        w = self.state.class_weights
        settled = self.state.settled_splits
        used: set[int] = set()
        out = []
        for (a, b), ratio in sorted(ratios.items(), key=lambda kv: -kv[1]):
            if ratio < SPLIT_TEST_RATIO or a in used or b in used:
                continue
            rows, old, smaller = pair_split(cls, a, b)
            if smaller < MIN_SPLIT_MEMBERS:
                if ratio >= SAME_VIEW_RATIO:  # too few particles to test: the averages decide
                    used.update((a, b))
                    out.append((*kept_and_emptied(a, b, w), ratio))
                continue
            if (a, b) in settled and same_members(settled[(a, b)], rows) >= SAME_MEMBERS:
                continue
            runs, run_stats = self.split_runs(load(rows), old, a, b)
            found = runs.found
            settled.pop((a, b), None)
            if found >= SETTLED:
                settled[(a, b)] = rows
            before = self.state.split_found.get((a, b), 0.0)
            self.state.split_found[(a, b)] = max(before, found)
            if found < (FOUND_THEN_LOST if before >= FOUND else REPRODUCED):
                used.update((a, b))
                if runs.agreed is not None and self.take_split(
                    a, b, run_stats[runs.agreed], (a, b), runs.mutual
                ):
                    if redrawn is not None:
                        redrawn.append((a, b))
                    continue
                keep, drop = kept_and_emptied(a, b, w)
                out.append((keep, drop, ratio))
        return out

    def divide_classes(
        self,
        load: Callable[[np.ndarray], ParticleBatch],
        cls: np.ndarray,
        exclude: Collection[int] = (),
    ) -> list[tuple[int, int]]:
        """While a class is empty, test the largest classes (``division_candidates``; not those
        in exclude, whose statistics this pass's merging changed) for a split of their own
        particles (cls, (n,) class by row; load(rows) prepares a batch): 2-class runs from
        symmetric starts, and where two runs agree on a split (``class_split.AGREED``) the
        class keeps one side and an empty class takes the other (``take_split``). A class whose
        runs do not agree is remembered (``ModelState.undivided``) and not tested again while
        it keeps SAME_MEMBERS of its particles. Returns (divided class, filled class) per
        division."""
        st = self.state
        weights = st.class_weights.detach().cpu().numpy()
        taken = {int(c) for c in exclude}  # neither tested nor filled in this pass
        members = {c: np.nonzero(cls == c)[0] for c in range(st.n_classes) if c not in taken}
        out = []
        for c in division_candidates(weights, members, st.undivided):
            empty = [int(e) for e in np.nonzero(empty_classes(weights))[0] if int(e) not in taken]
            if not empty:
                break
            rows = members[c]
            runs, run_stats = self.split_runs(load(rows), None, c, c)
            st.undivided.pop(c, None)
            if runs.agreed is None or not self.take_split(
                c, empty[0], run_stats[runs.agreed], (c,), runs.mutual
            ):
                st.undivided[c] = rows
                continue
            taken.update((c, empty[0]))
            st.undivided.pop(empty[0], None)
            out.append((c, empty[0]))
        return out

    def take_split(
        self,
        a: int,
        b: int,
        split: Statistics,
        evidence_from: tuple[int, ...],
        found: float,
    ) -> bool:
        """Classes a and b become the two classes of a 2-class run (split: its statistics),
        scaled to the weight that classes evidence_from hold now; the signal evidence of
        evidence_from, pooled, is shared between them by weight (the run gathers none). The
        pair's split counts as found at ``found`` (``ModelState.split_found``: a later split
        test merges it only on a clear failure, so the next pass's test does not undo it).
        False, and nothing changed, when a side holds fewer than MIN_SPLIT_MEMBERS
        particles."""
        st = self.state.stats
        sides = split.weight.sum(0)  # (2,)
        if float(sides.min()) < MIN_SPLIT_MEMBERS:
            return False
        total = float(st.weight[:, list(evidence_from)].sum())
        factor = total / float(sides.sum())
        share = (sides / sides.sum()).tolist()
        pooled = Statistics.zeros(1, self.grid.size, self.n_shells, self.device)
        for c in evidence_from:
            for name in EVIDENCE_FIELDS:
                getattr(pooled, name)[0] += getattr(st, name)[c]
        for c, j in ((a, 0), (b, 1)):
            st.set_class_(c, split, j, factor, fields=PARTICLE_FIELDS)
            st.set_class_(c, pooled, 0, share[j], fields=EVIDENCE_FIELDS)
        pair = (min(a, b), max(a, b))
        self.state.settled_splits.pop(pair, None)
        self.state.split_found[pair] = max(self.state.split_found.get(pair, 0.0), found)
        self._rebuild_classes(self.state.r_work)
        return True

    def split_agreement(self, batch: ParticleBatch, old: np.ndarray, a: int, b: int) -> float:
        """Best agreement of the 2-class runs (``split_runs``) with the old split."""
        return self.split_runs(batch, old, a, b)[0].found

    def split_runs(
        self, batch: ParticleBatch, old: np.ndarray | None, a: int, b: int
    ) -> tuple[SplitRuns, list[Statistics]]:
        """2-class runs from symmetric starts made from class a's average, on the batch's
        particles, against the split old ((n,) 0/1 labels, classes a / b; None to test class
        a alone, b = a) (``class_split.best_agreement``): each run full passes over the batch
        at annealing factor 0, at least SPLIT_ITERATIONS and more while its split still settles
        (``still_settling``; a class alone: ``still_changing``), then the labels of one more
        E-step. The runs' references are faded at the finer of the two classes' resolutions in
        this model (``reference_radius``), held fixed: they gather no signal evidence of their
        own.
        Returns what the runs found and each run's last statistics (2 classes)."""
        cfg = self.cfg.model_copy(update={"n_classes": 2, "seed": self.cfg.seed + 7})
        sub = Engine(cfg, self.box, self.apix, self.device)
        r_lowpass = self.box * self.apix / self.cfg.init_res_A
        pair_res = float(self.state.working_resolution_A[[a, b]].min())
        run_stats: list[Statistics] = []

        def starts(i: int) -> torch.Tensor:
            image = self.state.class_images[a]
            return start_images(image, self.grid, self.mask, r_lowpass, self.cfg.seed + 101 * i)

        def run(imgs: torch.Tensor) -> np.ndarray:
            sub.state = two_class_state(self.state, imgs, self.grid.size, self.n_shells, pair_res)
            sub.state.alignment_images = sub.alignment_copy(imgs)
            done, before, last = 0, 0.0, None
            while True:
                scored = sub.score(batch)
                temperature = sub.batch_temperature(0.0, scored.best)
                labels = sub.scored_labels(scored, temperature)
                if old is None:
                    changed = 1.0 if last is None else float(np.mean(labels != last))
                    go_on = still_changing(done, changed)
                else:
                    now = agreement(old, labels)
                    go_on = still_settling(done, now, before)
                if not go_on:
                    run_stats.append(sub.state.stats)
                    return labels
                _, stats, _ = sub.conclude(batch, scored, temperature)
                sub.state.distinct_seen = 0
                sub.absorb(stats, batch.n, batch.n, replace=True)
                done, last = done + 1, labels
                if old is not None:
                    before = now

        return best_agreement(old, starts, run), run_stats

    def reseed_empty(self, batch: ParticleBatch, result: ParticleResult) -> list[int]:
        """Classes with less than RESEED_FRACTION of the mean class weight restart from a random
        half of the largest class's particles in this batch (aligned as that class). Returns the
        re-seeded classes."""
        st = self.state
        w = st.class_weights
        k = st.n_classes
        if k < 2 or float(w.sum()) <= 0:
            return []
        empty = torch.nonzero(empty_classes(w)).squeeze(1).tolist()
        done = []
        for e in empty:  # at most a few classes per iteration; each is one batched accumulate
            largest = int(torch.argmax(st.class_weights))
            members = np.nonzero(result.cls == largest)[0]
            if members.size < 4:
                break
            pick = self.rng.choice(members, size=members.size // 2, replace=False)
            # only the picked particles' transforms are needed, not the whole batch's
            sub = batch.rows(torch.as_tensor(pick, device=self.device))
            m = sub.n
            pairs = Assignments(
                row=torch.arange(m, device=self.device),
                cls=torch.full((m,), e, device=self.device),
                psi_deg=torch.as_tensor(result.psi_deg[pick], device=self.device),
                tx=torch.as_tensor(result.tx[pick], device=self.device),
                ty=torch.as_tensor(result.ty[pick], device=self.device),
                weight=torch.ones(m, device=self.device),
                rot=torch.zeros(m, dtype=torch.long, device=self.device),
                shift=torch.zeros(m, dtype=torch.long, device=self.device),
            )
            tmp = Statistics.zeros(k, self.grid.size, self.n_shells, self.device)
            accumulate(
                sub,
                pairs,
                self.half_of(sub.index),
                self.grid,
                self.grid_mask(st.r_work),
                k,
                tmp,
                self.spectral_weight(sub),
            )
            scale = float(w[largest]) / 2.0 / max(float(tmp.weight[:, e].sum()), 1e-6)
            st.stats.scale_class_(largest, 0.5)
            st.stats.set_class_(e, tmp, e, scale, fields=PARTICLE_FIELDS)
            # the picked particles carry no evidence of their own here: half the largest's
            st.stats.set_class_(e, st.stats, largest, fields=EVIDENCE_FIELDS)
            result.cls[pick] = e
            done.append(e)
        if done:
            self._rebuild_classes(st.r_work)
        return done
