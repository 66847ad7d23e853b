"""What Dask workers run: pure functions of (settings, broadcast model, shard).

A task reads its shard's particles itself (``ShardSource``), prepares them as the local schedule
does (``engine.source.load_batch``) and E-steps them with an engine built once per worker and
given the broadcast model. Nothing is accumulated across tasks, so a task lost with its worker is
simply run again (same inputs, same output) and every shard is summed exactly once, by the client.
The only thing a worker keeps between tasks is a cache: the rotated class averages of the
broadcast model it holds (the same values every task would compute), dropped with that model.

Fault injection (tests and drills only): with ``CRYOCLASS_DASK_KILL_ONCE=DIR`` in the workers'
environment, the first task of phase P ('score', 'conclude' or 'full') that finds the file DIR/P
deletes it and kills its own worker process (SIGKILL), as a node failure would.
"""

from __future__ import annotations

import copy
import functools
import os
import signal
import weakref
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from dask.sizeof import sizeof

from cryoclass.config import Config
from cryoclass.distributed.cluster import worker_device
from cryoclass.distributed.shards import Shard, ShardSource
from cryoclass.engine.batch import ParticleBatch
from cryoclass.engine.em import Engine, Scored
from cryoclass.engine.model import ModelState
from cryoclass.engine.mstep import Statistics
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.engine.references import RotatedReferences

KILL_ENV = "CRYOCLASS_DASK_KILL_ONCE"


@dataclass(frozen=True)
class Geometry:
    """Box (px) and pixel size (Å) of the job's particles."""

    box: int
    pixel_size_A: float


@dataclass
class ScoredShard:
    """A shard's prepared batch and its scores (``Engine.score``), kept in the worker's memory
    between the two halves of a minibatch E-step."""

    number: int
    batch: ParticleBatch
    scored: Scored


@sizeof.register(ScoredShard)
def _sizeof_scored(x: ScoredShard) -> int:
    """Bytes held (so the scheduler runs the second half where the first one ran)."""
    total = 0
    for obj in (x.batch, x.scored):
        for f in fields(obj):
            v = getattr(obj, f.name)
            tensors = [v.values, *v.derived.values()] if isinstance(v, RotatedReferences) else [v]
            total += sum(
                t.element_size() * t.nelement() for t in tensors if isinstance(t, torch.Tensor)
            )
    return total


def broadcast_state(state: ModelState) -> ModelState:
    """What workers need of the model for an E-step, on the CPU: class images, noise spectra,
    working band, resolution, class weights (for the class prior) and offsets (for the
    translation prior). The running num/den
    statistics (the bulk of the model) stay with the client: their tensors are left empty."""
    st = state.stats
    k = st.weight.shape[-1]
    slim = Statistics(
        num=torch.zeros(2, k, 0, dtype=st.num.dtype),
        den=torch.zeros(2, k, 0, dtype=st.den.dtype),
        weight=st.weight.detach().cpu().clone(),
        noise_power=torch.zeros(0),
        noise_count=torch.zeros(0),
        evidence=torch.zeros(0),
        evidence_sq=torch.zeros(0),
        evidence_n=torch.zeros(0),
        offset=st.offset.detach().cpu().clone(),
    )
    align, halves, whiten = state.alignment_images, state.half_images, state.noise_whitening
    return replace(
        state,
        class_images=state.class_images.detach().cpu().clone(),
        stats=slim,
        alignment_images=None if align is None else align.detach().cpu().clone(),
        half_images=None if halves is None else halves.detach().cpu().clone(),
        sigma2=state.sigma2.detach().cpu().clone(),
        noise_whitening=None if whiten is None else whiten.detach().cpu().clone(),
        resolution_A=state.resolution_A.detach().cpu().clone(),
        reference_resolution_A=None,  # workers do not rebuild classes
        history=[],
    )


@dataclass
class PackedStatistics:
    """A shard's statistics as it travels back: only the class-grid points that hold data (the
    working band, a fraction of the Q points while the resolution is low), on the CPU.

    points: (P,) long indices into the Q points; num (2, K, P) complex; den (2, K, P);
    weight (2, K); groups: (G,) long, the noise groups that hold residuals; noise_power,
    noise_count (G, n_shells), theirs; evidence, evidence_sq (K, 2, n_shells);
    evidence_n (K, 2);
    offset (K, 3); n_points: Q.
    """

    points: torch.Tensor
    num: torch.Tensor
    den: torch.Tensor
    weight: torch.Tensor
    groups: torch.Tensor
    noise_power: torch.Tensor
    noise_count: torch.Tensor
    evidence: torch.Tensor
    evidence_sq: torch.Tensor
    evidence_n: torch.Tensor
    offset: torch.Tensor
    n_points: int

    @property
    def nbytes(self) -> int:
        return sum(
            t.element_size() * t.nelement()
            for t in (
                self.points,
                self.num,
                self.den,
                self.weight,
                self.groups,
                self.noise_power,
                self.noise_count,
                self.evidence,
                self.evidence_sq,
                self.evidence_n,
                self.offset,
            )
        )

    def add_to(self, total: Statistics) -> None:
        """total += these statistics (exactly as adding the full-size ones: the points left
        out are zeros)."""
        dev = total.num.device
        pts = self.points.to(dev)
        total.num[:, :, pts] += self.num.to(dev)
        total.den[:, :, pts] += self.den.to(dev)
        total.weight += self.weight.to(dev)
        groups = self.groups.to(dev)
        total.noise_power[groups] += self.noise_power.to(dev)
        total.noise_count[groups] += self.noise_count.to(dev)
        total.evidence += self.evidence.to(dev)
        total.evidence_sq += self.evidence_sq.to(dev)
        total.evidence_n += self.evidence_n.to(dev)
        total.offset += self.offset.to(dev)


