"""E-steps on a Dask cluster: a map over particle shards and an ordered sum of statistics.

The shards are those of the plan every executor follows (``cryoclass.engine.executor``: a fixed
shard size, default ``config.batch_particles``, whatever the number of workers), and each shard
is computed by the same functions as in a single process, so a job gives the single-process
result bit for bit (with the same torch thread count in the workers and the client).

Per E-step the client broadcasts the model (``tasks.broadcast_state``: class images, noise
spectrum, working band, class weights) to every worker, submits one task per shard (rows +
metadata, ``shards.py``) and adds the returned statistics in shard order, so the result does not
depend on which worker finished first. Workers read their particles from the stacks themselves.

* Minibatch (online EM): one temperature for the whole minibatch, as locally. Each shard is
  scored (``Engine.score``; kept on its worker), the client takes the temperature of all the
  shards' best scores in shard order (``Engine.batch_temperature``, (n, K) floats), then each
  shard is concluded (posteriors, statistics) where it was scored.
* Full pass: shards of whole ``batch_particles`` chunks, each chunk E-stepped and the chunks'
  statistics summed as a local full pass does it (``executor.full_pass_shard``).

Shards send back their statistics packed to the points that hold data (the working band).
Lost workers: Dask runs a lost shard again from the same inputs (tasks are pure); the client sums
each shard's result once, so no particle is lost or counted twice.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cryoclass.distributed import tasks
from cryoclass.distributed.shards import Shard, make_shard
from cryoclass.engine.batch import ParticleBatch
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import FULL_SHARD_CHUNKS, EStepOutput, LocalEStep, ShardPlan
from cryoclass.engine.mstep import Statistics
from cryoclass.engine.particle_result import ParticleResult

if TYPE_CHECKING:
    from cryoclass.engine.source import ParticleSource
    from distributed import Client


@dataclass
class Traffic:
    """Payload bytes a DaskEStep has moved so far (protocol overhead not counted).

    model: the broadcast model, once per E-step (each worker then fetches it once); shards: the
    shards' row numbers and metadata; results: what the shards send back (statistics packed to
    the working band, per-particle results); scores: best scores per class (minibatch
    temperature); esteps: E-steps run.
    """

    esteps: int = 0
    model: int = 0
    shards: int = 0
    results: int = 0
    scores: int = 0


def _tensor_bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


def _result_bytes(res: ParticleResult) -> int:
    return res.nbytes()


def _shard_bytes(shard: Shard) -> int:
    return int(shard.index.nbytes + shard.rows.memory_usage(deep=True).sum())


class LazyBatch:
    """Stands in for the prepared batch of rows idx: reads and prepares it in this process the
    first time something asks for it (only re-seeding empty classes does)."""

    def __init__(self, engine: Engine, source: "ParticleSource", idx: np.ndarray) -> None:
        self.__dict__.update(_engine=engine, _source=source, _idx=np.asarray(idx), _batch=None)

    @property
    def loaded(self) -> bool:
        return self.__dict__["_batch"] is not None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self.__dict__["_batch"] is None:
            from cryoclass.engine.source import load_batch

            self.__dict__["_batch"] = load_batch(self._engine, self._source, self._idx)
        return getattr(self.__dict__["_batch"], name)


class DaskEStep:
    """E-step executor (``cryoclass.engine.executor``) on a Dask cluster.

    client: a connected ``distributed.Client``; shard_size (minibatch particles per shard,
    default ``config.batch_particles``) and full_shard_chunks (E-step chunks per full-pass
    shard, default 8): the shard plan, as ``LocalEStep``'s (``engine.executor.ShardPlan``). The
    shards, and so the results, do not depend on the number of workers, and equal those of
    ``LocalEStep`` with the same plan bit for bit.
    """

    def __init__(
        self,
        client: "Client",
        shard_size: int | None = None,
        full_shard_chunks: int = FULL_SHARD_CHUNKS,
    ) -> None:
        self.client = client
        self.plan = ShardPlan(shard_size, full_shard_chunks)
        self.n_tasks = 0  # tasks submitted so far (for reports and tests)
        self.traffic = Traffic()

    def _setup(self, engine: Engine) -> tuple[tasks.Geometry, Any]:
        """The job's geometry, and the model for this E-step as a future: a task returning it,
        not scattered data, so that the scheduler can make it again if every worker holding it
        is lost; copied to every worker (from worker to worker)."""
        geom = tasks.Geometry(engine.box, engine.apix)
        model = tasks.broadcast_state(engine.state)
        self.traffic.esteps += 1
        self.traffic.model += _tensor_bytes(
            model.class_images,
            model.sigma2,
            model.stats.weight,
            model.resolution_A,
            model.alignment_images,
            model.half_images,
        )
        with warnings.catch_warnings():  # the model travels once per E-step, by design
            warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
            state = self.client.submit(tasks.identity, model, pure=False)
        # On every worker before the shards are placed: otherwise the scheduler keeps the
        # shards where the model is, and one worker does all the work.
        self.client.replicate([state])
        return geom, state

    # ------------------------------------------------------------------ executor
    def minibatch(
        self,
        engine: Engine,
        source: "ParticleSource",
        idx: np.ndarray,
        factor: float,
        batch: ParticleBatch | None = None,
    ) -> EStepOutput:
        """Sharded E-step of rows idx at one temperature (see module docstring). A batch
        already prepared here (a stream's warm-up, one minibatch) is E-stepped here."""
        if batch is not None:
            local = LocalEStep(self.plan.shard_size, self.plan.full_shard_chunks)
            return local.minibatch(engine, source, idx, factor, batch=batch)
        t0 = time.perf_counter()
        idx = np.asarray(idx)
        cfg = engine.cfg
        geom, state = self._setup(engine)
        shards = [
            make_shard(i, idx[part], source.table)
            for i, part in enumerate(self.plan.minibatch(engine, idx.size))
        ]
        self.traffic.shards += sum(_shard_bytes(s) for s in shards)
        submit = self.client.submit
        scored = [submit(tasks.score_shard, cfg, geom, state, s, pure=False) for s in shards]
        bests = self.client.gather([submit(tasks.best_scores, f, pure=False) for f in scored])
        self.traffic.scores += _tensor_bytes(*bests)
        temperature = engine.batch_temperature(factor, torch.cat(bests).to(engine.device))
        done = [
            submit(tasks.conclude_shard, cfg, geom, state, f, temperature, pure=False)
            for f in scored
        ]
        self.n_tasks += 3 * len(shards)
        res, stats = self._reduce(engine, done)
        del scored, state
        return EStepOutput(
            LazyBatch(engine, source, idx),
            res,
            stats,
            temperature,
            {"estep": time.perf_counter() - t0},
        )

    def full(
        self, engine: Engine, source: "ParticleSource", hard: bool = False
    ) -> tuple[ParticleResult, Statistics, float]:
        """Sharded full-pass E-step of every particle (see module docstring)."""
        cfg = engine.cfg
        n = len(source)
        geom, state = self._setup(engine)
        shards = [
            make_shard(i, part, source.table) for i, part in enumerate(self.plan.full(engine, n))
        ]
        self.traffic.shards += sum(_shard_bytes(s) for s in shards)
        futures = [
            self.client.submit(tasks.full_shard, cfg, geom, state, s, hard, pure=False)
            for s in shards
        ]
        self.n_tasks += len(shards)
        temps: list[float] = []
        res, stats = self._reduce(engine, futures, temps)
        del state
        return res, stats, float(np.mean(temps))

    def _reduce(
        self, engine: Engine, futures: list, temps: list[float] | None = None
    ) -> tuple[ParticleResult, Statistics]:
        """Results concatenated and statistics summed in shard order (each shard once),
        gathering one shard at a time."""
        total = Statistics.zeros(
            engine.cfg.n_classes, engine.grid.size, engine.n_shells, engine.device
        )
        parts: list[ParticleResult] = []
        for i, fut in enumerate(futures):
            out = fut.result()
            futures[i] = None  # release the shard's result on its worker
            parts.append(out[0])
            out[1].add_to(total)
            self.traffic.results += out[1].nbytes + _result_bytes(out[0])
            if temps is not None:
                temps.extend(out[2])
        return ParticleResult.concat(parts), total
