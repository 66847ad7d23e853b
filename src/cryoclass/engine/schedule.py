"""Batch schedule (CryoSPARC-style 2D job): online EM on fresh random minibatches with the noise
model annealed by particles seen, then full iterations over all particles.

The particle source is anything with ``len()``, ``table`` (RELION column names), ``box``,
``pixel_size_A`` and ``images(idx) -> (n, D, D)`` (a ``cryoclass.io.ParticleSet``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import pandas as pd
import torch

from cryoclass.config import Config
from cryoclass.engine.batch import ParticleBatch, ctf_params_from_table, prepare_batch
from cryoclass.engine.device import pick_device
from cryoclass.engine.em import Engine, ParticleResult
from cryoclass.engine.executor import EStepExecutor, LocalEStep
from cryoclass.engine.model import ModelState
from cryoclass.engine.prepared_cache import PreparedCache


class ParticleSource(Protocol):
    table: pd.DataFrame
    box: int
    pixel_size_A: float

    def __len__(self) -> int: ...
    def images(self, idx: np.ndarray) -> np.ndarray: ...


@dataclass
class IterationLog:
    """One line of the job log: iteration, phase ('online'/'full'), particles, temperature,
    working resolution (Å), mean log-likelihood, seconds, classes re-seeded."""

    iteration: int
    phase: str
    n_particles: int
    temperature: float
    work_res_A: float
    mean_loglik: float
    seconds: float
    reseeded: int = 0


@dataclass
class ClassificationResult:
    """Final model and per-particle assignments (arrays in particle-table order)."""

    state: ModelState
    particles: ParticleResult
    log: list[IterationLog] = field(default_factory=list)


Progress = Callable[[str, int, int, IterationLog | None], None]


@dataclass
class BatchPoint:
    """Where a batch run stands after ``step`` steps (online-EM iterations, then full passes):
    with the model, enough to continue it exactly as if it had not stopped.

    seen: (n,) bool particles drawn so far; log: the iteration log; rng, engine_rng: numpy
    bit-generator states of the schedule and the engine; torch_rng: torch's CPU RNG state;
    final: the latest full pass's per-particle results (None before the first).
    """

    step: int
    seen: np.ndarray
    log: list[IterationLog]
    rng: dict
    engine_rng: dict
    torch_rng: torch.Tensor
    final: ParticleResult | None = None


#: checkpoint(state, point): called after every step; must persist both atomically.
Checkpoint = Callable[[ModelState, BatchPoint], None]


def load_batch(engine: Engine, source: ParticleSource, idx: np.ndarray) -> ParticleBatch:
    """Read and prepare particles idx (rows of source.table); particles prepared before are
    taken from the engine's in-memory cache (``prepared_cache.py``)."""
    idx = np.asarray(idx, dtype=np.int64)
    cache = _cache(engine, source)
    todo = cache.missing(idx, len(source)) if cache is not None else idx
    if todo.size == idx.size:
        batch = _read_and_prepare(engine, source, idx)
        if cache is not None:
            cache.store(batch)
            batch.fourier = cache.fourier
        return batch
    if todo.size:
        cache.store(_read_and_prepare(engine, source, todo))
    images, align = cache.take(idx, engine.device)
    return ParticleBatch(index=torch.as_tensor(idx, device=engine.device), images=images,
                         ctf_params=ctf_params_from_table(source.table.iloc[idx], engine.device),
                         pixel_size_A=float(source.pixel_size_A), skip_ctf=engine.cfg.skip_ctf,
                         align_images=align, fourier=cache.fourier)


def _read_and_prepare(engine: Engine, source: ParticleSource, idx: np.ndarray) -> ParticleBatch:
    images = source.images(idx)
    rows = source.table.iloc[idx]
    return prepare_batch(idx, images, rows, source.pixel_size_A, engine.mask,
                         engine.mask_radius_px, engine.cfg.invert_contrast, engine.cfg.skip_ctf,
                         engine.device, highpass_radius=engine.r_min)


def _cache(engine: Engine, source: ParticleSource) -> PreparedCache | None:
    """The engine's cache for this source (a new one when the source changed); None for a
    source that does not declare its images immutable (``images_immutable``)."""
    if not getattr(source, "images_immutable", False):
        return None
    cache = getattr(engine, "prepared_cache", None)
    if cache is None or not cache.serves(source):
        cache = PreparedCache(source, engine.box, two_copies=engine.r_min > 0)
        engine.prepared_cache = cache
    return cache


