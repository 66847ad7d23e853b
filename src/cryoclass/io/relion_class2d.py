"""Read RELION Class2D outputs: ``run_itNNN_data.star``, ``_model.star`` and ``_classes.mrcs``.

A RELION job folder (``Class2D/job012/``) holds one set per iteration (``run_it025_*``, or
``run_ct5_it025_*`` after a continuation). :func:`read_relion_class2d` finds the last (or a
given) iteration and returns its class averages (K, D, D), per-class table (distribution,
accuracies, resolution) and particles (a :class:`ParticleSet` with rlnClassNumber 1-based,
rlnAnglePsi in degrees, rlnOriginX/YAngst in Å). Paths inside RELION files are relative to the
RELION project folder (where ``Class2D/`` lives); it is found by walking up from the job folder
unless ``project_dir`` is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile

from .errors import InputError
from .locate import parse_image_names
from .particles import ParticleSet, read_particles
from .stacks import read_images, stack_shape

_ITER = re.compile(
    r"^(?P<root>.*_it)(?P<it>\d{3})_(?P<kind>data\.star|model\.star|optimiser\.star|"
    r"sampling\.star|classes\.mrcs)$"
)
#: How many folders above a job folder to look for the RELION project folder.
MAX_PROJECT_DEPTH = 4


@dataclass
class Class2DFiles:
    """The three files of one iteration of a RELION Class2D job."""

    iteration: int
    data_star: Path
    model_star: Path
    classes_mrcs: Path


@dataclass
class RelionClass2D:
    """One iteration of a RELION Class2D job.

    classes: (K, D, D) float32 class averages (class k in slice k-1); class_table: one row per
    class (rlnReferenceImage, rlnClassDistribution, rlnAccuracyRotations (deg),
    rlnAccuracyTranslationsAngst (Å), rlnEstimatedResolution (Å), ...); general: the
    data_model_general values; pixel_size_A: Å/px; particles: the data.star particles (None if
    not read); project_dir: the folder the paths are relative to.
    """

    files: Class2DFiles
    classes: np.ndarray
    class_table: pd.DataFrame
    general: dict[str, Any]
    pixel_size_A: float
    particles: ParticleSet | None
    project_dir: Path

    @property
    def n_classes(self) -> int:
        return int(self.classes.shape[0])

    @property
    def class_number(self) -> np.ndarray:
        """(n,) each particle's class, 1-based (RELION's rlnClassNumber)."""
        if self.particles is None:
            raise ValueError("particles were not read")
        return self.particles.table["rlnClassNumber"].to_numpy(np.int64)


def find_class2d_files(path: str | PathLike[str], iteration: int | None = None) -> Class2DFiles:
    """The files of one iteration. ``path``: a job folder (last iteration, or ``iteration``)
    or any ``*_itNNN_*`` file of the job (that iteration)."""
    p = Path(path)
    if not p.exists():
        raise InputError(
            "not found (expected a RELION Class2D job folder or run_itNNN_*.star)", file=p
        )
    if p.is_dir():
        found = {}
        for f in p.glob("*_it[0-9][0-9][0-9]_model.star"):
            m = _ITER.match(f.name)
            if m:
                found[(int(m["it"]), m["root"])] = f
        if iteration is not None:
            found = {k: v for k, v in found.items() if k[0] == iteration}
        if not found:
            what = f"iteration {iteration}" if iteration is not None else "any iteration"
            raise InputError(f"no RELION Class2D output (run_itNNN_model.star) for {what}", file=p)
        (it, root), model = max(found.items(), key=lambda kv: (kv[0][0], len(kv[0][1])))
        folder = p
    else:
        m = _ITER.match(p.name)
        if not m:
            raise InputError(
                "not a RELION Class2D output name (expected *_itNNN_data.star, "
                "_model.star or _classes.mrcs)",
                file=p,
            )
        it, root, folder = int(m["it"]), m["root"], p.parent
    files = Class2DFiles(
        it,
        folder / f"{root}{it:03d}_data.star",
        folder / f"{root}{it:03d}_model.star",
        folder / f"{root}{it:03d}_classes.mrcs",
    )
    for f in (files.model_star, files.classes_mrcs):
        if not f.is_file():
            raise InputError(
                f"RELION Class2D iteration {it} is incomplete: {f.name} is missing", file=f
            )
    return files


def _read_blocks(path: Path) -> dict[str, Any]:
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # starfile raises many kinds on malformed text
        raise InputError(
            f"cannot parse STAR file ({type(err).__name__}: {err})", file=path
        ) from None
    return blocks


def read_model_star(path: str | PathLike[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """(data_model_general as a dict, data_model_classes as a table) of a RELION model.star."""
    p = Path(path)
    blocks = _read_blocks(p)
    general = blocks.get("model_general")
    classes = blocks.get("model_classes")
    if general is None or classes is None:
        raise InputError(
            "not a RELION model.star: data_model_general or data_model_classes is missing", file=p
        )
    if isinstance(general, pd.DataFrame):
        general = general.iloc[0].to_dict()
    if not isinstance(classes, pd.DataFrame):
        classes = pd.DataFrame([classes])
    if "rlnReferenceImage" not in classes.columns:
        raise InputError("data_model_classes has no rlnReferenceImage column", file=p)
    return dict(general), classes.reset_index(drop=True)


def _project_dir(job_folder: Path, rel_paths: list[str]) -> Path:
    """The first of job_folder and its parents under which every relative path exists."""
    rel = [r for r in rel_paths if r and not Path(r).is_absolute()]
    candidates = [job_folder, *list(job_folder.resolve().parents)[:MAX_PROJECT_DEPTH], Path.cwd()]
    for c in candidates:
        if all((c / r).is_file() for r in rel):
            return c
    return job_folder


def read_relion_class2d(
    path: str | PathLike[str],
    project_dir: str | PathLike[str] | None = None,
    *,
    iteration: int | None = None,
    particles: bool = True,
    check_images: bool = True,
) -> RelionClass2D:
    """Read a RELION Class2D iteration (see the module docstring).

    ``particles``: also read ``_data.star`` (with ``check_images``: its stacks are opened and
    checked, as :func:`read_particles` does). Raises :class:`InputError` naming the file and
    the problem (missing file, K in model.star differs from the stack, ...).
    """
    files = find_class2d_files(path, iteration)
    general, table = read_model_star(files.model_star)
    refs, idx = parse_image_names(files.model_star, table["rlnReferenceImage"])
    proj = (
        Path(project_dir)
        if project_dir is not None
        else _project_dir(files.model_star.parent, sorted(set(map(str, refs))))
    )
    n, d, _ = stack_shape(files.classes_mrcs)
    k = len(table)
    if n != k:
        raise InputError(
            f"{files.classes_mrcs.name} holds {n} images but model.star lists {k} classes",
            file=files.model_star,
        )
    classes = read_images(files.classes_mrcs, np.arange(k))
    psize = general.get("rlnPixelSize")
    if psize is None or not float(psize) > 0:
        raise InputError("data_model_general has no positive rlnPixelSize", file=files.model_star)
    pset = None
    if particles:
        if not files.data_star.is_file():
            raise InputError(
                f"RELION Class2D iteration {files.iteration}: {files.data_star.name} is missing",
                file=files.data_star,
            )
        pset = read_particles(files.data_star, project_dir=proj, check_images=check_images)
        if "rlnClassNumber" not in pset.table.columns:
            raise InputError(
                "no rlnClassNumber column: not a Class2D data.star", file=files.data_star
            )
        cls = pset.table["rlnClassNumber"].to_numpy()
        bad = (cls < 1) | (cls > k)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"rlnClassNumber {cls[row]} is outside 1..{k}", file=files.data_star, row=row
            )
    return RelionClass2D(
        files=files,
        classes=classes,
        class_table=table,
        general=general,
        pixel_size_A=float(psize),
        particles=pset,
        project_dir=proj,
    )


def read_class_averages(
    path: str | PathLike[str], project_dir: str | PathLike[str] | None = None
) -> np.ndarray:
    """(K, D, D) float32 class averages from an ``.mrcs`` stack (any program's, including
    cryoclass' ``classes.mrcs``) or from a RELION Class2D job folder / ``run_itNNN_*`` file."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".mrcs", ".mrc") and not _ITER.match(p.name):
        n, _, _ = stack_shape(p)
        return read_images(p, np.arange(n))
    return read_relion_class2d(p, project_dir, particles=False).classes
