"""Job outputs that RELION and CryoSPARC users can use directly, all written atomically:

- ``classes.mrcs``: class averages, class k in slice k-1;
- ``particles.star``: RELION 3.1 particles with rlnClassNumber, rlnAnglePsi, rlnOriginX/YAngst,
  rlnMaxValueProbDistribution, rlnNrOfSignificantSamples, rlnLogLikeliContribution;
- ``model.star``: per class rlnReferenceImage, rlnClassDistribution, rlnAccuracyRotations,
  rlnAccuracyTranslationsAngst, rlnEstimatedResolution; the noise spectrum; the iteration log;
- ``particles.cs``: CryoSPARC particles with alignments2D/*;
- ``gallery.png``: class averages sorted by size, with particle count and resolution;
- ``rejects.csv``: every particle set aside, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryoclass.config import Config
from cryoclass.engine.em import EMPTY_CLASS_RESOLUTION_A
from cryoclass.engine.model import ModelState
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.io import atomic_write, write_cs, write_rejects, write_stack, write_star
from cryoclass.io.particles import Reject
from cryoclass.outputs.montage import save_montage
from cryoclass.outputs.recentre import centred_classes


@dataclass
class ClassSummary:
    """Per output class (in output order): source class index, particle count, resolution (Å)."""

    order: np.ndarray
    counts: np.ndarray
    resolution_A: np.ndarray


def class_order(state: ModelState, result: ParticleResult, sort: bool) -> ClassSummary:
    """Output order of classes: by particle count (descending) when sort, else as in the model."""
    k = state.n_classes
    counts = np.bincount(result.cls, minlength=k)
    order = np.argsort(-counts, kind="stable") if sort else np.arange(k)
    res = state.resolution_A.detach().cpu().numpy()
    return ClassSummary(order=order, counts=counts[order], resolution_A=res[order])


def particles_table(
    table: pd.DataFrame, result: ParticleResult, summary: ClassSummary, pixel_size_A: float
) -> pd.DataFrame:
    """The input table (rows in result.index) with the classification columns added."""
    out = table.iloc[result.index].copy().reset_index(drop=True)
    new_number = np.empty_like(summary.order)
    new_number[summary.order] = np.arange(summary.order.size)
    out["rlnClassNumber"] = new_number[result.cls] + 1
    out["rlnAnglePsi"] = np.mod(result.psi_deg + 180.0, 360.0) - 180.0
    # The engine's pose moves the class by +t; RELION's origin is the opposite (see poses.py).
    out["rlnOriginXAngst"] = -result.tx * pixel_size_A
    out["rlnOriginYAngst"] = -result.ty * pixel_size_A
    out["rlnMaxValueProbDistribution"] = result.max_prob
    out["rlnNrOfSignificantSamples"] = result.n_significant.astype(int)
    out["rlnLogLikeliContribution"] = result.log_likelihood
    out["rlnNormCorrection"] = 1.0
    return out


def write_model_star(
    path: Path,
    state: ModelState,
    summary: ClassSummary,
    config: Config,
    accuracy_deg: float,
    accuracy_A: float,
    history: list[dict],
    classes_path: str = "classes.mrcs",
) -> None:
    """RELION-like model STAR: classes, noise spectrum and iteration log. classes_path: the
    class stack as rlnReferenceImage names it (RELION: relative to the project folder).
    rlnChangesOptimalClasses (RELION writes it to its optimiser.star) is the last full pass's
    fraction of particles that changed class (history's 'changed'; absent before a second
    full pass)."""
    k = summary.order.size
    n = max(int(summary.counts.sum()), 1)
    classes = pd.DataFrame(
        {
            "rlnReferenceImage": [f"{i + 1:06d}@{classes_path}" for i in range(k)],
            "rlnClassDistribution": summary.counts / n,
            "rlnAccuracyRotations": accuracy_deg,
            "rlnAccuracyTranslationsAngst": accuracy_A,
            "rlnEstimatedResolution": summary.resolution_A,
            "rlnOverallFourierCompleteness": 1.0,
            "cryoclassParticleCount": summary.counts,
        }
    )
    d = state.box
    sigma2 = state.sigma2.detach().cpu().numpy()
    shells = np.arange(sigma2.size)
    noise = pd.DataFrame(
        {
            "rlnSpectralIndex": shells,
            "rlnResolution": shells / (d * state.pixel_size_A),
            "rlnSigma2Noise": sigma2,
        }
    )
    _, sd_px = state.shift_prior(config)
    general = {
        "rlnNrClasses": k,
        "rlnCurrentResolution": float(np.min(summary.resolution_A)) if k else 0.0,
        "rlnPixelSize": state.pixel_size_A,
        "rlnOriginalImageSize": d,
        "rlnSigmaOffsetsAngst": sd_px * state.pixel_size_A,  # the translation prior's sd
    }
    changes = [h["changed"] for h in history if h.get("changed") is not None]
    if changes:
        general["rlnChangesOptimalClasses"] = float(changes[-1])
    blocks = {"model_general": general, "model_classes": classes, "model_noise_spectrum": noise}
    blocks.update(noise_group_blocks(state, config))
    if history:
        blocks["model_iterations"] = pd.DataFrame(history)
    text = starfile.to_string(blocks, float_format="%.6f")
    with atomic_write(path) as fh:
        fh.write(text)


def noise_group_blocks(state: ModelState, config: Config) -> dict[str, pd.DataFrame]:
    """model.star blocks of the noise groups that hold residuals (``Config.noise_group_width_um``),
    as RELION writes its groups: ``model_groups`` (number, name = defocus range in µm) and one
    ``model_group_N`` per group with its noise spectrum (rlnSigma2Noise per shell). None
    without groups."""
    whitening = state.noise_whitening
    if whitening is None or config.noise_group_width_um <= 0:
        return {}
    count = state.stats.noise_count.detach().cpu().numpy()
    ratio = whitening.detach().cpu().numpy()
    sigma2 = state.sigma2.detach().cpu().numpy()
    shells = np.arange(sigma2.size)
    width = config.noise_group_width_um
    used = [g for g in range(count.shape[0]) if count[g].sum() > 0]
    last = count.shape[0] - 1
    names = [
        f"defocus {g * width:.2f}-{(g + 1) * width:.2f} um"
        if g < last
        else f"defocus from {g * width:.2f} um"
        for g in used
    ]
    blocks = {
        "model_groups": pd.DataFrame(
            {"rlnGroupNumber": [g + 1 for g in used], "rlnGroupName": names}
        )
    }
    for g in used:
        blocks[f"model_group_{g + 1}"] = pd.DataFrame(
            {
                "rlnSpectralIndex": shells,
                "rlnResolution": shells / (state.box * state.pixel_size_A),
                "rlnSigma2Noise": sigma2 / ratio[g],
            }
        )
    return blocks


def blank_empty_classes(images: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Class averages (K, D, D) with those of classes without particles (counts (K,)) set to 0,
    so a gallery draws them flat grey: what such an average holds is no image."""
    return np.where(np.asarray(counts)[:, None, None] == 0, 0.0, images)