def full_pass(engine: Engine, source: ParticleSource, hard: bool = False,
              update: bool = True, estep: EStepExecutor | None = None
              ) -> tuple[ParticleResult, float]:
    """E-step over all particles in chunks; with update, replace the statistics by the pass's.
    estep: where the E-steps run (default: here, ``engine.executor.LocalEStep``)."""
    n = len(source)
    res, stats, temp = (estep or LocalEStep()).full(engine, source, hard=hard)
    if update:
        engine.state.distinct_seen = 0
        engine.absorb(stats, n, n, replace=True)
    return res, temp


def concat_results(parts: list[ParticleResult]) -> ParticleResult:
    return ParticleResult(*[np.concatenate([getattr(p, f) for p in parts])
                            for f in ParticleResult.__dataclass_fields__])


def run_batch(source: ParticleSource, config: Config, progress: Progress | None = None,
              checkpoint: Checkpoint | None = None,
              resume: tuple[ModelState, BatchPoint] | None = None,
              initial_classes: np.ndarray | None = None,
              estep: EStepExecutor | None = None) -> ClassificationResult:
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
    engine = Engine(config, source.box, source.pixel_size_A, device)
    rng = np.random.default_rng(config.seed + 1)
    n = len(source)
    mb = min(config.minibatch_size, n)
    total = config.n_online_em_iters + max(config.n_full_iters, 1)
    log: list[IterationLog] = []
    torch.manual_seed(config.seed)
    final: ParticleResult | None = None
    done = 0

    if resume is None:
        first = rng.permutation(n)[:mb]
        engine.initialise(load_batch(engine, source, first))
        if initial_classes is not None:
            _start_from(engine, initial_classes)
        seen = np.zeros(n, dtype=bool)
    else:
        engine.state, point = resume
        rng.bit_generator.state = point.rng
        engine.rng.bit_generator.state = point.engine_rng
        torch.set_rng_state(point.torch_rng)
        seen, log, done, final = point.seen.copy(), list(point.log), point.step, point.final

    def save(step: int) -> None:
        if checkpoint is not None:
            checkpoint(engine.state, BatchPoint(step, seen.copy(), list(log), rng.bit_generator.state,
                                                engine.rng.bit_generator.state,
                                                torch.get_rng_state(), final))

    for it in range(done, config.n_online_em_iters):
        t0 = time.perf_counter()
        idx = np.sort(rng.choice(n, size=mb, replace=False))
        factor = engine.temperature_factor(engine.state.processed)
        out = estep.minibatch(engine, source, idx, factor)
        res, bstats, temp = out.result, out.stats, out.temperature
        new_distinct = int((~seen[idx]).sum())
        seen[idx] = True
        engine.absorb(bstats, len(idx), new_distinct)
        reseeded = []
        if config.reseed_empty and factor > 0:
            reseeded = engine.reseed_empty(out.batch, res)
        entry = IterationLog(it + 1, "online", len(idx), temp,
                             engine.res_A(engine.state.r_work),
                             float(np.mean(res.log_likelihood)),
                             time.perf_counter() - t0, len(reseeded))
        log.append(entry)
        save(it + 1)
        if progress:
            progress("online", it + 1, total, entry)

    n_full = max(config.n_full_iters, 1)
    for j in range(max(0, done - config.n_online_em_iters), n_full):
        t0 = time.perf_counter()
        last = j == n_full - 1
        update = config.n_full_iters > 0
        final, temp = full_pass(engine, source,
                                hard=last and config.hard_classify_last_iter, update=update,
                                estep=estep)
        entry = IterationLog(config.n_online_em_iters + j + 1, "full" if update else "assign", n,
                             temp, engine.res_A(engine.state.r_work),
                             float(np.mean(final.log_likelihood)), time.perf_counter() - t0)
        log.append(entry)
        save(config.n_online_em_iters + j + 1)
        if progress:
            progress("full", config.n_online_em_iters + j + 1, total, entry)
    engine.state.history = [e.__dict__ for e in log]
    return ClassificationResult(engine.state, final, log)


def _start_from(engine: Engine, classes: np.ndarray) -> None:
    """Replace the initial classes by ``classes`` (K, D, D), each scaled to the mean norm of the
    random-subset classes it replaces (other programs normalise differently) and masked."""
    st = engine.state
    refs = torch.as_tensor(np.asarray(classes, dtype=np.float32), device=engine.device)
    if refs.shape != st.class_images.shape:
        raise ValueError(f"initial classes have shape {tuple(refs.shape)}, the job needs "
                         f"{tuple(st.class_images.shape)} (K, D, D)")
    scale = st.class_images.flatten(1).norm(dim=1).mean() / \
        (refs * engine.mask).flatten(1).norm(dim=1).clamp_min(1e-12)
    refs = refs * scale[:, None, None]
    st.class_images = refs * engine.mask
    st.alignment_images = engine.alignment_copy(refs)
    st.half_images = st.class_images[None].repeat(2, 1, 1, 1)  # both halves start from them
