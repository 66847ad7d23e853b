"""Is every output a whole file? Parse each one fully with the reader its users have (mrcfile,
starfile, cryosparc-tools, csv, json, matplotlib, torch); and a thread that keeps doing so while a
job writes them, to prove a reader never meets a half-written file."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import matplotlib.image
import mrcfile
import starfile
import torch
from cryosparc.dataset import Dataset

from cryoclass.io import read_rejects
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME


def _mrcs(p: Path) -> None:
    with mrcfile.open(p, permissive=False) as m:
        assert m.data is not None and m.data.ndim == 3


def _star(p: Path) -> None:
    blocks = starfile.read(p, always_dict=True)
    assert blocks, "no data blocks"
    if p.name == "particles.star":
        assert len(blocks["particles"]) > 0 and "rlnClassNumber" in blocks["particles"]


def _events(p: Path) -> None:
    lines = p.read_bytes().split(b"\n")
    for line in lines[:-1]:  # only the last line may be partial (a kill mid-append)
        json.loads(line)


READERS = {
    "classes.mrcs": _mrcs,
    "particles.star": _star,
    "model.star": _star,
    "particles.cs": lambda p: Dataset.load(p),
    "rejects.csv": lambda p: read_rejects(p),
    "config.json": lambda p: json.loads(p.read_text()),
    "gallery.png": lambda p: matplotlib.image.imread(p),
    "events.jsonl": _events,
    CHECKPOINT_NAME: lambda p: torch.load(p, map_location="cpu", weights_only=False),
}


def broken_outputs(out: Path) -> list[str]:
    """``name: problem`` for each output in ``out`` that does not parse as a whole file."""
    bad = []
    for name, read in READERS.items():
        p = out / name
        try:
            read(p)
        except FileNotFoundError:
            continue
        except Exception as err:  # any failure to parse is a half-written file
            if p.exists():  # replaced between the check and the read: not a broken file
                bad.append(f"{name}: {type(err).__name__}: {err}")
    return bad


class Watcher(threading.Thread):
    """Reads every output of ``out`` again and again until stopped; records what did not parse
    and how many whole reads it made."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.problems: list[str] = []
        self.reads = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            if self.out.is_dir():
                self.problems += broken_outputs(self.out)
                self.reads += 1
            time.sleep(0.01)

    def stop(self) -> "Watcher":
        self._stop_event.set()
        self.join(timeout=30)
        return self
