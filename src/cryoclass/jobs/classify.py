"""The batch 2D classification job: read -> set aside bad particles -> classify -> write.

Bad particles (unreadable or out-of-range images, NaN/Inf or constant images, absurd CTF values,
duplicates) are set aside and listed in ``rejects.csv`` with the reason; the job goes on with the
rest. Whole-file problems stop it with an :class:`InputError` naming the file and the problem.
The job commits after every iteration (``batch_commits.py``: the checkpoint, then a line of
``events.jsonl``); ``resume=True`` continues a job that was killed. Outputs replace the previous ones all together (``outdir.publish``), each
file atomically.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cryoclass.config import Config
from cryoclass.engine.device import pick_device
from cryoclass.engine.executor import EStepExecutor
from cryoclass.engine.model import ModelState
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.poses import working_steps
from cryoclass.io import InputError, ParticleSet, read_particles, write_rejects
from cryoclass.io.limits import check_resolution
from cryoclass.io.rejects import count_reasons
from cryoclass.jobs.batch_commits import BatchCommits
from cryoclass.jobs.execution import executor_for
from cryoclass.jobs.outdir import hold, publish
from cryoclass.outputs.checkpoint import Checkpoint, JobCheckpoint
from cryoclass.outputs.duplicates import without_duplicate_picks
from cryoclass.outputs.results import write_results
from cryoclass.schedules.batch import (
    BatchPoint,
    ClassificationResult,
    IterationLog,
    batch_steps,
    run_batch,
)

log = logging.getLogger("cryoclass")


@dataclass
class ClassifyResult:
    """A finished batch 2D classification.

    classes: (K, D, D) float32 class averages, in the model's order (as the engine left them:
    not re-centred, not sorted); assignments: per kept particle (n) its class (0-based index into
    ``classes``), pose and posterior, ``index`` = its row in the particle table read;
    paths: name -> written file ('classes', 'particles_star', 'particles_cs', 'model_star',
    'gallery', 'rejects', 'config'), whose class numbers follow the written (sorted) order;
    model: the final model state; log: one entry per iteration.
    """

    classes: np.ndarray
    assignments: ParticleResult
    paths: dict[str, Path]
    model: ModelState
    log: list[IterationLog] = field(default_factory=list)


def classify(
    particles: str | Path | ParticleSet,
    config: Config,
    out_dir: str | Path,
    project_dir: str | Path | None = None,
    progress: Callable[[str, int, int, IterationLog | None], None] | None = None,
    resume: bool = False,
    initial_classes: np.ndarray | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
    estep: EStepExecutor | None = None,
) -> ClassifyResult:
    """Classify particles (a STAR/.cs path or a ParticleSet) and write all outputs to out_dir.

    Particles that cannot be used are set aside (listed in rejects.csv with the reason), never
    silently dropped. ``resume``: continue the run checkpointed in out_dir (without it, a folder
    holding an unfinished run is refused). ``initial_classes``: (K, D, D) class averages to
    start from (e.g. ``read_relion_class2d(...).classes``). Returns a ``ClassifyResult``
    (classes, assignments, written paths). Raises :class:`InputError` for whole-file problems or when no particle is usable.
    ``cluster`` ('local:N', 'slurm:N') / ``scheduler`` (an address), or ``estep`` (e.g. a
    ``cryoclass.distributed.DaskEStep`` on your own client): run the E-steps on a Dask cluster
    (same results).
    """
    t0 = time.perf_counter()
    pset = (
        particles
        if isinstance(particles, ParticleSet)
        else read_particles(particles, project_dir=project_dir, on_bad="reject")
    )
    pset = pset.scan_images()
    with hold(out_dir) as out:
        if len(pset) == 0:
            write_rejects(out / "rejects.csv", pset.rejects)
            raise InputError(
                no_usable_particles(pset.rejects, out / "rejects.csv"), file=pset.source
            )
        _check_geometry(pset, config, initial_classes)
        ckpt = JobCheckpoint(out, "batch", config, pset.fingerprint())
        start = _resume_point(ckpt, resume, config)
        commits = BatchCommits(ckpt, pset, start)
        point = None if start is None else (start.model, BatchPoint.from_dict(start.state["point"]))
        with executor_for(cluster, scheduler, estep) as ex:
            result = run_batch(
                pset,
                config,
                progress,
                checkpoint=commits.step,
                resume=point,
                initial_classes=initial_classes,
                estep=ex,
            )
        if config.remove_duplicates:
            set_aside_duplicates(pset, result, config.min_separation_A)
        res_A = result.state.box * result.state.pixel_size_A / max(result.state.r_work, 1e-6)
        psi_step, shift_step = working_steps(
            res_A,
            pset.pixel_size_A,
            result.particle_radius_A,
            config.psi_step_deg,
            config.shift_step_px,
        )
        refs = reference_path(out / "classes.mrcs", project_dir, pset.source)
        paths = publish(
            out,
            lambda folder: write_results(
                folder,
                result.state,
                result.particles,
                pset.table,
                config,
                rejects=pset.rejects,
                history=[e.__dict__ for e in result.log],
                accuracy_deg=psi_step,
                accuracy_A=shift_step * pset.pixel_size_A,
                classes_path=refs,
            ),
        )
        commits.finish(result.particles, config.n_classes)
    log.info("classified %d particles in %.1f s", len(pset), time.perf_counter() - t0)
    return ClassifyResult(
        classes=result.state.class_images.detach().cpu().numpy(),
        assignments=result.particles,
        paths=paths,
        model=result.state,
        log=list(result.log),
    )


def _check_geometry(pset: ParticleSet, config: Config, initial_classes: np.ndarray | None) -> None:
    """Whole-file checks: one box and one pixel size; initial classes of the job's shape."""
    _ = pset.box, pset.pixel_size_A
    check_resolution(config, pset.box, pset.pixel_size_A, source=pset.source)
    if config.n_classes > len(pset):
        log.warning(
            "%d classes for %d particles: at least %d classes will stay empty; choose "
            "--classes %d or fewer",
            config.n_classes,
            len(pset),
            config.n_classes - len(pset),
            len(pset),
        )
    if initial_classes is not None:
        want = (config.n_classes, pset.box, pset.box)
        got = tuple(np.shape(initial_classes))
        if got != want:
            raise InputError(
                f"the initial classes are {'x'.join(map(str, got))} (K x D x D) but "
                f"this job needs {want[0]} classes of {want[1]}x{want[2]} px "
                "(K = --classes, D = the particles' box)"
            )


