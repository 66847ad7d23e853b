"""Batch schedule (CryoSPARC-style 2D job): online EM on fresh random minibatches with the noise
model annealed by particles seen, then full iterations over all particles.

The steps are the schedule layer's (``online.py``: one online-EM step; ``passes.py``: the
closing passes), the same a stream takes. The particle source is a ``ParticleSource``
(``cryoclass.engine.source``), e.g. a ``cryoclass.io.ParticleSet``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.device import pick_device
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import EStepExecutor, LocalEStep
from cryoclass.engine.model import ModelState
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.source import ParticleSource, load_batch
from cryoclass.schedules.online import online_step
from cryoclass.schedules.passes import final_passes, full_pass


@dataclass
class IterationLog:
    """One line of the job log: iteration, phase ('online'/'full'), particles, temperature,
    working resolution (Å), mean log-likelihood, seconds, classes re-seeded, classes emptied as
    duplicates of another, classes whose particles were split anew (re-drawn pairs, divided
    classes), and for a full pass after the first the fraction of particles whose class changed
    since the previous one (``passes.class_changes``; None otherwise)."""

    iteration: int
    phase: str
    n_particles: int
    temperature: float
    work_res_A: float
    mean_loglik: float
    seconds: float
    reseeded: int = 0
    merged: int = 0
    divided: int = 0
    changed: float | None = None


@dataclass
class ClassificationResult:
    """Final model and per-particle assignments (arrays in particle-table order); the particle
    radius (Å) the pose steps were sized for (``Engine.particle_radius_A``)."""

    state: ModelState
    particles: ParticleResult
    log: list[IterationLog] = field(default_factory=list)
    particle_radius_A: float | None = None


#: progress(phase, step, total steps, log line): phase 'online', 'full', 'restart' (an extra
#: run's online-EM iteration), 'restart kept' or 'restart not kept' (an extra run's end).
Progress = Callable[[str, int, int, IterationLog | None], None]


@dataclass
class BatchPoint:
    """Where a batch run stands after ``step`` steps (online-EM iterations, then full passes):
    with the model, enough to continue it exactly as if it had not stopped.

    seen: (n,) bool particles drawn so far; log: the iteration log; rng, engine_rng: numpy
    bit-generator states of the schedule and the engine; torch_rng: torch's CPU RNG state;
    final: the latest full pass's per-particle results (None before the first); kept_score:
    the first-pass mean log-likelihood of the run whose model is kept so far (``run_restart``).
    """

    step: int
    seen: np.ndarray
    log: list[IterationLog]
    rng: dict
    engine_rng: dict
    torch_rng: torch.Tensor
    final: ParticleResult | None = None
    kept_score: float | None = None

    def to_dict(self) -> dict:
        """Plain data (arrays, lists, dicts) for a checkpoint; ``from_dict`` reads it back."""
        return {
            "step": self.step,
            "seen": np.asarray(self.seen),
            "log": [asdict(e) for e in self.log],
            "rng": self.rng,
            "engine_rng": self.engine_rng,
            "torch_rng": self.torch_rng,
            "final": None if self.final is None else self.final.to_dict(),
            "kept_score": self.kept_score,
        }

    @staticmethod
    def from_dict(d: dict) -> BatchPoint:
        return BatchPoint(
            step=int(d["step"]),
            seen=np.asarray(d["seen"], dtype=bool),
            log=[IterationLog(**e) for e in d["log"]],
            rng=d["rng"],
            engine_rng=d["engine_rng"],
            torch_rng=d["torch_rng"],
            final=None if d["final"] is None else ParticleResult(**d["final"]),
            kept_score=d.get("kept_score"),
        )


#: checkpoint(state, point): called after every step; must persist both atomically.
Checkpoint = Callable[[ModelState, BatchPoint], None]


def batch_steps(config: Config) -> int:
    """Steps of a batch job: its online-EM iterations, its first closing pass, one step per
    extra restart (``run_restart``), then its other closing passes."""
    return config.n_online_em_iters + config.n_restarts - 1 + len(final_passes(config))


def pass_step(config: Config, j: int) -> int:
    """The step (1-based) that closing pass j (0-based) ends: the extra restarts run between
    the first closing pass and the second."""
    return config.n_online_em_iters + 1 + j + (config.n_restarts - 1 if j > 0 else 0)


#: Restart r runs with seed + RESTART_SEED_STRIDE x r (restart 0 is the job's own run).
RESTART_SEED_STRIDE = 1000


@dataclass
class Restart:
    """One run of the online-EM phase and the first closing pass (``run_restart``): the engine
    holding its model, the pass's per-particle results, its mean log-likelihood (the score
    restarts are compared by), and its log line."""

    engine: Engine
    final: ParticleResult
    score: float
    entry: IterationLog


def start(
    config: Config,
    source: ParticleSource,
    device: torch.device,
    initial_classes: np.ndarray | None = None,
) -> tuple[Engine, np.random.Generator]:
    """A new engine with its first classes (random subsets of a random first minibatch, or
    initial_classes), and the schedule's random generator for the minibatches to come."""
    engine = Engine(config, source.box, source.pixel_size_A, device)
    rng = np.random.default_rng(config.seed + 1)
    torch.manual_seed(config.seed)
    first = rng.permutation(len(source))[: min(config.minibatch_size, len(source))]
    engine.initialise(load_batch(engine, source, first))
    if initial_classes is not None:
        _start_from(engine, initial_classes)
    return engine, rng