def write_gallery(path: Path, images: np.ndarray, summary: ClassSummary, title: str) -> None:
    """PNG gallery of class averages (already in output order) with count and resolution;
    classes without particles are drawn flat grey (``blank_empty_classes``)."""
    images = blank_empty_classes(images, summary.counts)
    labels = [
        f"{i + 1}: {c} ptcls\n{r:.1f} Å"
        for i, (c, r) in enumerate(zip(summary.counts, summary.resolution_A))
    ]
    save_montage(images, path, labels=labels, title=title)


def write_results(
    out_dir: str | Path,
    state: ModelState,
    result: ParticleResult,
    table: pd.DataFrame,
    config: Config,
    rejects: list[Reject] | None = None,
    history: list[dict] | None = None,
    accuracy_deg: float | None = None,
    accuracy_A: float | None = None,
    classes_path: str = "classes.mrcs",
) -> dict[str, Path]:
    """Write every output of a classification into out_dir; returns name -> path.
    classes_path: how model.star's rlnReferenceImage names classes.mrcs (see write_model_star)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = class_order(state, result, config.sort_classes)
    if config.recenter:
        has_signal = state.resolution_A.detach().cpu().numpy() < EMPTY_CLASS_RESOLUTION_A
        images, result = centred_classes(
            state.class_images, result, config.recenter_threshold, has_signal
        )
    else:
        images = state.class_images.detach().cpu().numpy().astype(np.float32)
    images = images[summary.order]
    paths = {
        "classes": out / "classes.mrcs",
        "particles_star": out / "particles.star",
        "particles_cs": out / "particles.cs",
        "model_star": out / "model.star",
        "gallery": out / "gallery.png",
        "rejects": out / "rejects.csv",
        "config": out / "config.json",
    }
    write_stack(paths["classes"], images, state.pixel_size_A)
    ptable = particles_table(table, result, summary, state.pixel_size_A)
    write_star(paths["particles_star"], ptable)
    post = result.posterior[:, summary.order]
    write_cs(
        paths["particles_cs"],
        ptable,
        extra_fields={
            "alignments2D/class_posterior": result.max_prob.astype(np.float32),
            "alignments2D/class_ess": (1.0 / np.sum(post**2, axis=1)).astype(np.float32),
        },
    )
    write_model_star(
        paths["model_star"],
        state,
        summary,
        config,
        accuracy_deg if accuracy_deg is not None else config.psi_step_deg,
        accuracy_A if accuracy_A is not None else config.shift_step_px * state.pixel_size_A,
        history or [],
        classes_path,
    )
    write_gallery(
        paths["gallery"],
        images,
        summary,
        f"{len(result.index)} particles, {state.n_classes} classes",
    )
    write_rejects(paths["rejects"], rejects or [])
    with atomic_write(paths["config"]) as fh:
        json.dump(config.model_dump(), fh, indent=2)
    return paths