def reference_path(classes: Path, project_dir: str | Path | None, source: Path | None) -> str:
    """classes.mrcs as RELION names files: relative to the project folder (``project_dir``, else
    the particle file's folder, which image paths are relative to) when it lies inside it, else
    absolute. So RELION run from the project folder finds the class averages of model.star (e.g.
    ``relion_refine --ref job/model.star``)."""
    base = (
        Path(project_dir)
        if project_dir is not None
        else (Path(source).parent if source is not None else Path.cwd())
    )
    target = classes.resolve()
    try:
        return str(target.relative_to(base.resolve()))
    except ValueError:
        return str(target)


def _resume_point(ckpt: JobCheckpoint, resume: bool, config: Config) -> Checkpoint | None:
    """The checkpoint to continue from, or None to start; refuses to overwrite an unfinished
    run without ``resume``."""
    if not ckpt.exists():
        if resume:
            log.warning(
                "--resume: %s holds no interrupted run, starting from the beginning",
                ckpt.path.parent,
            )
        return None
    if not resume:
        saved = ckpt.read()
        if saved.finished:
            return None  # a finished run: run again from the start
        raise InputError(
            f"holds an interrupted run ({_describe(saved)}); add --resume "
            "(resume=True) to continue it, or delete this file to start over",
            file=ckpt.path,
        )
    start = ckpt.load(pick_device(config.device))
    log.info("resuming %s at %s", ckpt.path.parent, _describe(start))
    return start


def _describe(ck: Checkpoint) -> str:
    """'step i of n' of a batch checkpoint."""
    return f"step {ck.state['point']['step']} of {batch_steps(Config(**ck.config))}"


def no_usable_particles(rejects: list, rejects_path: Path) -> str:
    """Message for a job left with no particle: how many were set aside, the commonest reasons."""
    top = "; ".join(f"{n} x {k}" for k, n in count_reasons(rejects)[:3])
    return (
        f"no usable particles: all {len(rejects)} were set aside ({top}); every one is listed "
        f"with its reason in {rejects_path}"
    )


def set_aside_duplicates(pset: ParticleSet, result: ClassificationResult, min_sep_A: float) -> None:
    """Move duplicate picks (all but the highest-posterior one of each group) from the result
    into pset.rejects."""
    p = result.particles
    result.particles, rejects = without_duplicate_picks(
        pset.table.iloc[p.index], p, min_sep_A, str(pset.source or "")
    )
    pset.rejects.extend(rejects)
