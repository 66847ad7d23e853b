"""Where E-steps run: the schedules (batch and streaming) ask an E-step executor for them.

``LocalEStep`` (the default) reads and E-steps the particles in this process.
``cryoclass.distributed.DaskEStep`` runs the same E-steps as a map over particle shards on a Dask
cluster. Both follow one fixed plan (below), so they compute the same thing in the same order and
give the same results bit for bit when the E-steps run with the same torch thread count on the
same kind of device (BLAS matrix products and reductions split their sums by thread count: 1 and
4 threads differ in the last bits at box 96); the schedules do not know which one they use.

The plan (``ShardPlan``) depends only on the particles and two settings, never on the number of
workers: ``shard_size`` (minibatch particles per shard; default ``config.batch_particles``) and
``full_shard_chunks`` (E-step chunks per full-pass shard; default 8).

* Minibatch (one temperature for all of it): its rows split into ceil(n / shard_size) contiguous,
  nearly equal shards (``minibatch_shards``). Each shard is scored (``Engine.score``), one
  temperature is taken from all the shards' best scores in shard order
  (``Engine.batch_temperature``), each shard is concluded at it (``Engine.conclude``), and the
  shards' statistics are summed in shard order, starting from zeros.
* Full pass: chunks of ``config.batch_particles`` rows, each E-stepped on its own
  (``Engine.expectation``, its own temperature); shards of ``full_shard_chunks`` whole chunks
  (``full_pass_shards``); each shard's chunk statistics summed in chunk order from zeros, then
  the shards' sums in shard order.

Float addition is not associative, so the grouping is part of the result: executors with the same
plan give the same bits. More shards mean more parallel tasks on a cluster but more statistics
to send back (one packed copy per shard), hence whole-chunk groups for full passes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from cryoclass.engine.batch import ParticleBatch
from cryoclass.engine.em import Engine
from cryoclass.engine.memory import release_free_memory
from cryoclass.engine.mstep import Statistics
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.references import RotatedReferences
from cryoclass.engine.source import ParticleSource, load_batch


@dataclass
class EStepOutput:
    """One minibatch E-step: the batch (or a stand-in that reads it when first used, for
    re-seeding empty classes), per-particle results, the batch statistics (not yet absorbed),
    the temperature, and wall times in seconds ('read', 'estep')."""

    batch: ParticleBatch | Any
    result: ParticleResult
    stats: Statistics
    temperature: float
    seconds: dict[str, float] = field(default_factory=dict)


class EStepExecutor(Protocol):
    """Runs E-steps for a schedule (see module docstring)."""

    def minibatch(
        self,
        engine: Engine,
        source: ParticleSource,
        idx: np.ndarray,
        factor: float,
        batch: ParticleBatch | None = None,
    ) -> EStepOutput:
        """E-step of rows idx of source at annealing factor ``factor``, as one batch (one
        temperature for all of them). ``batch``: those rows already prepared, if at hand."""
        ...

    def full(
        self, engine: Engine, source: ParticleSource, hard: bool = False
    ) -> tuple[ParticleResult, Statistics, float]:
        """E-step of every particle at factor 0 in chunks of ``config.batch_particles`` (each
        chunk its own temperature): results in row order, summed statistics, mean temperature."""
        ...


#: Default E-step chunks per full-pass shard (2,048 particles at the default batch_particles):
#: few enough shards that their statistics cost little to send back (1,000,000 particles: 489
#: shards), enough to keep many workers busy.
FULL_SHARD_CHUNKS = 8


@dataclass(frozen=True)
class ShardPlan:
    """How E-steps are cut into shards and summed (module docstring). shard_size: minibatch
    particles per shard (None: ``config.batch_particles``); full_shard_chunks: E-step chunks of
    ``config.batch_particles`` per full-pass shard."""

    shard_size: int | None = None
    full_shard_chunks: int = FULL_SHARD_CHUNKS

    def __post_init__(self) -> None:
        if self.shard_size is not None and self.shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        if self.full_shard_chunks < 1:
            raise ValueError("full_shard_chunks must be at least 1")

    def minibatch(self, engine: Engine, n: int) -> list[slice]:
        """Shards (slices of positions) of a minibatch of n particles."""
        size = engine.cfg.batch_particles if self.shard_size is None else self.shard_size
        return minibatch_shards(n, size)

    def full(self, engine: Engine, n: int) -> list[np.ndarray]:
        """Shards (rows) of a full pass over n particles."""
        return full_pass_shards(n, engine.cfg.batch_particles, self.full_shard_chunks)


def minibatch_shards(n: int, shard_size: int) -> list[slice]:
    """Positions 0..n-1 of a minibatch in ceil(n / shard_size) contiguous, non-empty, nearly
    equal shards, in order (the first ones one longer when n does not divide evenly)."""
    if n <= 0:
        return []
    parts = np.array_split(np.arange(n), max(1, math.ceil(n / shard_size)))
    return [slice(int(p[0]), int(p[-1]) + 1) for p in parts if p.size]


def full_pass_shards(n: int, chunk: int, chunks_per_shard: int) -> list[np.ndarray]:
    """Rows 0..n-1 in contiguous shards of ``chunks_per_shard`` whole E-step chunks of ``chunk``
    rows (the last shard and chunk may be shorter), in order."""
    per = max(1, int(chunks_per_shard)) * int(chunk)
    return [np.arange(a, min(n, a + per)) for a in range(0, n, per)]


def sharded_expectation(
    engine: Engine, shards: list[ParticleBatch], factor: float
) -> tuple[list[ParticleResult], Statistics, float]:
    """The minibatch E-step of the plan (module docstring) on its prepared shards: per-shard
    results, the statistics summed in shard order, the temperature."""
    scored, refs = [], None
    for b in shards:  # the rotated class averages are the same for every shard: rotate once
        scored.append(engine.score(b, refs=refs))
        refs = scored[-1].refs
    temperature = engine.batch_temperature(factor, torch.cat([s.best for s in scored]))
    total = Statistics.zeros(engine.cfg.n_classes, engine.grid.size, engine.n_shells, engine.device)
    parts = []
    for i, b in enumerate(shards):
        res, stats, _ = engine.conclude(b, scored[i], temperature)
        scored[i] = None  # release the shard's scores
        total.add_(stats)
        parts.append(res)
    return parts, total, temperature


def full_pass_shard(
    engine: Engine,
    load: Callable[[np.ndarray], ParticleBatch],
    n: int,
    hard: bool = False,
    refs: RotatedReferences | None = None,
) -> tuple[list[ParticleResult], Statistics, list[float], torch.Tensor | None]:
    """One full-pass shard of the plan: its n particles in chunks of ``config.batch_particles``
    (``load(positions)`` prepares positions 0..n-1 of the shard), each chunk E-stepped on its
    own (``Engine.expectation``, its rotated class averages ``refs`` reused when given). Returns
    per-chunk results, their statistics summed in chunk order from zeros, the chunks'
    temperatures and the rotated class averages."""
    chunk = engine.cfg.batch_particles
    stats = Statistics.zeros(engine.cfg.n_classes, engine.grid.size, engine.n_shells, engine.device)
    parts, temps = [], []
    for a in range(0, n, chunk):
        batch = load(np.arange(a, min(n, a + chunk)))
        scored = engine.score(batch, refs=refs)  # = engine.expectation(batch, 0.0, hard)
        refs = scored.refs
        res, bstats, t = engine.conclude(
            batch, scored, engine.batch_temperature(0.0, scored.best), hard
        )
        del scored
        stats.add_(bstats)
        parts.append(res)
        temps.append(t)
    release_free_memory()
    return parts, stats, temps, refs


class LocalEStep:
    """E-steps in this process (the default), following the plan of the module docstring.

    shard_size, full_shard_chunks: the plan (``ShardPlan``); give a DaskEStep's to reproduce
    its results here (the defaults are the same).
    """

    def __init__(
        self, shard_size: int | None = None, full_shard_chunks: int = FULL_SHARD_CHUNKS
    ) -> None:
        self.plan = ShardPlan(shard_size, full_shard_chunks)

    def minibatch(
        self,
        engine: Engine,
        source: ParticleSource,
        idx: np.ndarray,
        factor: float,
        batch: ParticleBatch | None = None,
    ) -> EStepOutput:
        t0 = time.perf_counter()
        if batch is None:
            batch = load_batch(engine, source, idx)
        t1 = time.perf_counter()
        shards = [batch.rows(s) for s in self.plan.minibatch(engine, batch.n)]
        parts, stats, temp = sharded_expectation(engine, shards, factor)
        return EStepOutput(
            batch,
            ParticleResult.concat(parts),
            stats,
            temp,
            {"read": t1 - t0, "estep": time.perf_counter() - t1},
        )

    def full(
        self, engine: Engine, source: ParticleSource, hard: bool = False
    ) -> tuple[ParticleResult, Statistics, float]:
        n = len(source)
        total = Statistics.zeros(
            engine.cfg.n_classes, engine.grid.size, engine.n_shells, engine.device
        )
        parts: list[ParticleResult] = []
        temps: list[float] = []
        refs = None
        for rows in self.plan.full(engine, n):
            res, stats, t, refs = full_pass_shard(
                engine,
                lambda pos, rows=rows: load_batch(engine, source, rows[pos]),
                rows.size,
                hard,
                refs,
            )
            total.add_(stats)
            parts.extend(res)
            temps.extend(t)
        return ParticleResult.concat(parts), total, float(np.mean(temps))
