"""A job's one commit point, batch and stream alike: ``checkpoint.pt`` in its output folder,
rewritten atomically (``io.atomic_write``: the previous file stays whole until replaced) after
every step.

One layout (a ``torch.save``'d dict): ``format_version``; ``job`` ('batch' or 'stream');
``config`` (``Config.model_dump()``); ``inputs``, a fingerprint of the particles the job was
given (None when the job takes them as they come, as a stream does); ``model``
(``ModelState.to_dict()``, None before the first update); ``finished``; ``state``, the job's own
plain data (batch: the schedule's ``BatchPoint``; stream: ledger, records, policy, counters) and
the ``events`` of the commit. A job killed at any moment continues from its last commit;
``Config.changes_from`` decides which changed settings refuse a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cryoclass.config import Config
from cryoclass.engine.model import ModelState
from cryoclass.io import InputError, atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 2
#: The files of earlier versions (one per job kind); refused, never silently ignored.
EARLIER_NAMES = ("batch_state.pt", "stream_state.pt")


@dataclass
class Checkpoint:
    """What a checkpoint holds (see the module docstring); ``model`` on the device it was loaded
    to."""

    job: str
    config: dict[str, Any]
    model: ModelState | None
    state: dict[str, Any] = field(default_factory=dict)
    inputs: str | None = None
    finished: bool = False


class JobCheckpoint:
    """``out_dir/checkpoint.pt`` of a ``job`` ('batch' or 'stream') with ``config`` on particles
    with fingerprint ``inputs`` (None: not checked)."""

    def __init__(
        self, out_dir: str | Path, job: str, config: Config, inputs: str | None = None
    ) -> None:
        self.path = Path(out_dir) / CHECKPOINT_NAME
        self.job = job
        self.config = config
        self.inputs = inputs

    def exists(self) -> bool:
        """True if the folder holds a checkpoint; :class:`InputError` if it holds only one of an
        earlier cryoclass version."""
        if self.path.is_file():
            return True
        for name in EARLIER_NAMES:
            if (self.path.parent / name).is_file():
                raise InputError(
                    "holds a checkpoint of an earlier cryoclass version; finish "
                    "that run with that version, or delete the file to start over",
                    file=self.path.parent / name,
                )
        return False

    def save(self, model: ModelState | None, state: dict[str, Any], finished: bool = False) -> None:
        """Write the checkpoint atomically (an OutputError names the file; the previous one is
        intact)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "job": self.job,
            "config": self.config.model_dump(),
            "inputs": self.inputs,
            "model": None if model is None else model.to_dict(),
            "finished": finished,
            "state": state,
        }
        with atomic_write(self.path, "wb", encoding=None) as fh:
            torch.save(payload, fh)

    def read(self, device: torch.device | str = "cpu") -> Checkpoint:
        """The checkpoint as it is; :class:`InputError` if it cannot be read or is another kind
        of job's."""
        ck = read_checkpoint(self.path, device)
        if ck.job != self.job:
            raise InputError(
                f"holds a {ck.job} run, not a {self.job} run; use a new output folder",
                file=self.path,
            )
        return ck

    def load(self, device: torch.device | str = "cpu") -> Checkpoint:
        """The checkpoint to continue from; :class:`InputError` if it belongs to other settings
        (``Config.changes_from``) or other particles."""
        ck = self.read(device)
        diff = self.config.changes_from(Config(**ck.config))
        if diff:
            raise InputError(
                f"holds a {self.job} run with different settings "
                f"({', '.join(diff)}); resume with the same settings, or use a new "
                "output folder",
                file=self.path,
            )
        if self.inputs is not None and ck.inputs != self.inputs:
            raise InputError(
                "holds a run on other particles (the input file, its images or the "
                "particles set aside changed); use a new output folder",
                file=self.path,
            )
        return ck


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """The checkpoint at ``path``, its model on ``device`` (the rest stays on the CPU);
    :class:`InputError` if it cannot be read or is not of this cryoclass version."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a foreign or damaged file: say so, never a traceback
        raise InputError(
            f"cannot read the checkpoint ({type(err).__name__}: {err}); delete it to start over",
            file=path,
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise InputError(
            "not a checkpoint of this cryoclass version; delete it to start over", file=path
        )
    model = payload["model"]
    return Checkpoint(
        job=payload["job"],
        config=payload["config"],
        model=None
        if model is None
        else ModelState.from_dict(_to_device(model, torch.device(device))),
        state=payload["state"],
        inputs=payload["inputs"],
        finished=bool(payload["finished"]),
    )


def _to_device(x: Any, device: torch.device) -> Any:
    """``x`` with every tensor in it on ``device`` (checkpoints are loaded on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x
