"""Streaming 2D classification: particles arrive over time, class averages stay up to date.

``Stream(config, out_dir)`` owns one output folder. Particles come in through
:meth:`Stream.ingest` (canonical table rows, e.g. from ``FolderWatcher.poll``) or
:meth:`Stream.add_particles` (a ``ParticleSet``, or images + table); :meth:`Stream.update` runs the
updates the policy (``config.stream_policy``) asks for, :meth:`Stream.finish` ends the stream with
the batch schedule's full passes. After every update the stream commits: one atomic checkpoint
(model, ledger, assignments, counters: ``checkpoint.py``), then the batch outputs
(``write_results``, each file atomic), then one line of ``events.jsonl``. Constructing a Stream on
a folder with a checkpoint resumes it: every committed particle is kept, none is counted twice,
and particles ingested after the last commit are ingested again by their source.

One job per output folder, batch or stream (``cryoclass.io.lock`` enforces it).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoclass.config import Config
from cryoclass.engine.device import pick_device
from cryoclass.engine.em import Engine, ParticleResult
from cryoclass.engine.executor import EStepExecutor, LocalEStep
from cryoclass.engine.model import ModelState
from cryoclass.engine.poses import working_steps
from cryoclass.io import InputError, OutputError, ParticleSet, Reject, write_stack
from cryoclass.io.canonical import canonicalize
from cryoclass.io.columns import SOURCE_ROW, STACK_INDEX, STACK_PATH
from cryoclass.io.rejects import now_utc, reason_kind
from cryoclass.io.stacks import stack_info
from cryoclass.io.validate import unusable_images
from cryoclass.io.limits import check_resolution
from cryoclass.io.lock import lock_folder, make_output_folder
from cryoclass.outputs.checkpoint import JobCheckpoint
from cryoclass.outputs.events import EVENTS_NAME, EventLog
from cryoclass.outputs.results import write_results
from cryoclass.stream.context import StreamContext, UpdateReport
from cryoclass.stream.live import LivePolicy
from cryoclass.stream.online import OnlinePolicy
from cryoclass.stream.passes import final_pass, n_final_passes
from cryoclass.stream.pool import ARRIVAL, KEY, SOURCE_FILE, ParticlePool, particle_keys
from cryoclass.stream.records import ParticleRecords
from cryoclass.stream.geometry import first_geometry

log = logging.getLogger("cryoclass.stream")

#: Folder in out_dir of the stacks ``add_particles`` writes images into.
API_STACKS = "stream_stacks"


def make_policy(config: Config) -> OnlinePolicy | LivePolicy:
    """The schedule named by config.stream_policy."""
    return {"online": OnlinePolicy, "live": LivePolicy}[config.stream_policy](config)


@dataclass
class StreamResult:
    """Model and latest per-particle results (index = rows of ``table``, processed only)."""

    state: ModelState | None
    particles: ParticleResult
    table: pd.DataFrame
    rejects: list[Reject]
    history: list[dict]


class Stream:
    """A streaming classification job writing into ``out_dir`` (see module docstring).

    outputs_every_s: rewrite the outputs at most this often (s; 0 = after every update; they are
    always written at the end). on_update(stream, report): called after each committed update.
    estep: where E-steps run (``engine.executor``; default here, e.g.
    ``cryoclass.distributed.DaskEStep`` for a Dask cluster; results are the same).
    """

    def __init__(self, config: Config, out_dir: str | Path, outputs_every_s: float = 0.0,
                 on_update: Callable[["Stream", UpdateReport], None] | None = None,
                 estep: EStepExecutor | None = None) -> None:
        self.config = config
        self.estep = estep if estep is not None else LocalEStep()
        self.on_update = on_update
        self.out = make_output_folder(out_dir)
        self.outputs_every_s = float(outputs_every_s)
        self._lock_fd = lock_folder(self.out, "stream")
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        """Fresh state, then the checkpoint's if the folder holds one."""
        config = self.config
        _remove_stale_temporaries(self.out)
        self.device = pick_device(config.device)
        self.policy = make_policy(config)
        self.checkpoint = JobCheckpoint(self.out, "stream", config)
        self.ctx = StreamContext(config, None, ParticlePool(),
                                 ParticleRecords.empty(config.n_classes),
                                 np.random.default_rng([config.seed, 7]), estep=self.estep)
        self.rejects: list[Reject] = []
        self.history: list[dict] = []
        self.events = EventLog(self.out / EVENTS_NAME).open()
        self.seq = self.events.last_seq
        self.api_chunks = 0
        self.final_done = 0
        self.finished = False
        self._ingested_since_commit = 0
        self._last_outputs = 0.0
        self._outputs_stale = False
        self.n_duplicates = 0
        self.resumed = self._resume()

    # ------------------------------------------------------------------ properties
    @property
    def pool(self) -> ParticlePool:
        return self.ctx.pool

    @property
    def engine(self) -> Engine | None:
        return self.ctx.engine

    @property
    def state(self) -> ModelState | None:
        return self.ctx.engine.state if self.ctx.engine is not None else None

    @property
    def n_ingested(self) -> int:
        return len(self.ctx.pool)

    @property
    def n_processed(self) -> int:
        self.ctx.records.grow(len(self.ctx.pool))
        return int(self.ctx.records.processed.size)

    @property
    def n_updates(self) -> int:
        return self.ctx.updates

    @property
    def uncommitted(self) -> bool:
        """True if particles were ingested or withdrawn since the last commit."""
        return self._ingested_since_commit > 0

    def known(self, keys: np.ndarray) -> np.ndarray:
        """(n,) bool: keys already ingested or rejected (the ledger)."""
        return self.ctx.pool.known(keys)

    # ------------------------------------------------------------------ ingestion
    def ingest(self, table: pd.DataFrame, arrival_s: np.ndarray | float | None = None,
               source: str = "") -> int:
        """Add canonical particle rows (``read_particles`` columns incl. ``_stack_path`` and
        ``_stack_index``; optional ``_stream_key``, ``_arrival_s``). Rows already in the ledger
        are skipped; rows with a different box or pixel size, or an unusable image (NaN/Inf,
        constant), are set aside in rejects. Nothing is processed until :meth:`update`; nothing
        is persistent until the next commit. Returns the number of new particles."""
        if table is None or not len(table):
            return 0
        t = table.reset_index(drop=True).copy()
        if KEY not in t.columns:
            t[KEY] = particle_keys(t)
        t = t.loc[~self.known(t[KEY].to_numpy(dtype=object))].reset_index(drop=True)
        t = self._set_aside_repeats(t, source)
        if not len(t):
            return 0
        if arrival_s is None:
            arrival = (t[ARRIVAL].to_numpy(np.float64) if ARRIVAL in t.columns
                       else np.full(len(t), time.time()))
        else:
            arrival = np.broadcast_to(np.asarray(arrival_s, np.float64), (len(t),))
        if not self.ctx.pool.has_geometry:
            box, apix = first_geometry(t)
            check_resolution(self.config, box, apix, source=_first_source(t, source))
            self.ctx.pool.set_geometry(box, apix)
        ok = self._check_rows(t, source)
        t, arrival = t.loc[ok].reset_index(drop=True), arrival[ok]
        if not len(t):
            return 0
        new = self.ctx.pool.add(t, arrival)
        self.ctx.records.grow(len(self.ctx.pool))
        if self.ctx.engine is None:
            self._make_engine()
        self._ingested_since_commit += int(new.size)
        if new.size and (self.finished or self.final_done):
            self.finished, self.final_done = False, 0
        return int(new.size)

    def add_particles(self, particles: ParticleSet | np.ndarray, table: pd.DataFrame | None = None,
                      *, pixel_size_A: float | None = None, arrival_s: float | None = None,
                      update: bool = True) -> int:
        """Python API: add particles and (by default) run the updates they make due, committing
        after each. Returns the number of new particles (already-known ones are skipped).

        particles: a ``ParticleSet`` (images stay in their stacks; ledger key = stack path +
        index), or float (n, D, D) images with ``table`` (n rows, RELION columns: CTF in Å/deg,
        rlnVoltage kV, rlnSphericalAberration mm, rlnAmplitudeContrast, rlnImagePixelSize Å or
        ``pixel_size_A``). Images are stored under out_dir/stream_stacks/ so the stream can
        revisit and resume; their ledger key is the table's rlnImageName when it has one (adding
        the same named particles again is a no-op), else the stored stack + index.
        """
        if isinstance(particles, ParticleSet):
            rows = particles.table
            source = str(particles.source or "api")
        else:
            if table is None:
                raise ValueError("images need a table of per-particle metadata")
            rows = self._store_images(np.asarray(particles), table, pixel_size_A)
            source = "api"
        n = self.ingest(rows, arrival_s, source=source)
        if update:
            if not self.update() and (n or self._ingested_since_commit):
                self.commit(None)
        return n

    def _store_images(self, images: np.ndarray, table: pd.DataFrame,
                      pixel_size_A: float | None) -> pd.DataFrame:
        """Write new images to a stack of ours; canonical rows pointing at it."""
        if images.ndim != 3 or images.shape[0] != len(table):
            raise ValueError(f"images must be (n, D, D) with n = {len(table)} table rows, got "
                             f"{images.shape}")
        raw = table.reset_index(drop=True).copy()
        name = f"{API_STACKS}/api_{self.api_chunks + 1:06d}.mrcs"
        if "rlnImageName" in raw.columns:
            keys = ("api:" + raw["rlnImageName"].astype(str)).to_numpy(dtype=object)
            raw["rlnImageOriginalName"] = raw["rlnImageName"].astype(str)
        else:
            keys = np.array([f"api:{name}@{i}" for i in range(len(raw))], dtype=object)
        fresh = ~self.known(keys)
        raw, images, keys = raw.loc[fresh].reset_index(drop=True), images[fresh], keys[fresh]
        if not len(raw):
            return raw
        if pixel_size_A is not None:
            raw["rlnImagePixelSize"] = float(pixel_size_A)
        apix = float(raw["rlnImagePixelSize"].iloc[0]) if "rlnImagePixelSize" in raw else None
        if apix is None:
            raise ValueError("pixel size unknown: give pixel_size_A or rlnImagePixelSize")
        (self.out / API_STACKS).mkdir(exist_ok=True)
        write_stack(self.out / name, images.astype(np.float32), apix)
        self.api_chunks += 1
        raw["rlnImageName"] = [f"{i + 1:06d}@{name}" for i in range(len(raw))]
        raw["rlnImageSize"] = images.shape[-1]
        t = canonicalize(self.out / name, raw, bases=[self.out], relion30=False,
                         check_images=True)
        t[KEY] = keys
        return t

    def _set_aside_repeats(self, t: pd.DataFrame, source: str) -> pd.DataFrame:
        """Rows naming an image already named by an earlier row of t: the first is kept, the
        others go to rejects (a particle listed twice is reported, never dropped silently)."""
        dup = t[KEY].duplicated().to_numpy()
        for i in np.flatnonzero(dup):
            row = int(t[SOURCE_ROW].iloc[i]) if SOURCE_ROW in t.columns else int(i)
            src = str(t[SOURCE_FILE].iloc[i]) if SOURCE_FILE in t.columns else source
            self._set_aside(Reject(source=src, row=row, image_name=str(t["rlnImageName"].iloc[i]),
                                   reason="listed twice: the same image as an earlier row"))
        return t.loc[~dup].reset_index(drop=True)

    def _check_rows(self, t: pd.DataFrame, source: str) -> np.ndarray:
        """(n,) bool rows to keep; the others become rejects (and ledger entries)."""
        box, apix = self.ctx.pool.box, self.ctx.pool.pixel_size_A
        ok = np.ones(len(t), dtype=bool)
        reasons = [""] * len(t)
        sizes = t["rlnImageSize"].to_numpy(np.int64)
        pix = t["rlnImagePixelSize"].to_numpy(np.float64)
        for i in np.flatnonzero((sizes > 0) & (sizes != box)):
            ok[i], reasons[i] = False, f"box {sizes[i]} px differs from the stream's {box} px"
        for i in np.flatnonzero(~np.isclose(pix, apix, rtol=1e-5, atol=0)):
            ok[i], reasons[i] = False, (f"pixel size {pix[i]:g} Å differs from the stream's "
                                        f"{apix:g} Å")
        cand = np.flatnonzero(ok)
        if cand.size:
            try:
                imgs = ParticleSet(table=t).images(cand)
            except Exception as err:  # unreadable: reject them all, say why
                for i in cand:
                    ok[i], reasons[i] = False, f"cannot read image: {err}"
            else:
                if imgs.shape[-1] != box:
                    for i in cand:
                        ok[i], reasons[i] = False, (f"box {imgs.shape[-1]} px differs from "
                                                    f"the stream's {box} px")
                    cand, imgs = cand[:0], imgs[:0]
                for j, what in unusable_images(imgs, with_value=False):
                    ok[cand[j]], reasons[cand[j]] = False, f"image {what}"
        if not ok.all():
            bad = np.flatnonzero(~ok)
            self.ctx.pool.mark_rejected(t[KEY].to_numpy(dtype=object)[bad])
            for i in bad:
                row = int(t[SOURCE_ROW].iloc[i]) if SOURCE_ROW in t.columns else int(i)
                src = str(t[SOURCE_FILE].iloc[i]) if SOURCE_FILE in t.columns else source
                self._set_aside(Reject(source=src, row=row,
                                       image_name=str(t["rlnImageName"].iloc[i]),
                                       reason=reasons[i]))
        return ok

    def reject_keys(self, keys: dict[str, str | Reject], source: str = "") -> None:
        """Set aside particles that will never be ingested (key -> reason, or key -> Reject
        naming file, row and reason), e.g. rows whose stack never became complete before the end
        of the stream, or rows with an absurd CTF value. Keys already in the ledger are skipped."""
        fresh = [k for k in keys if not self.known(np.array([k], dtype=object))[0]]
        self.ctx.pool.mark_rejected(np.array(fresh, dtype=object))
        for k in fresh:
            self._set_aside(keys[k] if isinstance(keys[k], Reject) else
                            Reject(source=source, row=-1, image_name=k, reason=keys[k]))

    def set_aside_rows(self, rows: pd.DataFrame, reasons: dict[str, str], prefix: str = ""
                       ) -> int:
        """Set aside found rows that were never ingested (e.g. whose stack never became
        complete), each with its STAR file, row and ``prefix + reasons[key]``. Returns how many
        were new to the ledger."""
        if rows is None or not len(rows):
            return 0
        keys = rows[KEY].to_numpy(dtype=object)
        fresh = ~self.known(keys)
        out = {}
        for i in np.flatnonzero(fresh):
            k = str(keys[i])
            out[k] = Reject(source=str(rows[SOURCE_FILE].iloc[i]) if SOURCE_FILE in rows else "",
                            row=int(rows[SOURCE_ROW].iloc[i]) if SOURCE_ROW in rows else -1,
                            image_name=str(rows["rlnImageName"].iloc[i]),
                            reason=prefix + reasons.get(k, "unknown"))
        self.reject_keys(out)
        return len(out)

    def _set_aside(self, reject: Reject) -> None:
        """Add a reject, stamped with the time it was set aside."""
        if not reject.time:
            reject.time = now_utc()
        self.rejects.append(reject)

    # ------------------------------------------------------------------ accounting
    def accounting(self, waiting: int = 0) -> dict[str, int]:
        """Every particle found, in exactly one place: ``classified`` (in particles.star),
        ``set_aside`` (in rejects.csv: the stream's rejects and duplicate picks), ``waiting``
        (ingested, not yet processed, + ``waiting`` found rows not ingested yet); ``found`` is
        their sum; ``files``: whole files set aside (rejects.csv rows with row -1)."""
        files = sum(1 for r in self.rejects if r.row < 0 and r.image_name == "")
        rejected = len(self.rejects) - files
        classified = self.n_processed - self.n_duplicates
        pending = self.n_ingested - self.n_processed
        c = {"classified": classified, "set_aside": rejected + self.n_duplicates,
             "waiting": pending + int(waiting), "files": files}
        c["found"] = c["classified"] + c["set_aside"] + c["waiting"]
        return c

    def set_aside_reasons(self) -> list[tuple[str, int]]:
        """(reason kind, particles) of the stream's rejects, commonest first."""
        kinds = Counter(reason_kind(r.reason) for r in self.rejects
                        if not (r.row < 0 and r.image_name == ""))
        if self.n_duplicates:
            kinds["duplicate pick"] += self.n_duplicates
        return kinds.most_common()

    # ------------------------------------------------------------------ updates
    def update(self, max_updates: int | None = None, finishing: bool = False
               ) -> list[UpdateReport]:
        """Run the updates the policy finds due now, committing after each."""
        done: list[UpdateReport] = []
        while self.ctx.engine is not None and self.policy.due(self.ctx, finishing):
            if max_updates is not None and len(done) >= max_updates:
                break
            rep = self._guarded(lambda: self.policy.step(self.ctx))
            if rep is None:
                continue
            self.commit(rep)
            done.append(rep)
        return done

    def finish(self) -> StreamResult:
        """End of stream: process what is pending, complete the online-EM phase if the stream
        was shorter than the batch job's (online policy), then the batch schedule's final passes
        over all particles (n_full_iters, see ``passes.py``); commit after each."""
        if not self.finished:
            self.update(finishing=True)
            while self.final_done == 0 and self.policy.completion_due(self.ctx):
                rep = self._guarded(lambda: self.policy.complete_step(self.ctx))
                if rep is not None:
                    self.commit(rep)
            j = self.final_done
            while (self.ctx.engine is not None and self.ctx.engine.state is not None
                   and len(self.ctx.pool) and j < n_final_passes(self.ctx)):
                rep = self._guarded(lambda: final_pass(self.ctx, j))
                if rep is None:
                    continue
                j = self.final_done = j + 1
                self.commit(rep, force_outputs=True)
            self.finished = True
            self.commit(None, kind="finish", force_outputs=True)
        return self.result()

    def _guarded(self, step: Callable[[], UpdateReport]) -> UpdateReport | None:
        """Run one update; if an image cannot be read (its stack was deleted, moved or damaged
        after ingestion), withdraw the particles of every such stack (``withdraw_unreadable``),
        undo the step's counters and return None (the caller tries again). Other errors, or a
        read error with no stack to withdraw, are raised."""
        eng = self.ctx.engine
        saved = (self.ctx.updates, self.ctx.rng.bit_generator.state,
                 eng.rng.bit_generator.state if eng is not None else None)
        try:
            return step()
        except OutputError:
            raise
        except (InputError, OSError):
            self.ctx.updates, self.ctx.rng.bit_generator.state = saved[0], saved[1]
            if eng is not None:
                eng.rng.bit_generator.state = saved[2]
            if not self.withdraw_unreadable():
                raise
            return None

    def withdraw_unreadable(self) -> int:
        """Set aside, for good, the ingested particles whose image can no longer be read (stack
        deleted, moved, truncated or damaged since ingestion): rejects.csv lists each with its
        file, row, reason and time; the stream goes on without them. The statistics they gave
        stay in the model until the final passes, which recompute everything from the particles
        left. Returns how many were withdrawn."""
        t = self.ctx.pool.table
        if not len(t):
            return 0
        bad: dict[str, str] = {}
        for path, idx in t.groupby(STACK_PATH, sort=False)[STACK_INDEX].max().items():
            try:
                info = stack_info(path)
            except InputError as err:
                bad[path] = err.problem
                continue
            if int(idx) >= info.n:
                bad[path] = f"stack now holds {info.n} images, fewer than when ingested"
            elif info.box != self.ctx.pool.box:
                bad[path] = (f"stack now holds {info.box} px images, the stream's are "
                             f"{self.ctx.pool.box} px")
        if not bad:
            return 0
        rows = np.flatnonzero(t[STACK_PATH].isin(list(bad)).to_numpy())
        mask = np.ones(len(t), dtype=bool)
        mask[rows] = False
        self.ctx.records.grow(len(t))
        self.ctx.records.keep(mask)
        gone = self.ctx.pool.withdraw(rows)
        self.policy.rows_withdrawn(rows)
        for i in range(len(gone)):
            r = gone.iloc[i]
            self._set_aside(Reject(
                source=str(r.get(SOURCE_FILE, "")), row=int(r.get(SOURCE_ROW, -1)),
                image_name=str(r["rlnImageName"]),
                reason=f"stack unreadable after ingestion ({bad[r[STACK_PATH]]}): withdrawn"))
        log.warning("%d particles withdrawn: %d stacks can no longer be read (%s)", len(gone),
                    len(bad), "; ".join(f"{p}: {why}" for p, why in list(bad.items())[:3]))
        self._ingested_since_commit += 1  # the withdrawal is committed with the next update
        return int(len(gone))

    def result(self) -> StreamResult:
        """The current model and latest assignments of the processed particles."""
        self.ctx.records.grow(len(self.ctx.pool))
        return StreamResult(self.state, self.ctx.records.result(), self.ctx.pool.table,
                            list(self.rejects), list(self.history))

    # ------------------------------------------------------------------ commit
    def commit(self, report: UpdateReport | None, kind: str | None = None,
               force_outputs: bool = False) -> dict:
        """Checkpoint atomically, rewrite outputs, append the event. Returns the event."""
        t0 = time.perf_counter()
        now = time.time()
        if report is not None:
            self.history.append(self._history_entry(report))
        self.seq += 1
        event = self._event(report, kind, now)
        self.checkpoint.save(self.state, self._checkpoint([event]), finished=self.finished)
        t1 = time.perf_counter()
        if self._outputs_due(force_outputs or report is None):
            self.write_outputs()
        t2 = time.perf_counter()
        event["seconds"] = dict(event.get("seconds", {}), checkpoint=round(t1 - t0, 4),
                                outputs=round(t2 - t1, 4))
        self.events.append(event)
        self._ingested_since_commit = 0
        if report is not None and self.on_update is not None:
            self.on_update(self, report)
        return event

    def _outputs_due(self, force: bool) -> bool:
        now = time.monotonic()
        if force or self.outputs_every_s <= 0 or now - self._last_outputs >= self.outputs_every_s:
            return True
        self._outputs_stale = True
        return False

    def write_outputs(self) -> dict[str, Path]:
        """Rewrite the batch outputs (write_results) for the processed particles."""
        st = self.state
        res = self.result().particles
        if st is None or res.index.size == 0:
            return {}
        self._last_outputs = time.monotonic()
        self._outputs_stale = False
        pool = self.ctx.pool
        psi_step, shift_step = working_steps(
            pool.box * pool.pixel_size_A / max(st.r_work, 1e-6), pool.pixel_size_A,
            self.ctx.engine.particle_radius_A, self.config.psi_step_deg,
            self.config.shift_step_px)
        rejects = list(self.rejects)
        if self.config.remove_duplicates:
            res, duplicates = self._without_duplicate_picks(res)
            rejects += duplicates
            self.n_duplicates = len(duplicates)
        return write_results(self.out, st, res, pool.table, self.config, rejects=rejects,
                             history=self.history, accuracy_deg=psi_step,
                             accuracy_A=shift_step * pool.pixel_size_A)

    def _without_duplicate_picks(self, res: ParticleResult) -> tuple[ParticleResult, list[Reject]]:
        """The current results less duplicate picks (same micrograph, closer than
        min_separation_A: the lower-posterior copies), and rejects naming them. Recomputed at
        each output, as posteriors change while particles arrive; the ledger is untouched."""
        from cryoclass.outputs.duplicates import without_duplicate_picks

        return without_duplicate_picks(self.ctx.pool.table.iloc[res.index], res,
                                       self.config.min_separation_A)

    def _history_entry(self, rep: UpdateReport) -> dict:
        eng = self.ctx.engine
        return {"iteration": self.ctx.updates, "phase": rep.phase,
                "n_particles": rep.n_processed, "temperature": float(rep.temperature),
                "work_res_A": float(eng.res_A(eng.state.r_work)) if eng and eng.state else 0.0,
                "mean_loglik": float(rep.mean_loglik),
                "seconds": float(sum(rep.seconds.values())), "reseeded": rep.reseeded}

    def _event(self, rep: UpdateReport | None, kind: str | None, now: float) -> dict:
        recs = self.ctx.records
        recs.grow(len(self.ctx.pool))
        e: dict = {"seq": self.seq, "time": round(now, 3),
                   "event": kind or (rep.phase if rep else "ingest"), "job": "stream",
                   "policy": self.policy.name, "update": self.ctx.updates,
                   "n_ingested": len(self.ctx.pool),
                   "n_new_ingested": self._ingested_since_commit,
                   "n_processed": int(recs.processed.size),
                   "n_rejected": len(self.rejects)}
        if rep is not None:
            new = np.asarray(rep.new_rows, dtype=np.int64)
            arrival = self.ctx.pool.table[ARRIVAL].to_numpy(np.float64)
            lat = recs.processed_at[new] - arrival[new] if new.size else np.empty(0)
            e.update({"n_new": rep.n_new, "n_revisited": rep.n_revisited,
                      "temperature": round(float(rep.temperature), 4),
                      "factor": round(float(rep.factor), 4), "reseeded": rep.reseeded,
                      "mean_loglik": round(float(rep.mean_loglik), 4),
                      "work_res_A": self._history_entry(rep)["work_res_A"],
                      "latency_s": ({"mean": round(float(lat.mean()), 3),
                                     "max": round(float(lat.max()), 3)} if lat.size else None),
                      "seconds": {k: round(v, 4) for k, v in rep.seconds.items()}})
        e["class_counts"] = recs.class_counts().tolist()
        return e

    def _checkpoint(self, events: list[dict]) -> dict:
        eng = self.ctx.engine
        return {
            "policy": self.policy.name,
            "policy_state": self.policy.state_dict(),
            "pool": self.ctx.pool.to_dict(),
            "records": self.ctx.records.to_dict(),
            "updates": self.ctx.updates,
            "rng": self.ctx.rng.bit_generator.state,
            "engine_rng": eng.rng.bit_generator.state if eng is not None else None,
            "rejects": [r.__dict__ for r in self.rejects],
            "history": self.history,
            "events": events,
            "api_chunks": self.api_chunks,
            "final_done": self.final_done,
            "finished": self.finished,
        }

    # ------------------------------------------------------------------ resume
    def _make_engine(self) -> None:
        pool = self.ctx.pool
        self.ctx.engine = Engine(self.config, pool.box, pool.pixel_size_A, self.device)

    def _resume(self) -> bool:
        if not self.checkpoint.exists():
            return False
        ck = self.checkpoint.load(self.device)
        x = ck.state
        self.policy.load_state_dict(x["policy_state"])
        self.ctx.pool = ParticlePool.from_dict(x["pool"])
        self.ctx.records = ParticleRecords.from_dict(x["records"])
        self.ctx.updates = int(x["updates"])
        self.ctx.rng.bit_generator.state = x["rng"]
        self.rejects = [Reject(**r) for r in x["rejects"]]
        self.history = list(x["history"])
        self.api_chunks = int(x["api_chunks"])
        self.final_done = int(x["final_done"])
        self.finished = bool(x["finished"])
        if self.ctx.pool.has_geometry:
            self._make_engine()
            self.ctx.engine.state = ck.model
            if x.get("engine_rng") is not None:
                self.ctx.engine.rng.bit_generator.state = x["engine_rng"]
        self.events.replay(x["events"])
        self.seq = max(self.seq, self.events.last_seq)
        self.write_outputs()
        log.info("resumed %s: %d particles, %d processed, %d updates", self.out,
                 len(self.ctx.pool), self.n_processed, self.ctx.updates)
        return True

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Write outputs left stale by outputs_every_s and release the folder lock."""
        if getattr(self, "_outputs_stale", False):
            self.write_outputs()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove_stale_temporaries(out: Path) -> None:
    """Temp files left by a process killed mid-write (ours: the folder is locked)."""
    for pattern in ("*.pt*.tmp", ".*.tmp-*"):
        for p in out.glob(pattern):
            try:
                p.unlink()
            except OSError:
                pass
    stacks = out / API_STACKS
    if stacks.is_dir():
        for p in stacks.glob(".*.tmp-*"):
            p.unlink(missing_ok=True)


def _first_source(t: pd.DataFrame, source: str) -> str:
    """The file the first row came from (for messages)."""
    return str(t[SOURCE_FILE].iloc[0]) if SOURCE_FILE in t.columns and len(t) else source
