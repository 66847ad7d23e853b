"""The classes a user marked good or bad, kept on the same classes while a live job renumbers
them: each class carries a track id, handed on by image matching at every new output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoclass.outputs.class_match import match_classes
from cryoclass.outputs.selection import JobClasses, auto_select, load_selection, save_selection

GOOD, BAD = "good", "bad"


class Marks:
    """Marks by track id for the job in ``job_dir`` (saved there, see ``outputs.selection``)."""

    def __init__(self, job_dir: Path) -> None:
        self.job = job_dir
        self.tracks = np.zeros(0, dtype=np.int64)  # (K,) track id of output class k+1
        self.marks: dict[int, str] = {}
        self.classes: JobClasses | None = None
        self.revision = 0
        self._next = 0

    def follow(self, classes: JobClasses) -> None:
        """New output classes: hand the track ids on (first call: restore the saved marks)."""
        k = classes.counts.size
        first = self.classes is None
        tracks = np.full(k, -1, dtype=np.int64)
        if not first and self.classes.images is not None and classes.images is not None:
            where = match_classes(self.classes.images, classes.images)
            for old, new in enumerate(where):
                if new >= 0:
                    tracks[new] = self.tracks[old]
        for i in np.flatnonzero(tracks < 0):
            tracks[i] = self._next
            self._next += 1
        self.tracks, self.classes = tracks, classes
        if first:
            saved = _load(self.job, classes)
            if saved is not None:
                for n in saved[0]:
                    self.marks[int(tracks[n - 1])] = GOOD
                for n in saved[1]:
                    self.marks[int(tracks[n - 1])] = BAD
        elif self.marks:
            self.save()
        self.revision += 1

    def mark_of(self, number: int) -> str | None:
        """'good', 'bad' or None for output class ``number`` (1-based)."""
        return self.marks.get(int(self.tracks[number - 1]))

    def numbers(self, mark: str) -> list[int]:
        """Output class numbers (1-based) with ``mark``."""
        return [i + 1 for i, t in enumerate(self.tracks) if self.marks.get(int(t)) == mark]

    def set(self, number: int, mark: str | None) -> None:
        """Mark output class ``number`` good, bad or (None) unmarked."""
        if not 1 <= number <= self.tracks.size:
            raise ValueError(f"no class {number} (classes 1..{self.tracks.size})")
        if mark not in (GOOD, BAD, None):
            raise ValueError(f"mark must be 'good', 'bad' or null, not {mark!r}")
        t = int(self.tracks[number - 1])
        if mark is None:
            self.marks.pop(t, None)
        else:
            self.marks[t] = mark
        self._changed()

    def auto(self, min_count: int, max_res_A: float | None) -> list[int]:
        """Mark the classes passing the thresholds good and the others bad; returns the good."""
        good = set(auto_select(self.classes, min_count, max_res_A))
        for i, t in enumerate(self.tracks):
            self.marks[int(t)] = GOOD if i + 1 in good else BAD
        self._changed()
        return sorted(good)

    def clear(self) -> None:
        self.marks.clear()
        self._changed()

    def save(self) -> None:
        if self.classes is not None and self.classes.images is not None:
            save_selection(self.job, self.numbers(GOOD), self.numbers(BAD), self.classes)

    def _changed(self) -> None:
        self.save()
        self.revision += 1


def _load(job: Path, classes: JobClasses) -> tuple[list[int], list[int]] | None:
    try:
        return load_selection(job, classes)
    except Exception:  # noqa: BLE001 - a damaged saved selection must not stop the page
        return None
