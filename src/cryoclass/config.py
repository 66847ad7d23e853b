"""One typed configuration for every cryoclass job: batch, streaming, CLI and Python API.

Every parameter has a unit in its name or description, a default close to CryoSPARC's 2D job and a
validation rule. Batch and streaming read the same fields, so a parameter means the same in both.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Settings that say where and in what pieces the work runs, never what it computes: a job may
#: resume with them changed (tests/test_config.py checks that they leave the result as it is).
EXECUTION_FIELDS = frozenset({"device", "batch_particles"})


class Config(BaseModel):
    """Parameters of a 2D classification job (units in each field's description)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- classes and resolution ---------------------------------------------------------------
    n_classes: int = Field(50, ge=1, description="Number of 2D classes K.")
    max_res_A: float = Field(
        6.0,
        gt=0,
        description="Maximum alignment resolution (Å): no Fourier "
        "component beyond 1/max_res_A is used in alignment or class averages.",
    )
    min_res_A: float | None = Field(
        None,
        gt=0,
        description="Minimum alignment resolution (Å): "
        "frequencies below 1/min_res_A are left out of the alignment "
        "scores (class averages keep them), from the end of the "
        "annealing on (classes are first built on the full band). "
        "Off by default. For belts (micelles, nanodiscs) that differ between particles of "
        "one view; where the belt is the same in every particle it is signal, and leaving it "
        "out costs alignment accuracy at low SNR (docs/status.md).",
    )
    init_res_A: float = Field(
        25.0,
        gt=0,
        description="Working resolution (Å) of the first "
        "iterations; it then follows the resolution the classes' signal "
        "supports, up to max_res_A (with min_res_A, at least min_res_A / "
        "2.5 once the high-pass applies).",
    )
    init_lowpass_A: float = Field(
        30.0, gt=0, description="Low-pass (Å) of the random-subset initial classes."
    )

    # --- schedule -----------------------------------------------------------------------------
    n_online_em_iters: int = Field(
        20,
        ge=0,
        description="Online-EM iterations, each on a fresh "
        "random minibatch of batch_size_per_class x n_classes particles.",
    )
    batch_size_per_class: int = Field(100, ge=1, description="Minibatch particles per class.")
    n_full_iters: int = Field(
        12,
        ge=0,
        description="Full iterations over all particles after online EM (12 since session 27: "
        "with class_prior full_passes the classes still improve after 6; docs/status.md).",
    )
    n_restarts: int = Field(
        1,
        ge=1,
        description="Runs of the online-EM phase, each from its own random start (seed, "
        "seed + 1000, ...) and followed by the first full iteration; the run whose classes "
        "explain the particles best (highest mean log-likelihood in that iteration) goes on to "
        "the other full iterations. Each extra run costs one online-EM phase and one full "
        "iteration; a stream runs its extra ones when it ends, over all its particles.",
    )
    initial_uncertainty_factor: float = Field(
        2.0,
        gt=0,
        description="Initial classification "
        "uncertainty: the first temperature is this factor "
        "x 1/4 of the spread (sd) of a particle's class "
        "scores, so higher means softer early assignments.",
    )
    sigma_anneal_start: int = Field(
        2,
        ge=0,
        description="Online-EM iteration (in minibatches of "
        "particles seen) at which the noise model starts to anneal "
        "from the initial uncertainty to the estimated noise.",
    )
    sigma_anneal_iters: int = Field(
        12,
        ge=0,
        description="Length of the annealing, in online-EM "
        "iterations (minibatches of particles seen).",
    )
    tau2_fudge: float = Field(
        2.0,
        gt=0,
        description="Regularisation: multiplies the class signal "
        "power in the Wiener filter (RELION's T; 2 for 2D).",
    )

    # --- streaming schedule (cryoclass stream; ignored by batch jobs) ---------------------------
    stream_policy: Literal["online", "live"] = Field(
        "online",
        description="Streaming schedule: 'online' = online EM over the arriving "
        "particles (cost per update proportional to the new ones); 'live' = CryoSPARC Live's "
        "(corrected): a normal 2D run on batch_size_per_class x n_classes x n_online_em_iters "
        "particles, then a full iteration over all particles every batch_size_per_class x "
        "n_classes x 2 new ones.",
    )
    stream_revisit: float = Field(
        1.0,
        ge=0,
        description="Online streaming: older particles "
        "revisited per update, as a multiple of the new particles in "
        "it (least recently processed first), until the stream has "
        "processed n_online_em_iters minibatches; then none.",
    )

    # --- search -------------------------------------------------------------------------------
    psi_step_deg: float = Field(
        6.0, gt=0, le=90, description="Finest in-plane rotation step (degrees)."
    )
    max_shift_px: float = Field(
        6.0,
        ge=0,
        description="Translation search range (pixels of the "
        "input images, radius around the current centre); half of it is the sd of the "
        "translation prior before any data.",
    )
    shift_step_px: float = Field(
        1.0,
        gt=0,
        description="Finest translation step (pixels); the least sd of the translation prior.",
    )
    exhaustive_search: bool = Field(
        False,
        description="Score every rotation x shift instead of "
        "a coarse grid refined locally (slower, for checks).",
    )
    coarse_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Precision of the coarse search's matrix products. bfloat16 is "
        "several times faster on GPUs and on CPUs with bf16 matrix units (AMX, AVX512-BF16); the "
        "local refinement and every reported score stay float32. auto: bfloat16 where it is "
        "fast.",
    )
    class_prior: Literal["off", "full_passes", "always"] = Field(
        "full_passes",
        description="Weight classes by their population in the posterior, as RELION does. "
        "full_passes (the default since session 27): in the full passes after the first (the "
        "online phase and the split test's 2-class runs stay uniform), so over the passes "
        "classes that hold few particles give them up to the well-populated classes they "
        "resemble; with 12 full passes it helped every hard case of the bench's suite on "
        "average and left TRPV1 within seed noise (10 seeds) and streaming as good as batch. "
        "always: from the first online iteration on (RELION's behaviour), which at low SNR lets "
        "a large blurry class absorb weak particles early. off: a uniform prior (the default "
        "until session 26). See docs/status.md, sessions 23, 26 and 27.",
    )
    nonnegative_references: bool = Field(
        True,
        description="From the first full pass on, clamp the class references to non-negative "
        "density (each class to its own sign, that of its total density, so classes of dark "
        "ice or contaminants are clamped the other way): a projected potential has none of "
        "the other sign, so what an average holds there is noise and the ringing of its band "
        "limit (CryoSPARC's 2D non-negativity). The written averages are the clamped "
        "references. Not with skip_ctf (its averages keep the CTF's negative fringes); with "
        "min_res_A the high-passed copies the particles are aligned to are not clamped. On by "
        "default since session 27: better on the bench's channel in micelles and with "
        "preferred orientation, TRPV1 within seed noise (docs/status.md).",
    )
    force_max: bool = Field(
        True,
        description="Each particle goes into a class's average at its best pose "
        "(CryoSPARC's 'Force max over poses/shifts'). Off: its weight is spread over the poses "
        "around the best one, as RELION does (~1.6x the time: see the README); where classes "
        "do not score the sum over every pose (class_score best_pose, or before the second "
        "full pass) they then score the sum over those poses.",
    )
    class_score: Literal["marginal", "best_pose"] = Field(
        "marginal",
        description="How a class scores a particle in the posterior over classes. marginal (the "
        "default since session 33): in the full passes after the first, its likelihood summed "
        "over every pose of the coarse search, as RELION marginalises over the poses, so a "
        "particle whose pose is uncertain goes to the class it fits over many poses (the online "
        "phase and the first full pass take the best pose); best_pose: always the likelihood of "
        "its best pose alone (CryoSPARC's force max; the default until session 32). See "
        "docs/status.md, session 33.",
    )

    # --- model --------------------------------------------------------------------------------
    white_noise: bool = Field(
        False, description="Flat (white) noise model instead of the per-shell coloured spectrum."
    )
    noise_group_width_um: float = Field(
        0.1,
        ge=0,
        description="Particles are grouped by mean defocus in bins this wide (µm), each group "
        "with its own noise spectrum (RELION's groups: the ice's noise is imaged through the "
        "CTF, so the spectrum depends on the defocus); 0: one spectrum for all. With "
        "white_noise each group has its own flat level.",
    )
    skip_ctf: bool = Field(
        False,
        description="Ignore the CTF in alignment and averaging "
        "(phase-flipped input is not assumed).",
    )
    invert_contrast: bool = Field(
        False, description="Input particles have dark protein (multiply images by -1 on loading)."
    )
    mask_diameter_A: float | None = Field(
        None, gt=0, description="Circular mask diameter (Å); default 85 % of the box."
    )
    mask_diameter_outer_A: float | None = Field(
        None,
        gt=0,
        description="Outer diameter (Å) of the mask's soft edge; default mask_diameter_A + 10 %.",
    )
    recenter: bool = Field(
        True,
        description="Re-centre the written class averages on their "
        "centre of mass, with the particle origins changed to match. "
        "Alignment searches shifts around the picked centres either way, so "
        "a class whose centre of mass is off the protein (a micelle) does "
        "not push its particles out of the shift range.",
    )
    recenter_threshold: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Density threshold (fraction of the class maximum) for the centre of mass.",
    )
    reseed_empty: bool = Field(True, description="Re-seed classes that hold almost no particles.")
    merge_duplicates: bool = Field(
        True,
        description="After every full iteration but the last, empty the smaller class of each "
        "pair whose averages show one view (they agree as well as their own half-sets say one "
        "signal can, or they look alike and a new 2-class run from a symmetric start does not "
        "find their split again); its particles go to the other class and it stays empty "
        "(999 Å), so views are not split over copies. The same 2-class runs also fill empty "
        "classes: a class whose own particles two runs split alike is divided, and a tested "
        "pair whose runs agree on another split takes it instead of being merged.",
    )
    hard_classify_last_iter: bool = Field(
        False,
        description="Last iteration puts each particle only into its best class with weight 1.",
    )
    sort_classes: bool = Field(True, description="Order output classes by particle count.")
    remove_duplicates: bool = Field(
        True,
        description="Set aside duplicate picks closer than min_separation_A on one micrograph.",
    )
    min_separation_A: float = Field(
        20.0,
        gt=0,
        description="Duplicate-pick distance (Å): picks "
        "on one micrograph closer than this are duplicates.",
    )

    # --- execution ----------------------------------------------------------------------------
    seed: int = Field(0, description="Random seed: same seed, same result.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Compute device.")
    batch_particles: int = Field(256, ge=1, description="Particles per E-step chunk (memory).")

    def changes_from(self, saved: Config) -> list[str]:
        """Why a run checkpointed with the settings ``saved`` cannot be resumed with these: one
        'name: old -> new' per setting that differs, but for those that do not change results
        (device, batch_particles); empty when it can be resumed."""
        return [
            f"{k}: {getattr(saved, k)!r} -> {getattr(self, k)!r}"
            for k in Config.model_fields
            if k not in EXECUTION_FIELDS and getattr(saved, k) != getattr(self, k)
        ]

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: object) -> object:
        """Settings saved by earlier versions (checkpoints, config.json) still load:
        use_class_prior (bool, until session 23) is class_prior "always" / "off"."""
        if isinstance(data, dict) and "use_class_prior" in data and "class_prior" not in data:
            data = dict(data)
            data["class_prior"] = "always" if data.pop("use_class_prior") else "off"
        return data

    @model_validator(mode="after")
    def _check(self) -> "Config":
        if self.min_res_A is not None and self.min_res_A <= self.max_res_A:
            raise ValueError(
                f"min_res_A ({self.min_res_A:g} Å) must be larger than max_res_A "
                f"({self.max_res_A:g} Å)"
            )
        if (
            self.mask_diameter_outer_A is not None
            and self.mask_diameter_A is not None
            and self.mask_diameter_outer_A < self.mask_diameter_A
        ):
            raise ValueError("mask_diameter_outer_A must be >= mask_diameter_A")
        return self

    @property
    def minibatch_size(self) -> int:
        """Particles per online-EM iteration (batch_size_per_class x n_classes)."""
        return self.batch_size_per_class * self.n_classes


def describe_errors(err: ValidationError, flags: bool = True) -> str:
    """A pydantic ValidationError of Config as short sentences, one per problem, naming each
    parameter as its command-line option (``--max-res-A``) when ``flags``, else by field name."""
    names = sorted(Config.model_fields, key=len, reverse=True)

    def name(field: str) -> str:
        return "--" + field.replace("_", "-") if flags else field

    out = []
    for e in err.errors():
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        for f in names:
            msg = re.sub(rf"\b{f}\b", name(f), msg)
        loc = [str(x) for x in e.get("loc", ()) if str(x) in Config.model_fields]
        if loc:
            value = e.get("input")
            if e.get("type") == "extra_forbidden":
                msg = f"{name(loc[0])}: not a parameter"
            else:
                msg = f"{name(loc[0])} {value!r}: {msg[:1].lower() + msg[1:]}"
        out.append(msg)
    return "; ".join(out)
