"""The stream's one commit point: ``stream_state.pt``, written atomically after every update.

It holds the engine's :class:`ModelState` (``ModelState.to_dict``, with everything else as its
``extra``, written by ``io.atomic_write``): the ingestion ledger and particle table, every particle's latest assignment, the
policy's counters, random-generator states, rejects and the events of the last commit. Either the
old or the new file is on disk at any moment, so a process killed at any point resumes from a
consistent state: particles ingested after the last commit are simply ingested again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cryoclass.engine.model import ModelState
from cryoclass.io import atomic_write

CHECKPOINT_NAME = "stream_state.pt"
FORMAT_VERSION = 1


@dataclass
class StreamCheckpoint:
    """What a stream needs to continue.

    state: the engine's model (None before the first update); extra: a picklable dict (pool,
    records, policy state, rng states, counters, rejects, history, pending events).
    """

    state: ModelState | None
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(out_dir: str | Path, ckpt: StreamCheckpoint) -> Path:
    """Write out_dir/stream_state.pt atomically; returns its path."""
    path = Path(out_dir) / CHECKPOINT_NAME
    extra = dict(ckpt.extra, format_version=FORMAT_VERSION)
    model = ckpt.state.to_dict() if ckpt.state is not None else None
    # disk full ...: an OutputError naming the file; the previous one is intact
    with atomic_write(path, "wb", encoding=None) as fh:
        torch.save({"model": model, "extra": extra}, fh)
    return path


def load_checkpoint(out_dir: str | Path, device: torch.device | str = "cpu"
                    ) -> StreamCheckpoint | None:
    """The checkpoint in out_dir, or None if there is none."""
    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    payload = torch.load(path, map_location=device, weights_only=False)
    model = payload.get("model")
    extra = payload.get("extra", {})
    if extra.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported stream checkpoint version "
                         f"{extra.get('format_version')!r} (expected {FORMAT_VERSION})")
    state = ModelState.from_dict(model) if model is not None else None
    return StreamCheckpoint(state=state, extra=extra)