def pack(stats: Statistics) -> PackedStatistics:
    """stats without the class-grid points where every num and den is zero and the noise
    groups without residuals, on the CPU."""
    has = (stats.den != 0).any(dim=1).any(dim=0) | (stats.num != 0).any(dim=1).any(dim=0)
    pts = torch.nonzero(has).squeeze(1)
    groups = torch.nonzero((stats.noise_count != 0).any(dim=1)).squeeze(1)
    return PackedStatistics(
        pts.cpu(),
        stats.num[:, :, pts].cpu(),
        stats.den[:, :, pts].cpu(),
        stats.weight.cpu(),
        groups.cpu(),
        stats.noise_power[groups].cpu(),
        stats.noise_count[groups].cpu(),
        stats.evidence.cpu(),
        stats.evidence_sq.cpu(),
        stats.evidence_n.cpu(),
        stats.offset.cpu(),
        int(stats.num.shape[-1]),
    )


def identity(x: object) -> object:
    """x (a task that holds the broadcast model on a worker)."""
    return x


def statistics_to(stats: Statistics, device: torch.device | str) -> Statistics:
    """stats with every tensor on device."""
    return Statistics(*(getattr(stats, f.name).to(device) for f in fields(Statistics)))


@functools.lru_cache(maxsize=8)
def _base_engine(config_json: str, box: int, pixel_size_A: float, device: str) -> Engine:
    return Engine(Config.model_validate_json(config_json), box, pixel_size_A, device)


def worker_engine(config: Config, geom: Geometry, state: ModelState) -> Engine:
    """An engine for this worker's device holding ``state`` (built once per worker and
    settings; each task gets its own shallow copy, so concurrent tasks cannot share a model)."""
    device = worker_device(config.device)
    eng = copy.copy(
        _base_engine(config.model_dump_json(), geom.box, geom.pixel_size_A, str(device))
    )
    if device.type != "cpu":
        align, halves, whiten = state.alignment_images, state.half_images, state.noise_whitening
        state = replace(
            state,
            class_images=state.class_images.to(device),
            alignment_images=None if align is None else align.to(device),
            half_images=None if halves is None else halves.to(device),
            stats=statistics_to(state.stats, device),
            sigma2=state.sigma2.to(device),
            noise_whitening=None if whiten is None else whiten.to(device),
            resolution_A=state.resolution_A.to(device),
        )
    eng.state = state
    return eng


def load_shard(
    engine: Engine, shard: Shard, geom: Geometry, rows: np.ndarray | None = None
) -> ParticleBatch:
    """Read and prepare the shard's particles (positions ``rows`` of it, default all), as the
    local schedule does; the batch's index is the job's row numbers."""
    from cryoclass.engine.source import load_batch

    pos = np.arange(shard.n) if rows is None else np.asarray(rows)
    batch = load_batch(engine, ShardSource(shard, geom.box, geom.pixel_size_A), pos)
    batch.index = torch.as_tensor(shard.index[pos], dtype=torch.long, device=engine.device)
    return batch


#: id(broadcast model held by this worker) -> its rotated class averages (Scored.refs); an
#: entry goes when the model is garbage-collected.
_REFS: dict[int, RotatedReferences] = {}


def _cached_refs(state: ModelState) -> RotatedReferences | None:
    return _REFS.get(id(state))


def _keep_refs(state: ModelState, refs: RotatedReferences | None) -> None:
    key = id(state)
    if refs is not None and key not in _REFS:
        _REFS[key] = refs
        weakref.finalize(state, _REFS.pop, key, None)


def score_shard(config: Config, geom: Geometry, state: ModelState, shard: Shard) -> ScoredShard:
    """First half of a minibatch E-step on a shard (kept on the worker)."""
    maybe_die("score")
    eng = worker_engine(config, geom, state)
    batch = load_shard(eng, shard, geom)
    scored = eng.score(batch, refs=_cached_refs(state))
    _keep_refs(state, scored.refs)
    return ScoredShard(shard.number, batch, scored)


def best_scores(scored: ScoredShard) -> torch.Tensor:
    """(n, K) best score per class of the shard's particles, on the CPU (for the temperature)."""
    return scored.scored.best.cpu()


def conclude_shard(
    config: Config, geom: Geometry, state: ModelState, scored: ScoredShard, temperature: float
) -> tuple[ParticleResult, PackedStatistics]:
    """Second half: posteriors at the minibatch's temperature, results and statistics."""
    maybe_die("conclude")
    eng = worker_engine(config, geom, state)
    res, stats, _ = eng.conclude(scored.batch, scored.scored, temperature)
    return res, pack(stats)


def full_shard(
    config: Config, geom: Geometry, state: ModelState, shard: Shard, hard: bool
) -> tuple[ParticleResult, PackedStatistics, list[float]]:
    """Full-pass E-step of a shard as a local full pass does it (``executor.full_pass_shard``:
    chunks of ``config.batch_particles``, statistics summed in chunk order); the chunks'
    temperatures."""
    from cryoclass.engine.executor import full_pass_shard

    maybe_die("full")
    eng = worker_engine(config, geom, state)
    parts, stats, temps, refs = full_pass_shard(
        eng, lambda pos: load_shard(eng, shard, geom, pos), shard.n, hard, _cached_refs(state)
    )
    _keep_refs(state, refs)
    return ParticleResult.concat(parts), pack(stats), temps


def maybe_die(phase: str) -> None:
    """Fault injection (see module docstring)."""
    folder = os.environ.get(KILL_ENV)
    if not folder:
        return
    try:
        os.unlink(os.path.join(folder, phase))
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
