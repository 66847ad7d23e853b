"""Load test of streaming 2D classification: a simulated microscope delivers N particles (default
100,000) in many small files at a fixed rate; ``cryoclass stream`` follows them. Prints whether
ingestion keeps up (arrived vs classified over time, backlog, particles/s), the stream process's
memory over time (RSS; bounded = images never held, only per-particle metadata) and the latency
from arrival to first classification.

    python benchmarks/stream_load.py                       # 100,000 particles, box 48
    python benchmarks/stream_load.py --n 20000 --rate 300  # shorter

How: ``--unique`` particles (default 5,000) are simulated once (not timed) as micrographs of
``--per-file`` particles; the feeder then copies micrograph k mod M under a new name into the
watched folder (stack first, then its STAR, each appearing atomically with a fresh mtime), at
``--rate`` particles/s, and writes DONE at the end. Each copy is a distinct particle to the stream
(its own file and ledger key). Latency is the stream's own measure (events.jsonl: first
classification time - arrival time = max(STAR, stack) mtime). Everything is written under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Feed:
    """What the feeder has delivered so far (particles, files) and when it finished."""

    particles: int = 0
    files: int = 0
    done_at: float | None = None
    lag_s: float = 0.0  # how far the feeder fell behind its schedule at worst


@dataclass
class Sample:
    t: float
    arrived: int
    ingested: int
    classified: int
    rss_mb: float
    hwm_mb: float


@dataclass
class Events:
    """events.jsonl read incrementally."""

    path: Path
    offset: int = 0
    rows: list[dict] = field(default_factory=list)

    def poll(self) -> list[dict]:
        if not self.path.exists():
            return self.rows
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        for line in data[:cut].splitlines():
            try:
                self.rows.append(json.loads(line))
            except ValueError:
                pass
        return self.rows


def simulate_source(
    src: Path, n: int, per_file: int, box: int, apix: float, seed: int
) -> list[tuple[Path, str]]:
    """The micrographs to copy: (stack, STAR text) pairs, simulated once (cached in src)."""
    if not (src / "particles.star").exists():
        from cryoclass.simulate import simulate_dataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simulate_dataset(
                src,
                n_particles=n,
                box=box,
                pixel_size_A=apix,
                n_views=8,
                snr=0.3,
                particles_per_micrograph=per_file,
                seed=seed,
            )
    stars = sorted((src / "Movies").glob("mic_*.star"))
    return [(s.with_suffix(".mrcs"), s.read_text()) for s in stars]


def feed(
    watch: Path, source: list[tuple[Path, str]], per_file: int, n: int, rate: float, state: Feed
) -> None:
    """Deliver n particles as copies of the source micrographs at ``rate`` particles/s."""
    movies = watch / "Movies"
    movies.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    i = 0
    while state.particles < n:
        stack, text = source[i % len(source)]
        name = f"mic_{i:06d}"
        count = min(per_file, n - state.particles)
        due = t0 + (state.particles + count) / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            state.lag_s = max(state.lag_s, -wait)
        tmp = movies / f".{name}.mrcs.part"
        shutil.copyfile(stack, tmp)
        os.replace(tmp, movies / f"{name}.mrcs")  # the stack first, as RELION writes
        star = re.sub(rf"Movies/{stack.stem}\.mrc", f"Movies/{name}.mrc", text)
        if count < per_file:  # the last file: only the particles still due
            lines = star.rstrip("\n").split("\n")
            star = "\n".join(lines[: len(lines) - (per_file - count)]) + "\n"
        tmp = movies / f".{name}.star.part"
        tmp.write_text(star)
        os.replace(tmp, movies / f"{name}.star")
        state.particles += count
        state.files += 2
        i += 1
    (watch / "DONE").write_text(f"{state.particles} particles\n")
    state.done_at = time.monotonic()


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (0 if gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0

    def get(key: str) -> float:
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        return float(m.group(1)) / 1024 if m else 0.0  # a zombie has no memory lines

    return get("VmRSS"), get("VmHWM")


def percentile_weighted(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cw = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cw, q / 100 * cw[-1])])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="particles delivered")
    ap.add_argument("--per-file", type=int, default=50, help="particles per micrograph file")
    ap.add_argument("--unique", type=int, default=5000, help="distinct simulated particles")
    ap.add_argument("--box", type=int, default=48)
    ap.add_argument("--apix", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=200.0, help="arrival rate, particles/s")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--max-res-A", type=float, default=9.0)
    ap.add_argument("--batch-size-per-class", type=int, default=50)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument(
        "--write-every",
        type=float,
        default=30.0,
        help="outputs rewritten at most "
        "every this many seconds (--write-every of cryoclass stream)",
    )
    ap.add_argument("--work", type=Path, default=Path("stream_load_work"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    work = args.work.resolve()
    src = work / f"source_{args.unique}_{args.per_file}_{args.box}"
    t_sim = time.monotonic()
    source = simulate_source(src, args.unique, args.per_file, args.box, args.apix, args.seed)
    print(
        f"source: {len(source)} micrographs of {args.per_file} particles, box {args.box} "
        f"({time.monotonic() - t_sim:.0f} s to simulate)",
        flush=True,
    )
    watch, out = work / "watch", work / "out"
    for d in (watch, out):
        shutil.rmtree(d, ignore_errors=True)
    watch.mkdir(parents=True)

    cmd = [
        sys.executable,
        "-m",
        "cryoclass.cli",
        "stream",
        str(watch),
        "--out",
        str(out),
        "--classes",
        str(args.classes),
        "--max-res-A",
        str(args.max_res_A),
        "--batch-size-per-class",
        str(args.batch_size_per_class),
        "--n-full-iters",
        "1",
        "--device",
        "cpu",
        "--poll",
        str(args.poll),
        "--write-every",
        str(args.write_every),
        "--no-remove-duplicates",
    ]
    log = open(work / "stream.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    state = Feed()
    feeder = threading.Thread(
        target=feed, args=(watch, source, args.per_file, args.n, args.rate, state), daemon=True
    )
    feeder.start()
    events = Events(out / "events.jsonl")
    samples: list[Sample] = []
    peak = 0.0
    last_print = 0.0
    while proc.poll() is None:
        time.sleep(1.0)
        ev = events.poll()
        rss, hwm = rss_mb(proc.pid)
        peak = max(peak, hwm)
        last = ev[-1] if ev else {}
        s = Sample(
            time.monotonic() - t0,
            state.particles,
            int(last.get("n_ingested", 0)),
            int(last.get("n_processed", 0)),
            rss,
            hwm,
        )
        samples.append(s)
        if s.t - last_print >= 30:
            last_print = s.t
            print(
                f"t={s.t:6.0f} s arrived={s.arrived:7d} ingested={s.ingested:7d} "
                f"classified={s.classified:7d} backlog={s.arrived - s.classified:6d} "
                f"rss={s.rss_mb:6.0f} MB",
                flush=True,
            )
    wall = time.monotonic() - t0
    log.close()
    ev = events.poll()
    if proc.returncode != 0:
        print((work / "stream.log").read_text()[-3000:])
        return 1
    feed_s = state.done_at - t0 if state.done_at else wall
    updates = [e for e in ev if e.get("latency_s") and e.get("n_new")]
    lat_mean = np.array([e["latency_s"]["mean"] for e in updates])
    lat_max = np.array([e["latency_s"]["max"] for e in updates])
    w = np.array([e["n_new"] for e in updates], float)
    during = [s for s in samples if s.t <= feed_s]
    caught_up = next((s.t for s in samples if s.t > feed_s and s.classified >= args.n), None)
    backlog = np.array([s.arrived - s.classified for s in during]) if during else np.zeros(1)
    final = [e for e in ev if e["event"] in ("final", "assign")]
    commits = [e for e in ev if e.get("n_new")]
    rss_at, hwm_at = {}, {}
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        hit = next((s for s in samples if s.classified >= frac * args.n), None)
        rss_at[frac] = hit.rss_mb if hit else float("nan")
        hwm_at[frac] = hit.hwm_mb if hit else float("nan")
    image_mb = args.n * args.box**2 * 4 / 1024**2
    summary = {
        "particles": args.n,
        "files": state.files,
        "box": args.box,
        "classes": args.classes,
        "arrival_rate_target": args.rate,
        "arrival_rate_achieved": state.particles / feed_s,
        "feeder_max_lag_s": state.lag_s,
        "feed_seconds": feed_s,
        "wall_seconds": wall,
        "classified_per_s_while_feeding": (during[-1].classified / during[-1].t) if during else 0,
        "max_backlog": int(backlog.max()),
        "backlog_at_feed_end": int(backlog[-1]),
        "all_first_classified_at_s": caught_up,
        "latency_s": {
            "mean": float(np.average(lat_mean, weights=w)),
            "p50_of_updates": percentile_weighted(lat_mean, w, 50),
            "p95_of_updates": percentile_weighted(lat_mean, w, 95),
            "max": float(lat_max.max()),
        },
        "peak_rss_mb": peak,
        "rss_mb_at_fraction_classified": rss_at,
        "peak_rss_mb_at_fraction_classified": hwm_at,
        "images_mb_if_held": image_mb,
        "updates": len(updates),
        "final_pass_seconds": sum(e["seconds"].get("estep", 0.0) for e in final),
        "commit_seconds_per_update": {  # checkpoint of the whole stream after every update
            "first": commits[0]["seconds"].get("checkpoint") if commits else None,
            "last": commits[-1]["seconds"].get("checkpoint") if commits else None,
        },
        "estep_seconds_per_particle": float(
            np.median(
                [e["seconds"]["estep"] / (e["n_new"] + e.get("n_revisited", 0)) for e in commits]
            )
        ),
        "n_rejected": int(ev[-1]["n_rejected"]) if ev else None,
        "n_processed": int(ev[-1]["n_processed"]) if ev else None,
    }
    (work / "stream_load.json").write_text(json.dumps(summary, indent=2))
    lat = summary["latency_s"]
    print(
        f"\n{args.n} particles in {state.files} files ({args.per_file}/micrograph), box "
        f"{args.box}, K={args.classes}, arrival {summary['arrival_rate_achieved']:.0f}/s "
        f"(target {args.rate:.0f}/s)"
    )
    print(
        f"ingestion: {summary['classified_per_s_while_feeding']:.0f} particles/s classified "
        f"while feeding; backlog max {summary['max_backlog']}, at end of feed "
        f"{summary['backlog_at_feed_end']}; every particle classified at "
        f"{caught_up if caught_up is not None else float('nan'):.0f} s (feed ended at "
        f"{feed_s:.0f} s)"
    )
    print(
        f"latency arrival -> first classification: mean {lat['mean']:.1f} s, median update "
        f"{lat['p50_of_updates']:.1f} s, p95 update {lat['p95_of_updates']:.1f} s, max "
        f"{lat['max']:.1f} s"
    )
    print(
        "memory: peak RSS {:.0f} MB; RSS at 10/25/50/75/100 % classified: {} MB (peak so far "
        "{} MB); the images would be {:.0f} MB".format(
            peak,
            " / ".join(f"{v:.0f}" for v in rss_at.values()),
            " / ".join(f"{v:.0f}" for v in hwm_at.values()),
            image_mb,
        )
    )
    cps = summary["commit_seconds_per_update"]
    print(
        f"cost: E-step {1e3 * summary['estep_seconds_per_particle']:.2f} ms/particle; commit "
        f"(checkpoint) {cps['first'] or 0:.2f} s per update at the start, {cps['last'] or 0:.2f} s "
        "at the end (it grows with the particles ingested)"
    )
    print(
        f"end: {summary['n_processed']} classified, {summary['n_rejected']} set aside; "
        f"final pass {summary['final_pass_seconds']:.0f} s; total {wall:.0f} s"
    )
    print(f"summary: {work / 'stream_load.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
