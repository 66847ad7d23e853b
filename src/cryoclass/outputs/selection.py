"""Class selection after 2D classification: pick classes (by hand or by thresholds on particle
count and resolution) and export their particles as a RELION STAR and a CryoSPARC ``.cs``.

Class numbers are the job's output numbers (1-based, as in ``rlnClassNumber`` and
``classes.mrcs``). A streaming job renumbers its classes at every update, so a saved selection
(``selection/selection.json``) keeps a copy of the class averages it refers to
(``selection/reference_classes.mrcs``) and is carried onto the current classes by image
(``class_match``). Exports are written next to ``particles.star`` (same relative image paths):
``selected_particles.star`` and ``selected_particles.cs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from cryoclass.io import (
    InputError,
    atomic_write,
    read_cs_table,
    read_star,
    write_cs,
    write_stack,
    write_star,
)
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME, EARLIER_NAMES
from cryoclass.outputs.class_match import match_classes

SELECTED_STAR = "selected_particles.star"
SELECTED_CS = "selected_particles.cs"
#: Files a classify or stream job writes into its folder (never replaced by a selection).
JOB_OUTPUTS = frozenset(
    {
        "classes.mrcs",
        "particles.star",
        "particles.cs",
        "model.star",
        "gallery.png",
        "rejects.csv",
        "config.json",
        "events.jsonl",
        CHECKPOINT_NAME,
        *EARLIER_NAMES,
    }
)
STATE_DIR = "selection"
STATE_JSON = "selection.json"
REFERENCE = "reference_classes.mrcs"


class OutputsChanging(RuntimeError):
    """The job rewrote its outputs while they were read (a live job): try again."""


@dataclass
class JobClasses:
    """A job's classes in output order: counts (K,) particles, resolution_A (K,) Å, images
    (K, D, D) float32 or None, pixel_size_A Å/px."""

    counts: np.ndarray
    resolution_A: np.ndarray
    images: np.ndarray | None
    pixel_size_A: float

    @property
    def numbers(self) -> np.ndarray:
        """(K,) 1-based class numbers."""
        return np.arange(1, self.counts.size + 1)


@dataclass
class ExportResult:
    """What an export wrote: the classes (1-based), particles per file, and the paths."""

    classes: list[int]
    n_particles: int
    star: Path
    cs: Path | None


def read_job_classes(job_dir: str | Path, images: bool = True) -> JobClasses:
    """Counts and resolutions from ``model.star`` (and the images from ``classes.mrcs``)."""
    job = Path(job_dir)
    path = job / "model.star"
    if not path.is_file():
        raise InputError("no model.star: the job has not written its classes yet", file=path)
    blocks = starfile.read(path, always_dict=True)
    cls = blocks.get("model_classes")
    if not isinstance(cls, pd.DataFrame):
        raise InputError("no model_classes block", file=path)
    general = blocks.get("model_general", {})
    apix = float(general.get("rlnPixelSize", 1.0)) if isinstance(general, dict) else 1.0
    if "cryoclassParticleCount" in cls.columns:
        counts = cls["cryoclassParticleCount"].to_numpy(np.int64)
    else:  # a model.star of another program: only fractions
        counts = np.rint(cls["rlnClassDistribution"].to_numpy(float) * 1e6).astype(np.int64)
    res = cls["rlnEstimatedResolution"].to_numpy(np.float64)
    imgs = None
    if images:
        imgs = np.asarray(mrcfile.read(job / "classes.mrcs"), dtype=np.float32)
        if imgs.ndim == 2:
            imgs = imgs[None]
        if imgs.shape[0] != counts.size:
            raise OutputsChanging("classes.mrcs and model.star disagree on the number of classes")
    return JobClasses(counts=counts, resolution_A=res, images=imgs, pixel_size_A=apix)


def auto_select(
    classes: JobClasses, min_count: int = 0, max_res_A: float | None = None
) -> list[int]:
    """Class numbers with at least ``min_count`` particles and a resolution of ``max_res_A`` Å or
    better (smaller); None: no resolution threshold."""
    ok = classes.counts >= min_count
    if max_res_A is not None:
        ok &= classes.resolution_A <= max_res_A
    return [int(n) for n in classes.numbers[ok]]


def check_export_target(job_dir: str | Path, target: str | Path) -> None:
    """InputError if writing ``target`` would replace a file of the job in ``job_dir`` (its
    outputs, checkpoint, log...): only new files and earlier selections may be written there."""
    job, path = Path(job_dir).resolve(), Path(target).resolve()
    if path == job:
        raise InputError("is the job folder itself, not a file to write", file=target)
    if (
        path.parent == job
        and path.name not in (SELECTED_STAR, SELECTED_CS)
        and (path.exists() or path.name in JOB_OUTPUTS)
    ):
        raise InputError(
            f"is one of the job's own files ({path.name}): choose another --out, "
            f"e.g. {job_dir}/{SELECTED_STAR}",
            file=target,
        )


def export_selection(
    job_dir: str | Path,
    classes: Iterable[int],
    out_star: str | Path | None = None,
    out_cs: str | Path | None = None,
    with_cs: bool = True,
    expected_counts: np.ndarray | None = None,
    attempts: int = 20,
    wait_s: float = 0.25,
) -> ExportResult:
    """Write the particles of ``classes`` (1-based output numbers) from the job's particles.star
    (and particles.cs) to out_star (and out_cs); default: next to them.

    The three files of one output version agree (per-class counts of particles.star,
    particles.cs and model.star); while a live job is rewriting them they may not, and the read
    is retried (``attempts`` x ``wait_s`` s). ``expected_counts``: the (K,) counts the caller
    chose classes from; if the job's outputs have moved on, :class:`OutputsChanging` is raised.
    """
    job = Path(job_dir)
    chosen = sorted({int(c) for c in classes})
    star_path = Path(out_star) if out_star is not None else job / SELECTED_STAR
    cs_path = Path(out_cs) if out_cs is not None else job / SELECTED_CS
    for target in (star_path, cs_path) if with_cs else (star_path,):
        check_export_target(job, target)
    star, cs = _read_consistent(job, with_cs, expected_counts, attempts, wait_s)
    k = int(star["rlnClassNumber"].max()) if len(star) else 0
    bad = [c for c in chosen if not 1 <= c <= max(k, 1)]
    if bad:
        raise ValueError(f"no class {bad[0]} in {job} (classes 1..{k})")
    keep = star["rlnClassNumber"].isin(chosen).to_numpy()
    write_star(star_path, star.loc[keep].reset_index(drop=True))
    if cs is not None:
        keep_cs = cs["rlnClassNumber"].isin(chosen).to_numpy()
        write_cs(cs_path, cs.loc[keep_cs].reset_index(drop=True))
    return ExportResult(
        classes=chosen,
        n_particles=int(keep.sum()),
        star=star_path,
        cs=cs_path if cs is not None else None,
    )


def _read_consistent(
    job: Path, with_cs: bool, expected: np.ndarray | None, attempts: int, wait_s: float
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """particles.star (and .cs) tables whose class counts agree with model.star."""
    for i in range(max(attempts, 1)):
        try:
            counts = read_job_classes(job, images=False).counts
            star = read_star(job / "particles.star").particles
            cs = read_cs_table(job / "particles.cs") if with_cs else None
        except (InputError, OutputsChanging, OSError):
            if not (job / "particles.star").exists() and not (job / "model.star").exists():
                raise
            star = cs = None
            counts = None
        if (
            star is not None
            and _counts(star, counts.size) == counts.tolist()
            and (cs is None or _counts(cs, counts.size) == counts.tolist())
        ):
            if expected is not None and np.asarray(expected).tolist() != counts.tolist():
                raise OutputsChanging("the job's classes changed since they were shown")
            return star, cs
        if i + 1 < attempts:
            time.sleep(wait_s)
    raise OutputsChanging(
        f"{job}: particles.star, particles.cs and model.star kept disagreeing "
        "(the job is rewriting them); try again"
    )


def _counts(table: pd.DataFrame, k: int) -> list[int]:
    c = table["rlnClassNumber"].to_numpy(np.int64)
    if c.size and (c.min() < 1 or c.max() > k):
        return []
    return np.bincount(c - 1, minlength=k).tolist()


# ---------------------------------------------------------------------- saved selection
def save_selection(
    job_dir: str | Path, good: Iterable[int], bad: Iterable[int], classes: JobClasses
) -> Path:
    """Store marks (1-based numbers of ``classes``) with a copy of the class averages they refer
    to; returns the JSON path."""
    folder = Path(job_dir) / STATE_DIR
    folder.mkdir(exist_ok=True)
    if classes.images is None:
        raise ValueError("saving a selection needs the class images")
    write_stack(folder / REFERENCE, classes.images.astype(np.float32), classes.pixel_size_A)
    state = {
        "good": sorted(int(c) for c in good),
        "bad": sorted(int(c) for c in bad),
        "counts": classes.counts.tolist(),
        "saved": time.time(),
    }
    path = folder / STATE_JSON
    with atomic_write(path) as fh:
        json.dump(state, fh, indent=1)
    return path


def load_selection(job_dir: str | Path, current: JobClasses) -> tuple[list[int], list[int]] | None:
    """Saved (good, bad) in the numbering of ``current``; classes that no longer match any current
    class are dropped. None if nothing was saved."""
    folder = Path(job_dir) / STATE_DIR
    if not (folder / STATE_JSON).is_file():
        return None
    state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    ref = np.asarray(mrcfile.read(folder / REFERENCE), dtype=np.float32)
    if ref.ndim == 2:
        ref = ref[None]
    same = (
        current.images is not None
        and ref.shape == current.images.shape
        and np.array_equal(ref, current.images)
    )
    if same:
        where = np.arange(ref.shape[0])
    elif current.images is None:
        raise ValueError("loading a selection needs the current class images")
    else:
        where = match_classes(ref, current.images)

    def carry(nums: list[int]) -> list[int]:
        out = [int(where[n - 1]) + 1 for n in nums if 1 <= n <= where.size and where[n - 1] >= 0]
        return sorted(out)

    return carry(state.get("good", [])), carry(state.get("bad", []))
