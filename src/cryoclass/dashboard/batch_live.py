"""A batch job still running: its classes and log from the checkpoint it rewrites after every
iteration (``checkpoint.pt``, see ``cryoclass.outputs.checkpoint``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME
from cryoclass.schedules.batch import batch_steps

__all__ = ["CHECKPOINT_NAME", "BatchProgress", "read_batch_checkpoint"]


@dataclass
class BatchProgress:
    """Model order: images (K, D, D), weights (K,) summed posterior weights, resolution_A (K,) Å;
    pixel_size_A; step done and total steps; the iteration log (dicts); config (dict)."""

    images: np.ndarray
    weights: np.ndarray
    resolution_A: np.ndarray
    pixel_size_A: float
    step: int
    total: int
    log: list[dict[str, Any]]
    config: dict[str, Any]
    finished: bool


def read_batch_checkpoint(path: Path) -> BatchProgress | None:
    """The checkpoint's progress, or None if it cannot be read (absent, being replaced, or of
    another format)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        model = payload["model"]
        cfg = dict(payload.get("config", {}))
        point = payload["state"]["point"]
        weights = np.asarray(_np(model["stats"]["weight"]), np.float64)
        weights = weights.sum(0) if weights.ndim > 1 else weights
        total = batch_steps(Config(**cfg))
        return BatchProgress(images=np.asarray(_np(model["class_images"]), np.float32),
                             weights=weights,
                             resolution_A=np.asarray(_np(model["resolution_A"]), np.float64),
                             pixel_size_A=float(model["pixel_size_A"]),
                             step=int(point.get("step", 0)), total=total,
                             log=[dict(e) for e in point.get("log", [])], config=cfg,
                             finished=bool(payload.get("finished", False)))
    except Exception:  # noqa: BLE001 - a half-visible or foreign file is simply not shown
        return None


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
