"""Streaming 2D classification: particles arrive over time, class averages stay up to date.

``Stream(config, out_dir)`` owns one output folder. Particles come in through
:meth:`Stream.ingest` (canonical table rows, e.g. from ``FolderWatcher.poll``) or
:meth:`Stream.add_particles` (a ``ParticleSet``, or images + table); :meth:`Stream.update` runs the
updates the policy (``config.stream_policy``) asks for, :meth:`Stream.finish` ends the stream with
the batch schedule's full passes. After every update the stream commits: one atomic checkpoint
(``cryoclass.outputs.checkpoint``: model, ledger, assignments, counters, ``resume.py``), then the
batch outputs (``outputs.py``, each file atomic), then one line of ``events.jsonl``
(``progress.py``). Constructing a Stream on
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
from cryoclass.io import InputError, OutputError, ParticleSet, Reject
from cryoclass.io.atomic import remove_temporaries
from cryoclass.io.columns import SOURCE_ROW, STACK_PATH
from cryoclass.io.limits import check_resolution
from cryoclass.io.lock import lock_folder, make_output_folder
from cryoclass.io.rejects import now_utc, reason_kind
from cryoclass.outputs.checkpoint import JobCheckpoint
from cryoclass.outputs.events import EVENTS_NAME, EventLog
from cryoclass.stream.admission import LISTED_TWICE, row_problems, row_reject, unreadable_stacks
from cryoclass.stream.api_stacks import API_STACKS, store_images
from cryoclass.stream.context import StreamContext, UpdateReport
from cryoclass.stream.geometry import first_geometry
from cryoclass.stream.live import LivePolicy
from cryoclass.stream.online import OnlinePolicy
from cryoclass.stream.outputs import StreamOutputs
from cryoclass.stream.passes import final_pass, n_final_passes, restart_pass
from cryoclass.stream.pool import ARRIVAL, KEY, SOURCE_FILE, ParticlePool, particle_keys
from cryoclass.stream.progress import commit_event, history_entry
from cryoclass.stream.records import ParticleRecords
from cryoclass.stream.resume import Bookkeeping, restore, saved_state

log = logging.getLogger("cryoclass.stream")


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

    def __init__(
        self,
        config: Config,
        out_dir: str | Path,
        outputs_every_s: float = 0.0,
        on_update: Callable[["Stream", UpdateReport], None] | None = None,
        estep: EStepExecutor | None = None,
    ) -> None:
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
        remove_temporaries(self.out)
        remove_temporaries(self.out / API_STACKS)
        self.device = pick_device(config.device)
        self.policy = make_policy(config)
        self.checkpoint = JobCheckpoint(self.out, "stream", config)
        self.ctx = StreamContext(
            config,
            None,
            ParticlePool(),
            ParticleRecords.empty(config.n_classes),
            np.random.default_rng([config.seed, 7]),
            estep=self.estep,
        )
        self.book = Bookkeeping()
        self.events = EventLog(self.out / EVENTS_NAME).open()
        self.seq = self.events.last_seq
        self.outputs = StreamOutputs(self.out, config, self.outputs_every_s)
        self._ingested_since_commit = 0
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
    def rejects(self) -> list[Reject]:
        """Particles set aside so far (duplicate picks are added at each output)."""
        return self.book.rejects

    @property
    def history(self) -> list[dict]:
        """One entry per update (``model.star``'s iteration log)."""
        return self.book.history

    @property
    def n_duplicates(self) -> int:
        """Duplicate picks left out of the last outputs written."""
        return self.outputs.n_duplicates

    @property
    def uncommitted(self) -> bool:
        """True if particles were ingested or withdrawn since the last commit."""
        return self._ingested_since_commit > 0

    def known(self, keys: np.ndarray) -> np.ndarray:
        """(n,) bool: keys already ingested or rejected (the ledger)."""
        return self.ctx.pool.known(keys)

    # ------------------------------------------------------------------ ingestion
    def ingest(
        self, table: pd.DataFrame, arrival_s: np.ndarray | float | None = None, source: str = ""
    ) -> int:
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
            arrival = (
                t[ARRIVAL].to_numpy(np.float64)
                if ARRIVAL in t.columns
                else np.full(len(t), time.time())
            )
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
        if new.size and (self.book.finished or self.book.final_done):
            self.book.finished, self.book.final_done = False, 0
        return int(new.size)

    def add_particles(
        self,
        particles: ParticleSet | np.ndarray,
        table: pd.DataFrame | None = None,
        *,
        pixel_size_A: float | None = None,
        arrival_s: float | None = None,
        update: bool = True,
    ) -> int:
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
            rows = store_images(
                self.out, self.book, np.asarray(particles), table, pixel_size_A, self.known
            )
            source = "api"
        n = self.ingest(rows, arrival_s, source=source)
        if update:
            if not self.update() and (n or self._ingested_since_commit):
                self.commit(None)
        return n

    def _set_aside_repeats(self, t: pd.DataFrame, source: str) -> pd.DataFrame:
        """Rows naming an image already named by an earlier row of t: the first is kept, the
        others go to rejects (a particle listed twice is reported, never dropped silently)."""
        dup = t[KEY].duplicated().to_numpy()
        for i in np.flatnonzero(dup):
            self._set_aside(row_reject(t, i, source, LISTED_TWICE))
        return t.loc[~dup].reset_index(drop=True)

    def _check_rows(self, t: pd.DataFrame, source: str) -> np.ndarray:
        """(n,) bool rows to keep; the others become rejects (and ledger entries)."""
        reasons = row_problems(t, self.ctx.pool.box, self.ctx.pool.pixel_size_A)
        ok = np.array([not r for r in reasons], dtype=bool)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            self.ctx.pool.mark_rejected(t[KEY].to_numpy(dtype=object)[bad])
            for i in bad:
                self._set_aside(row_reject(t, i, source, reasons[i]))
        return ok

    def reject_keys(self, keys: dict[str, str | Reject], source: str = "") -> None:
        """Set aside particles that will never be ingested (key -> reason, or key -> Reject
        naming file, row and reason), e.g. rows whose stack never became complete before the end
        of the stream, or rows with an absurd CTF value. Keys already in the ledger are skipped."""
        fresh = [k for k in keys if not self.known(np.array([k], dtype=object))[0]]
        self.ctx.pool.mark_rejected(np.array(fresh, dtype=object))
        for k in fresh:
            self._set_aside(
                keys[k]
                if isinstance(keys[k], Reject)
                else Reject(source=source, row=-1, image_name=k, reason=keys[k])
            )

    def set_aside_rows(self, rows: pd.DataFrame, reasons: dict[str, str], prefix: str = "") -> int:
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
            out[k] = Reject(
                source=str(rows[SOURCE_FILE].iloc[i]) if SOURCE_FILE in rows else "",
                row=int(rows[SOURCE_ROW].iloc[i]) if SOURCE_ROW in rows else -1,
                image_name=str(rows["rlnImageName"].iloc[i]),
                reason=prefix + reasons.get(k, "unknown"),
            )
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
        c = {
            "classified": classified,
            "set_aside": rejected + self.n_duplicates,
            "waiting": pending + int(waiting),
            "files": files,
        }
        c["found"] = c["classified"] + c["set_aside"] + c["waiting"]
        return c

    def set_aside_reasons(self) -> list[tuple[str, int]]:
        """(reason kind, particles) of the stream's rejects, commonest first."""
        kinds = Counter(
            reason_kind(r.reason) for r in self.rejects if not (r.row < 0 and r.image_name == "")
        )
        if self.n_duplicates:
            kinds["duplicate pick"] += self.n_duplicates
        return kinds.most_common()

    # ------------------------------------------------------------------ updates
    def update(self, max_updates: int | None = None, finishing: bool = False) -> list[UpdateReport]:
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
        book = self.book
        if not book.finished:
            self.update(finishing=True)
            while book.final_done == 0 and self.policy.completion_due(self.ctx):
                rep = self._guarded(lambda: self.policy.complete_step(self.ctx))
                if rep is not None:
                    self.commit(rep)
            j = book.final_done
            while (
                self.ctx.engine is not None
                and self.ctx.engine.state is not None
                and len(self.ctx.pool)
            ):
                if j >= 1 and book.restarts_done + 1 < self.config.n_restarts:
                    self._restart(book.restarts_done + 1)  # after the first closing pass
                    continue
                if j >= n_final_passes(self.ctx):
                    break
                rep = self._guarded(lambda: final_pass(self.ctx, j))
                if rep is None:
                    continue
                if j == 0:
                    book.kept_score = rep.mean_loglik
                j = book.final_done = j + 1
                self.commit(rep, force_outputs=True)
            book.finished = True
            self.commit(None, kind="finish", force_outputs=True)
        return self.result()

    def _restart(self, r: int) -> None:
        """Extra restart r at the end of the stream (``passes.restart_pass``), committed."""
        book = self.book
        out = self._guarded(lambda: restart_pass(self.ctx, r, book.kept_score))
        if out is None:
            return
        rep, kept = out
        if kept:
            book.kept_score = rep.mean_loglik
        book.restarts_done = r
        self.commit(rep, force_outputs=True)

    def _guarded(self, step: Callable[[], UpdateReport]) -> UpdateReport | None:
        """Run one update; if an image cannot be read (its stack was deleted, moved or damaged
        after ingestion), withdraw the particles of every such stack (``withdraw_unreadable``),
        undo the step's counters and return None (the caller tries again). Other errors, or a
        read error with no stack to withdraw, are raised."""
        eng = self.ctx.engine
        saved = (
            self.ctx.updates,
            self.ctx.rng.bit_generator.state,
            eng.rng.bit_generator.state if eng is not None else None,
        )
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
        bad = unreadable_stacks(t, self.ctx.pool.box)
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
            self._set_aside(
                Reject(
                    source=str(r.get(SOURCE_FILE, "")),
                    row=int(r.get(SOURCE_ROW, -1)),
                    image_name=str(r["rlnImageName"]),
                    reason=f"stack unreadable after ingestion ({bad[r[STACK_PATH]]}): withdrawn",
                )
            )
        log.warning(
            "%d particles withdrawn: %d stacks can no longer be read (%s)",
            len(gone),
            len(bad),
            "; ".join(f"{p}: {why}" for p, why in list(bad.items())[:3]),
        )
        self._ingested_since_commit += 1  # the withdrawal is committed with the next update
        return int(len(gone))

    def result(self) -> StreamResult:
        """The current model and latest assignments of the processed particles."""
        self.ctx.records.grow(len(self.ctx.pool))
        return StreamResult(
            self.state,
            self.ctx.records.result(),
            self.ctx.pool.table,
            list(self.rejects),
            list(self.history),
        )

    # ------------------------------------------------------------------ commit
    def commit(
        self, report: UpdateReport | None, kind: str | None = None, force_outputs: bool = False
    ) -> dict:
        """Checkpoint atomically, rewrite outputs, append the event. Returns the event."""
        t0 = time.perf_counter()
        now = time.time()
        if report is not None:
            self.history.append(history_entry(self.ctx, report))
        self.seq += 1
        event = commit_event(
            self.ctx,
            self.policy.name,
            report,
            kind,
            self.seq,
            now,
            self._ingested_since_commit,
            len(self.rejects),
        )
        self.checkpoint.save(
            self.state,
            saved_state(self.ctx, self.policy, self.book, [event]),
            finished=self.book.finished,
        )
        t1 = time.perf_counter()
        if self.outputs.due(force_outputs or report is None):
            self.write_outputs()
        t2 = time.perf_counter()
        event["seconds"] = dict(
            event.get("seconds", {}), checkpoint=round(t1 - t0, 4), outputs=round(t2 - t1, 4)
        )
        self.events.append(event)
        self._ingested_since_commit = 0
        if report is not None and self.on_update is not None:
            self.on_update(self, report)
        return event

    def write_outputs(self) -> dict[str, Path]:
        """Rewrite the batch outputs (``outputs.py``) for the processed particles."""
        return self.outputs.write(self.ctx, self.rejects, self.history)

    # ------------------------------------------------------------------ resume
    def _make_engine(self) -> None:
        pool = self.ctx.pool
        self.ctx.engine = Engine(self.config, pool.box, pool.pixel_size_A, self.device)

    def _resume(self) -> bool:
        if not self.checkpoint.exists():
            return False
        ck = self.checkpoint.load(self.device)
        x = ck.state
        self.book = restore(self.ctx, self.policy, x)
        if self.ctx.pool.has_geometry:
            self._make_engine()
            self.ctx.engine.state = ck.model
            if x.get("engine_rng") is not None:
                self.ctx.engine.rng.bit_generator.state = x["engine_rng"]
        self.events.replay(x["events"])
        self.seq = max(self.seq, self.events.last_seq)
        self.write_outputs()
        log.info(
            "resumed %s: %d particles, %d processed, %d updates",
            self.out,
            len(self.ctx.pool),
            self.n_processed,
            self.ctx.updates,
        )
        return True

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Write outputs left stale by outputs_every_s and release the folder lock."""
        outputs = getattr(self, "outputs", None)
        if outputs is not None and outputs.stale:
            self.write_outputs()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_source(t: pd.DataFrame, source: str) -> str:
    """The file the first row came from (for messages)."""
    return str(t[SOURCE_FILE].iloc[0]) if SOURCE_FILE in t.columns and len(t) else source