def online_iteration(
    engine: Engine,
    estep: EStepExecutor,
    source: ParticleSource,
    rng: np.random.Generator,
    seen: np.ndarray,
    iteration: int,
) -> IterationLog:
    """Online-EM iteration ``iteration`` (1-based) on a fresh random minibatch; seen: (n,) bool
    particles drawn so far, updated."""
    t0 = time.perf_counter()
    n = len(source)
    idx = np.sort(rng.choice(n, size=min(engine.cfg.minibatch_size, n), replace=False))
    new_distinct = int((~seen[idx]).sum())
    seen[idx] = True
    step = online_step(engine, estep, source, idx, new_distinct)
    return IterationLog(
        iteration,
        "online",
        len(idx),
        step.temperature,
        engine.res_A(engine.state.r_work),
        step.mean_loglik,
        time.perf_counter() - t0,
        len(step.reseeded),
    )


def closing_pass(
    engine: Engine, estep: EStepExecutor, source: ParticleSource, j: int, iteration: int
) -> tuple[ParticleResult, IterationLog]:
    """Closing pass j (``final_passes``[j], 0-based), job step ``iteration``: (per-particle
    results, log line)."""
    t0 = time.perf_counter()
    p = final_passes(engine.cfg)[j]
    final, temp, merged, divided, changed = full_pass(
        engine, source, hard=p.hard, update=p.update, estep=estep, merge=p.merge
    )
    entry = IterationLog(
        iteration,
        p.phase,
        len(source),
        temp,
        engine.res_A(engine.state.r_work),
        float(np.mean(final.log_likelihood)),
        time.perf_counter() - t0,
        merged=merged,
        divided=divided,
        changed=changed,
    )
    return final, entry


def run_restart(
    config: Config,
    source: ParticleSource,
    r: int,
    device: torch.device,
    estep: EStepExecutor,
    initial_classes: np.ndarray | None = None,
    on_iteration: Callable[[IterationLog], None] | None = None,
) -> Restart:
    """Restart r (>= 1): the batch schedule's online-EM phase over all of source from a new
    random start (seed + RESTART_SEED_STRIDE x r), then its first closing pass. A job keeps the
    restart whose first pass has the highest mean log-likelihood: the model that explains the
    particles best. Its log line has phase 'restart' and the pass's figures. on_iteration:
    called with each online-EM iteration's log line (phase 'runR'), to show progress; those
    lines are not part of the job's log."""
    t0 = time.perf_counter()
    cfg = config.model_copy(update={"seed": config.seed + RESTART_SEED_STRIDE * r})
    engine, rng = start(cfg, source, device, initial_classes)
    seen = np.zeros(len(source), dtype=bool)
    for it in range(cfg.n_online_em_iters):
        entry = online_iteration(engine, estep, source, rng, seen, it + 1)
        if on_iteration is not None:
            entry.phase = f"run{r}"
            on_iteration(entry)
    final, entry = closing_pass(engine, estep, source, 0, config.n_online_em_iters + 1 + r)
    entry.phase, entry.seconds = "restart", time.perf_counter() - t0
    return Restart(engine, final, entry.mean_loglik, entry)


