"""The model one engine updates, in batch and streaming alike: class averages, running
statistics, noise spectrum, class priors, working resolution and counters. Checkpoints hold its
``to_dict()`` and are written by the jobs through ``io.atomic_write`` (the engine writes no file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.mstep import NOISE_GROUPS, Statistics


@dataclass
class ModelState:
    """Everything needed to continue a job.

    class_images: (K, D, D) float32 real-space class averages (masked; from the first full pass
    on each clamped to density of its own sign, ``Config.nonnegative_references``), pixel_size_A
    Å/px;
    stats: running sufficient statistics; sigma2: (D//2+1,) noise variance per shell;
    r_work: working resolution radius (Fourier pixels); resolution_A: (K,) the classes'
    resolution (Å) as written and shown (the FRC's, no finer than the signal evidence);
    reference_resolution_A: (K,) the resolution (Å) the references are faded at and the working
    band follows (the FRC's, no finer than the summed evidence test alone; None: resolution_A);
    processed: particles processed so far, counting revisits (drives the statistics' decay);
    distinct_seen: distinct particles seen (drives annealing); iteration: updates done;
    alignment_images: (K, D, D) the class images particles are aligned to when they differ from
    class_images (with min_res_A: high-passed before masking), else None; band_grown_at: the
    ``processed`` count when the working band last grew (it grows once per minibatch of
    particles processed, whatever the updates' sizes); settled_splits: pairs of classes (a, b)
    whose split the split test found again at ``class_split.SETTLED`` or more, with the rows of
    their particles then ((m,) int): not tested again while they keep most of them;
    split_found: pairs of classes (a, b) with the best agreement their split test has given
    (``class_split.FOUND``); undivided: classes whose own particles no two runs of the split
    test split alike, with their particles' rows then ((m,) int): not tested again while they
    keep most of them (``Engine.divide_classes``);
    fixed_resolution_A: (K,) resolutions (Å) held fixed instead of measured (the split test's
    2-class runs take their pair's from the main model): no signal evidence is gathered, and
    resolution_A and reference_resolution_A stay at these; None: measured;
    background_removed: the averages are masked after their background level (their mean
    outside the mask) is subtracted (``physics.masks.mask_outside_background``), from the first
    full pass on; before it, during the online phase, they are masked as they are;
    noise_whitening: (NOISE_GROUPS, n_shells) sigma2 over each noise group's own spectrum
    (``mstep.group_whitening``); None: one spectrum for all (until the first update);
    pass_classes: (n,) int the class (0-based) each particle row got in the last full pass, to
    count the next pass's changes (``schedules.passes.class_changes``); None before the first.
    """

    box: int
    pixel_size_A: float
    class_images: torch.Tensor
    stats: Statistics
    sigma2: torch.Tensor
    r_work: float
    resolution_A: torch.Tensor
    processed: float = 0.0
    distinct_seen: int = 0
    iteration: int = 0
    history: list[dict] = field(default_factory=list)
    alignment_images: torch.Tensor | None = None
    half_images: torch.Tensor | None = None
    highpass_on: bool = False
    band_grown_at: float = 0.0
    reference_resolution_A: torch.Tensor | None = None
    settled_splits: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    split_found: dict[tuple[int, int], float] = field(default_factory=dict)
    undivided: dict[int, np.ndarray] = field(default_factory=dict)
    fixed_resolution_A: torch.Tensor | None = None
    background_removed: bool = False
    noise_whitening: torch.Tensor | None = None
    pass_classes: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return int(self.class_images.shape[0])

    @property
    def working_resolution_A(self) -> torch.Tensor:
        """(K,) resolution (Å) the references are faded at and the working band follows."""
        ref = self.reference_resolution_A
        return self.resolution_A if ref is None else ref

    @property
    def class_weights(self) -> torch.Tensor:
        """(K,) summed posterior weights in the running statistics."""
        return self.stats.weight.sum(0)

    def log_prior(self) -> torch.Tensor:
        """(K,) log class priors from the statistics (uniform before any data)."""
        w = self.class_weights
        if float(w.sum()) <= 0:
            return torch.full_like(w, -float(torch.log(torch.tensor(float(w.numel())))))
        p = (w / w.sum()).clamp_min(1e-6)
        return torch.log(p / p.sum())

    def shift_prior(self, config: Config) -> tuple[torch.Tensor, float]:
        """The prior on translations: an isotropic Gaussian on the shift in the class frame
        (R_psi t) around each class's mean, its sd (pixels, per axis) the particles' pooled
        within-class spread of shifts, from the running statistics (max_shift_px / 2 before any
        data; at least shift_step_px). Returns ((K, 2) class-frame mean shifts in pixels, sd)."""
        default_sd, min_sd = config.max_shift_px / 2.0, config.shift_step_px
        off = self.stats.offset
        w = self.class_weights
        mean = off[:, :2] / w.clamp_min(1e-3)[:, None]
        mean = torch.where((w > 1e-3)[:, None], mean, torch.zeros_like(mean))
        total = float(w.sum())
        if total <= 1.0:
            return mean, max(default_sd, min_sd)
        spread = float((off[:, 2] - w * (mean**2).sum(1)).sum())
        return mean, max((max(spread, 0.0) / (2.0 * total)) ** 0.5, min_sd)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stats"] = asdict(self.stats)
        return d

    @staticmethod
    def from_dict(d: dict) -> "ModelState":
        d = dict(d)
        stats = dict(d["stats"])
        k, n_shells = stats["weight"].shape[-1], d["sigma2"].shape[0]
        dev = stats["weight"].device
        if stats.get("evidence") is None or stats["evidence"].dim() != 3:
            # checkpoints written before the evidence was kept per particles and controls (or
            # before it existed): the evidence starts again, the rest of the model is kept
            for name in ("evidence", "evidence_sq"):
                stats[name] = torch.zeros(k, 2, n_shells, device=dev)
            stats["evidence_n"] = torch.zeros(k, 2, device=dev)
        stats.setdefault("offset", torch.zeros(k, 3, device=dev))
        if stats["noise_power"].dim() == 1:
            # checkpoints written before noise groups: the job's residuals shared by every group
            for name in ("noise_power", "noise_count"):
                stats[name] = stats[name][None].expand(NOISE_GROUPS, -1) / NOISE_GROUPS
        d["stats"] = Statistics(**stats)
        return ModelState(**d)
