"""The dashboard's view of one job folder: everything the page shows, as one JSON-able state.

Sources: ``model.star`` + ``classes.mrcs`` (classes, once a write is complete), ``events.jsonl``
(progress, history and class distribution of batch and streaming jobs alike, one format:
``cryoclass.outputs.events``), ``checkpoint.pt`` (the classes of a batch job still running),
``rejects.csv`` (reasons for particles set aside), ``config.json`` (parameters), the watched
folder (particles found, when known). A rewrite in progress is never shown half-done: the last
complete classes stay on the page until the next complete ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryoclass.dashboard.events_tail import EventTail
from cryoclass.dashboard.found import FoundCounter
from cryoclass.dashboard.images import to_png
from cryoclass.dashboard.jobfiles import outputs_settled, stamp, version
from cryoclass.dashboard.marks import BAD, GOOD, Marks
from cryoclass.io import InputError
from cryoclass.io.lock import last_job
from cryoclass.io.rejects import reason_kind
from cryoclass.job_options import JOB
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME, read_checkpoint
from cryoclass.outputs.events import EVENTS_NAME
from cryoclass.outputs.selection import (
    JobClasses,
    OutputsChanging,
    export_selection,
    read_job_classes,
)

#: Most points per plotted series (older points are thinned, the latest always kept).
MAX_POINTS = 300
#: Window (s) of the recent throughput.
RECENT_S = 60.0


@dataclass
class ClassesView:
    """Classes shown: key (changes with the images), counts (K,), resolution_A (K,) Å, images
    (K, D, D), order (K,) model index of each shown class (checkpoint view) or None,
    source 'outputs' or 'checkpoint'."""

    key: str
    classes: JobClasses
    source: str
    order: np.ndarray | None = None


class Dashboard:
    """State of the job in ``job_dir``; ``watch_dir``: the folder a stream watches (found)."""

    def __init__(
        self, job_dir: str | Path, watch_dir: str | Path | None = None, pattern: str = JOB.pattern
    ) -> None:
        self.job = Path(job_dir).resolve()
        self.events = EventTail(self.job / EVENTS_NAME)
        self.found = (
            FoundCounter(Path(watch_dir), pattern, exclude=[self.job])
            if watch_dir is not None
            else None
        )
        self.marks = Marks(self.job)
        self.view: ClassesView | None = None
        self.last_export: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._state: dict[str, Any] | None = None
        self._state_key = ""
        self._pngs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._views: OrderedDict[str, np.ndarray] = OrderedDict()
        self._rejects: tuple[Any, list[list[Any]]] = (None, [])
        self._checkpoint_config: dict[str, Any] = {}
        self._exports = 0

    def _kind(self) -> str:
        """'batch' or 'stream': the job its events name, else (before the first event) the job
        that locked the folder."""
        events = self.events.refresh()
        if events:
            return str(events[-1].get("job", "stream"))
        return "stream" if last_job(self.job) == "stream" else "batch"

    # ------------------------------------------------------------------ versions
    def version(self) -> str:
        """Changes whenever the page should refresh."""
        found = self.found.count() if self.found is not None else -1
        return version(self.job, f"m{self.marks.revision};f{found};x{self._exports}")

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The page's whole state (see the module docstring)."""
        with self._lock:
            key = self.version()
            if self._state is not None and key == self._state_key:
                return self._state
            self._refresh_classes()
            key = self.version()  # marks may have followed the new classes
            events = self.events.refresh()
            kind = self._kind()
            state = {
                "version": key,
                "job": self.job.name,
                "path": str(self.job),
                "kind": kind,
                "classes": self._classes_state(),
                "selection": self._selection_state(),
                "progress": self._progress(events),
                "history": self._history(events, kind),
                "distribution": self._distribution(events),
                "params": self._config(),
                "time": time.time(),
            }
            self._state, self._state_key = state, key
            return state

    def class_png(self, key: str, number: int) -> bytes | None:
        """PNG of class ``number`` (1-based, as shown) of classes version ``key``."""
        with self._lock:
            hit = self._pngs.get((key, number))
            if hit is not None:
                return hit
            images = self._views.get(key)
            if images is None or not 1 <= number <= images.shape[0]:
                return None
            png = to_png(images[number - 1])
            self._pngs[(key, number)] = png
            while len(self._pngs) > 4 * max(images.shape[0], 50):
                self._pngs.popitem(last=False)
            return png

    # ------------------------------------------------------------------ selection
    def set_mark(self, number: int, mark: str | None) -> None:
        with self._lock:
            self._require_selectable()
            self.marks.set(number, mark)

    def auto_select(self, min_count: int, max_res_A: float | None) -> list[int]:
        with self._lock:
            self._require_selectable()
            return self.marks.auto(min_count, max_res_A)

    def clear_marks(self) -> None:
        with self._lock:
            self._require_selectable()
            self.marks.clear()

    def export(self, attempts: int = 5) -> dict[str, Any]:
        """Write the good classes' particles (STAR and .cs) of the current outputs."""
        for _ in range(attempts):
            with self._lock:
                self._refresh_classes()
                self._require_selectable()
                good = self.marks.numbers(GOOD)
                if not good:
                    raise ValueError("no class is marked good")
                counts = self.view.classes.counts.copy()
            try:
                res = export_selection(self.job, good, expected_counts=counts)
            except OutputsChanging:
                time.sleep(0.3)  # the job moved on: follow its new classes, then try again
                continue
            with self._lock:
                self.last_export = {
                    "classes": res.classes,
                    "n_particles": res.n_particles,
                    "star": res.star.name,
                    "cs": res.cs.name if res.cs is not None else None,
                    "time": time.time(),
                }
                self._exports += 1
                return self.last_export
        raise OutputsChanging("the job kept rewriting its outputs; try again")

    def _require_selectable(self) -> None:
        self._refresh_classes()
        if self.view is None or self.view.source != "outputs":
            raise ValueError("classes can be selected once the job has written particles.star")

    # ------------------------------------------------------------------ classes
    def _refresh_classes(self) -> None:
        """Read the classes if they changed and a complete version is on disk: the outputs, or
        the checkpoint of a batch job when it is newer (a batch job writes its outputs once, at
        the end; a stream after its updates)."""
        ck, ms = stamp(self.job / CHECKPOINT_NAME), stamp(self.job / "model.star")
        if ck is not None and (ms is None or ck[0] > ms[0]) and self._kind() == "batch":
            key = f"c{ck[0]}-{ck[1]}"
            if self.view is None or self.view.key != key:
                self._read_checkpoint_view(key)
            return
        if ms is None or not outputs_settled(self.job):
            return
        key = f"o{stamp(self.job / 'classes.mrcs')}{ms}"
        if self.view is not None and self.view.key == key:
            return
        try:
            classes = read_job_classes(self.job)
        except (OutputsChanging, ValueError, OSError, KeyError):
            return  # keep showing the last complete classes
        except Exception:  # noqa: BLE001 - e.g. InputError from a file replaced mid-read
            return
        self._set_view(ClassesView(key=_short(key), classes=classes, source="outputs"))
        self.marks.follow(classes)

    def _read_checkpoint_view(self, key: str) -> None:
        """The model's classes, counts approximated from its class weights and the distinct
        particles seen."""
        try:
            ck = read_checkpoint(self.job / CHECKPOINT_NAME)
        except InputError:  # half visible while replaced, or foreign: not shown
            return
        m = ck.model
        if m is None:
            return
        weights = m.class_weights.detach().cpu().numpy().astype(np.float64)
        total_w = weights.sum()
        frac = weights / total_w if total_w > 0 else np.zeros_like(weights)
        order = np.argsort(-frac, kind="stable")
        classes = JobClasses(
            counts=np.rint(frac[order] * m.distinct_seen).astype(np.int64),
            resolution_A=m.resolution_A.detach().cpu().numpy()[order],
            images=m.class_images.detach().cpu().numpy()[order],
            pixel_size_A=float(m.pixel_size_A),
        )
        self._checkpoint_config = dict(ck.config)
        self._set_view(
            ClassesView(key=_short(key), classes=classes, source="checkpoint", order=order)
        )

    def _set_view(self, view: ClassesView) -> None:
        self.view = view
        self._views[view.key] = view.classes.images
        while len(self._views) > 3:
            self._views.popitem(last=False)

    def _classes_state(self) -> dict[str, Any]:
        v = self.view
        if v is None:
            return {"key": None, "source": None, "items": [], "total": 0}
        c = v.classes
        total = int(c.counts.sum())
        items = []
        for i in range(c.counts.size):
            n = i + 1
            items.append(
                {
                    "number": n,
                    "track": int(self.marks.tracks[i])
                    if v.source == "outputs" and i < self.marks.tracks.size
                    else -1 - i,
                    "count": int(c.counts[i]),
                    "fraction": float(c.counts[i] / total) if total else 0.0,
                    "res_A": _num(c.resolution_A[i]),
                    "mark": self.marks.mark_of(n) if v.source == "outputs" else None,
                    "image": f"api/class/{v.key}/{n}.png",
                }
            )
        items.sort(key=lambda it: (-it["count"], it["number"]))
        return {
            "key": v.key,
            "source": v.source,
            "items": items,
            "total": total,
            "box": int(c.images.shape[-1]) if c.images is not None else 0,
            "pixel_size_A": c.pixel_size_A,
        }

    def _selection_state(self) -> dict[str, Any]:
        enabled = self.view is not None and self.view.source == "outputs"
        good = self.marks.numbers(GOOD) if enabled else []
        bad = self.marks.numbers(BAD) if enabled else []
        counts = self.view.classes.counts if enabled else np.zeros(0)
        return {
            "enabled": enabled,
            "good": good,
            "bad": bad,
            "n_good_particles": int(sum(counts[n - 1] for n in good)),
            "last_export": self.last_export,
        }

    # ------------------------------------------------------------------ progress
    def _progress(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        last = events[-1] if events else {}
        if not events and self.view is not None:  # outputs come before their first event
            n = int(self.view.classes.counts.sum())
            last = {"n_ingested": n, "n_processed": n}
        ingested = int(last.get("n_ingested", 0))
        rejected = int(last.get("n_rejected", 0))
        reasons = self._reject_reasons()
        found = self.found.count() if self.found is not None else None
        lat = next((e["latency_s"] for e in reversed(events) if e.get("latency_s")), None)
        updates = [e for e in events if e.get("n_new") is not None]
        return {
            "found": max(found, ingested + rejected) if found is not None else ingested + rejected,
            "found_from": "watched folder" if found is not None else "ingested + set aside",
            "ingested": ingested,
            "classified": int(last.get("n_processed", 0)),
            # rejects.csv is rewritten with the outputs, the events at every commit
            "set_aside": max(rejected, sum(n for _, n in reasons)),
            "set_aside_reasons": reasons,
            "throughput_per_s": _rate(events, "n_processed", None),
            "throughput_recent_per_s": _rate(events, "n_processed", RECENT_S),
            "ingest_per_s": _rate(events, "n_ingested", None),
            "latency_s": lat,
            "updates": int(last.get("update", 0)),
            "step": int(last.get("update", 0)),
            "total_steps": last.get("steps"),
            "phase": last.get("event"),
            "policy": last.get("policy"),
            "first_event_time": events[0].get("time") if events else None,
            "last_event_time": last.get("time"),
            "finished": last.get("event") == "finish",
            "n_update_events": len(updates),
        }

    def _reject_reasons(self) -> list[list[Any]]:
        """[[reason kind, particles], ...] from rejects.csv, commonest first."""
        path = self.job / "rejects.csv"
        st = stamp(path)
        if st == self._rejects[0]:
            return self._rejects[1]
        kinds: Counter[str] = Counter()
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                for rec in csv.DictReader(fh):
                    kinds[reason_kind(rec.get("reason", ""))] += 1
        except OSError:
            pass
        out = [[k, n] for k, n in kinds.most_common()]
        self._rejects = (st, out)
        return out

    # ------------------------------------------------------------------ history
    def _history(self, events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        """The updates (a batch job's iterations) as plotted series."""
        ups = [e for e in events if e.get("mean_loglik") is not None]
        ups = _thin(ups)
        t0 = events[0]["time"] if events else 0.0
        return {
            "x_label": "iteration" if kind == "batch" else "update",
            "x": [e.get("update") for e in ups],
            "time_s": [round(e.get("time", t0) - t0, 2) for e in ups],
            "phase": [e.get("event") for e in ups],
            "mean_loglik": [_num(e.get("mean_loglik")) for e in ups],
            "class_changes": [_num(e.get("class_changes")) for e in ups],
            "temperature": [_num(e.get("temperature")) for e in ups],
            "work_res_A": [_num(e.get("work_res_A")) for e in ups],
            "n_processed": [e.get("n_processed") for e in ups],
            "latency_mean_s": [_num((e.get("latency_s") or {}).get("mean")) for e in ups],
        }

    # ------------------------------------------------------------------ distribution
    def _distribution(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Class fractions over time, in model order, labelled with the output number each class
        has now (outputs are sorted by particle count, ties in model order)."""
        pts = [e for e in events if e.get("class_counts")]
        if not pts:
            return {"t": [], "series": [], "labels": []}
        pts = _thin(pts)
        t0 = events[0]["time"]
        k = max(len(e["class_counts"]) for e in pts)
        frac = np.zeros((len(pts), k))
        for i, e in enumerate(pts):
            c = np.asarray(e["class_counts"], np.float64)
            frac[i, : c.size] = c / c.sum() if c.sum() > 0 else 0.0
        latest = np.asarray(pts[-1]["class_counts"], np.float64)
        rank = np.empty(latest.size, dtype=np.int64)
        rank[np.argsort(-latest, kind="stable")] = np.arange(latest.size)
        return {
            "t": [round(e["time"] - t0, 2) for e in pts],
            "labels": [int(r) + 1 for r in rank],
            "series": [[round(float(x), 4) for x in frac[:, j]] for j in range(frac.shape[1])],
        }

    # ------------------------------------------------------------------ parameters
    def _config(self) -> dict[str, Any]:
        p = self.job / "config.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        v = self.view
        return dict(self._checkpoint_config) if v is not None and v.source == "checkpoint" else {}


def _rate(events: list[dict[str, Any]], field: str, window_s: float | None) -> float | None:
    """Particles per second of ``field`` over the events (the last window_s s, or all)."""
    if len(events) < 2:
        return None
    last = events[-1]
    first = events[0]
    if window_s is not None:
        for e in events:
            if last["time"] - e["time"] <= window_s:
                first = e
                break
    dt = last["time"] - first["time"]
    if dt <= 0:
        return None
    return round((last.get(field, 0) - first.get(field, 0)) / dt, 2)


def _thin(items: list, n: int = MAX_POINTS) -> list:
    """At most n items, evenly spaced, the last one kept."""
    if len(items) <= n:
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def _num(x: Any) -> float | None:
    """A float for JSON (NaN/Inf -> None)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _short(key: str) -> str:
    return hashlib.blake2s(key.encode(), digest_size=6).hexdigest()