def run_batch(
    source: ParticleSource,
    config: Config,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
    resume: tuple[ModelState, BatchPoint] | None = None,
    initial_classes: np.ndarray | None = None,
    estep: EStepExecutor | None = None,
) -> ClassificationResult:
    """Classify all particles of source with the batch schedule. See module docstring.

    checkpoint: called after every online-EM iteration and full pass with the model and a
    BatchPoint; resume: a (model, point) pair saved that way, to continue from (the result is
    the one the uninterrupted run gives). initial_classes: (K, D, D) class averages to start
    from instead of random subsets (e.g. another program's; scaled to the random-subset
    classes' norm, masked). estep: where the E-steps run (default: here; e.g.
    ``cryoclass.distributed.DaskEStep`` on a Dask cluster, same results).
    """
    estep = estep or LocalEStep()
    device = pick_device(config.device)
    n = len(source)
    n_online = config.n_online_em_iters
    total = batch_steps(config)
    log: list[IterationLog] = []
    final: ParticleResult | None = None
    done, score = 0, None

    if resume is None:
        engine, rng = start(config, source, device, initial_classes)
        seen = np.zeros(n, dtype=bool)
    else:
        engine = Engine(config, source.box, source.pixel_size_A, device)
        rng = np.random.default_rng(config.seed + 1)
        engine.state, point = resume
        rng.bit_generator.state = point.rng
        engine.rng.bit_generator.state = point.engine_rng
        torch.set_rng_state(point.torch_rng)
        seen, log, done, final = point.seen.copy(), list(point.log), point.step, point.final
        score = point.kept_score

    def save(step: int) -> None:
        if checkpoint is not None:
            checkpoint(
                engine.state,
                BatchPoint(
                    step,
                    seen.copy(),
                    list(log),
                    rng.bit_generator.state,
                    engine.rng.bit_generator.state,
                    torch.get_rng_state(),
                    final,
                    score,
                ),
            )

    def logged(phase: str, entry: IterationLog) -> None:
        log.append(entry)
        save(entry.iteration)
        if progress:
            progress(phase, entry.iteration, total, entry)

    for it in range(done, n_online):
        logged("online", online_iteration(engine, estep, source, rng, seen, it + 1))

    if done <= n_online:
        final, entry = closing_pass(engine, estep, source, 0, n_online + 1)
        score = entry.mean_loglik
        logged("full", entry)

    for r in range(max(1, done - n_online), config.n_restarts):
        shown = None
        if progress:
            step = n_online + r  # the bar stays at the step before this restart's

            def shown(entry: IterationLog, step: int = step) -> None:
                progress("restart", step, total, entry)

        other = run_restart(config, source, r, device, estep, initial_classes, shown)
        better = other.score > score
        if better:
            engine, final, score = other.engine, other.final, other.score
        logged("restart kept" if better else "restart not kept", other.entry)

    for j in range(1, len(final_passes(config))):
        step = pass_step(config, j)
        if step > done:
            final, entry = closing_pass(engine, estep, source, j, step)
            logged("full", entry)
    engine.state.history = [e.__dict__ for e in log]
    return ClassificationResult(engine.state, final, log, engine.particle_radius_A)


def _start_from(engine: Engine, classes: np.ndarray) -> None:
    """Replace the initial classes by ``classes`` (K, D, D), each scaled to the mean norm of the
    random-subset classes it replaces (other programs normalise differently) and masked."""
    st = engine.state
    refs = torch.as_tensor(np.asarray(classes, dtype=np.float32), device=engine.device)
    if refs.shape != st.class_images.shape:
        raise ValueError(
            f"initial classes have shape {tuple(refs.shape)}, the job needs "
            f"{tuple(st.class_images.shape)} (K, D, D)"
        )
    scale = st.class_images.flatten(1).norm(dim=1).mean() / (refs * engine.mask).flatten(1).norm(
        dim=1
    ).clamp_min(1e-12)
    refs = refs * scale[:, None, None]
    st.class_images = refs * engine.mask
    st.alignment_images = engine.alignment_copy(refs)
    st.half_images = st.class_images[None].repeat(2, 1, 1, 1)  # both halves start from them
