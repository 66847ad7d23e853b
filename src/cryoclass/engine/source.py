"""Particles as the engine reads them: a particle source, and its rows made into batches.

A particle source is anything with ``len()``, ``box``, ``pixel_size_A``,
``images(idx) -> (n, D, D)`` and ``ctf_params(idx)`` (CTF parameters in physical units, name ->
(n,) array, see ``batch.ctf_tensors``): a ``cryoclass.io.ParticleSet``, a stream's
``ParticlePool``, a Dask worker's ``ShardSource``. The engine never sees a file format.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from cryoclass.engine.batch import ParticleBatch, ctf_tensors, prepare_batch
from cryoclass.engine.em import Engine
from cryoclass.engine.prepared_cache import PreparedCache


class ParticleSource(Protocol):
    box: int
    pixel_size_A: float

    def __len__(self) -> int: ...
    def images(self, idx: np.ndarray) -> np.ndarray: ...
    def ctf_params(self, idx: np.ndarray) -> dict[str, np.ndarray]: ...


def load_batch(engine: Engine, source: ParticleSource, idx: np.ndarray) -> ParticleBatch:
    """Read and prepare particles idx (rows of the source); particles prepared before are
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
    return ParticleBatch(
        index=torch.as_tensor(idx, device=engine.device),
        images=images,
        ctf_params=ctf_tensors(source.ctf_params(idx), engine.device),
        pixel_size_A=float(source.pixel_size_A),
        skip_ctf=engine.cfg.skip_ctf,
        align_images=align,
        fourier=cache.fourier,
    )


def _read_and_prepare(engine: Engine, source: ParticleSource, idx: np.ndarray) -> ParticleBatch:
    images = source.images(idx)
    return prepare_batch(
        idx,
        images,
        source.ctf_params(idx),
        source.pixel_size_A,
        engine.mask,
        engine.mask_radius_px,
        engine.cfg.invert_contrast,
        engine.cfg.skip_ctf,
        engine.device,
        highpass_radius=engine.r_min,
    )


def _cache(engine: Engine, source: ParticleSource) -> PreparedCache | None:
    """The engine's cache for this source (a new one when the source changed); None for a
    source that does not declare its images immutable (``images_immutable``)."""
    if not getattr(source, "images_immutable", False):
        return None
    cache = engine.prepared_cache
    if cache is None or not cache.serves(source):
        cache = PreparedCache(source, engine.box, two_copies=engine.r_min > 0)
        engine.prepared_cache = cache
    return cache
