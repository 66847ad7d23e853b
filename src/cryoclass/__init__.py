"""cryoclass: batch and streaming 2D classification of cryo-EM particle images.

Public API::

    from cryoclass import Config, classify, read_particles, simulate, stream

    result = classify("particles.star", Config(n_classes=20, max_res_A=8), "job1")
    result.classes, result.assignments, result.paths      # see jobs.classify.ClassifyResult

``stream`` (``stream.Stream``: a resumable streaming job) and ``simulate``
(``simulate.simulate_dataset``) are subpackages. Data flows one way: ``io`` (files) ->
particles -> ``engine`` (E-step, M-step) run by ``schedules`` -> model state -> ``outputs``.
The names are loaded on first use, so ``import cryoclass`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from cryoclass.config import Config

__version__ = "0.1.0"

__all__ = [
    "ClassifyResult",
    "Config",
    "__version__",
    "classify",
    "read_particles",
    "simulate",
    "stream",
]

_LAZY = {
    "classify": ("cryoclass.jobs.classify", "classify"),
    "ClassifyResult": ("cryoclass.jobs.classify", "ClassifyResult"),
    "read_particles": ("cryoclass.io", "read_particles"),
    "simulate": ("cryoclass.simulate", None),
    "stream": ("cryoclass.stream", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cryoclass' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)
