"""The batch job's commit point: ``batch_state.pt`` in the output folder, rewritten atomically
after every online-EM iteration and full pass.

It holds the model (``ModelState.to_dict``), the schedule's :class:`BatchPoint` (step, particles
drawn, log, random-generator states, the last full pass's results), the settings and a
fingerprint of the particles. A job killed at any moment is continued with ``--resume`` from the
last step it committed, and gives the result the uninterrupted job gives: no particle is lost or
counted twice. The file stays after the job ends (marked finished), so a job killed while writing
its outputs only rewrites them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryoclass.config import Config
from cryoclass.engine.model import ModelState
from cryoclass.engine.particle_result import ParticleResult
from cryoclass.schedules.batch import BatchPoint, IterationLog, batch_steps
from cryoclass.io import InputError, ParticleSet, atomic_write
from cryoclass.io.columns import SOURCE_ROW, STACK_INDEX, STACK_PATH

CHECKPOINT_NAME = "batch_state.pt"
FORMAT_VERSION = 1


def particles_fingerprint(pset: ParticleSet) -> str:
    """sha256 of the particles a job classifies (absolute stack path, index, source row, in
    order) and of the number set aside: a resumed job must see the same ones, however the
    particle file's path is spelled."""
    t = pset.table
    h = hashlib.sha256()
    h.update(f"{len(t)}|{len(pset.rejects)}".encode())
    for col in (STACK_PATH, STACK_INDEX, SOURCE_ROW):
        if col in t.columns:
            h.update("\n".join(map(str, t[col].tolist())).encode())
    return h.hexdigest()


class BatchCheckpoint:
    """``out_dir/batch_state.pt`` for a job with ``config`` on particles with ``fingerprint``."""

    def __init__(self, out_dir: str | Path, config: Config, fingerprint: str) -> None:
        self.path = Path(out_dir) / CHECKPOINT_NAME
        self.config = config
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: ModelState, point: BatchPoint) -> None:
        """Write the checkpoint atomically (the previous one stays whole until replaced)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "config": self.config.model_dump(),
            "fingerprint": self.fingerprint,
            "model": state.to_dict(),
            "point": _point_dict(point),
            "finished": point.step >= batch_steps(self.config),
        }
        with atomic_write(self.path, "wb", encoding=None) as fh:
            torch.save(payload, fh)

    def peek(self) -> dict[str, Any]:
        """The raw checkpoint; :class:`InputError` if it cannot be read."""
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as err:  # a foreign or damaged file: say so, never a traceback
            raise InputError(f"cannot read the batch checkpoint ({type(err).__name__}: {err}); "
                             "delete it to start over", file=self.path) from None
        if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
            raise InputError("not a batch checkpoint of this cryoclass version; delete it to start "
                             "over", file=self.path)
        return payload

    def describe(self, payload: dict[str, Any]) -> str:
        """'step i of n' of a checkpoint."""
        saved = Config(**payload["config"])
        return f"step {payload['point']['step']} of {batch_steps(saved)}"

    def load(self, device: torch.device | str = "cpu") -> tuple[ModelState, BatchPoint]:
        """The saved (model, point); :class:`InputError` if it belongs to other settings or other
        particles."""
        payload = self.peek()
        saved = Config(**payload["config"])
        diff = self.config.changes_from(saved)
        if diff:
            changes = ", ".join(diff)
            raise InputError(f"holds a run with different settings ({changes}); resume with the "
                             "same settings, or use a new output folder", file=self.path)
        if payload["fingerprint"] != self.fingerprint:
            raise InputError("holds a run on other particles (the input file, its images or the "
                             "particles set aside changed); use a new output folder",
                             file=self.path)
        state = ModelState.from_dict(payload["model"])
        state = _to_device(state, torch.device(device))
        return state, _point_from(payload["point"])


def _point_dict(p: BatchPoint) -> dict[str, Any]:
    return {
        "step": p.step,
        "seen": np.asarray(p.seen),
        "log": [asdict(e) for e in p.log],
        "rng": p.rng,
        "engine_rng": p.engine_rng,
        "torch_rng": p.torch_rng,
        "final": None if p.final is None else p.final.to_dict(),
    }


def _point_from(d: dict[str, Any]) -> BatchPoint:
    return BatchPoint(step=int(d["step"]), seen=np.asarray(d["seen"], dtype=bool),
                      log=[IterationLog(**e) for e in d["log"]], rng=d["rng"],
                      engine_rng=d["engine_rng"], torch_rng=d["torch_rng"],
                      final=None if d["final"] is None else ParticleResult(**d["final"]))


def _to_device(state: ModelState, device: torch.device) -> ModelState:
    """The state with every tensor on ``device`` (checkpoints are loaded on the CPU)."""
    d = state.to_dict()

    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device)
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        return x

    return ModelState.from_dict(move(d))
