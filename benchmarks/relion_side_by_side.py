"""RELION 3.1 Class2D and cryoclass side by side: same STAR, same machine, same run, one judge.

    python benchmarks/relion_side_by_side.py --data DATA/trpv1_micelle [--relion-iter 25] \
        [--subset N] [--classes 20] [--max-res 8] [--threads 2]

DATA is a set made by ../shared/bench/simulate.py (see its README). The script
1. runs RELION's `relion_refine` Class2D with the command line its GUI writes (the one in
   ../shared/bench/README.md: K, 25 iterations, tau2_fudge 2, CTF, norm + scale, psi step 12 with
   oversampling 1 = 6 deg, offsets +-5 px step 2 / oversampled 1 px, 8 A limit, --j threads);
2. runs `cryoclass classify` on the same STAR with the same K and resolution limit;
3. scores both with ../shared/bench/evaluate.py and prints wall time, CPU time, peak memory and the
   judge's figures for both, and the ratios.

`--relion-iter n` (n < 25) is the routine short form: RELION stops after n iterations, its time for
25 iterations is extrapolated as (time of the n done) + (25 - n) x (its last iteration's time)
(on trpv1_micelle, n = 5 gives 2,232 s for the 2,239 s of a full run; n < 5 overestimates),
and its quality is that of iteration n, not of a finished run; the output says so. `--subset N`
runs both programs on the same N particles (chosen with a fixed seed). RELION needs
Debian's `relion` (`make relion` installs it). Both programs run from DATA, so the STAR's
relative image paths resolve; their outputs go to DATA/side_by_side/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import starfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from estep_throughput import sgemm_peak  # noqa: E402  (sibling scripts)
from relion_command import class2d_command  # noqa: E402
from trpv1_judge import JUDGE_KEYS, judge  # noqa: E402

FULL_ITERATIONS = 25


@dataclass
class Run:
    """One program's run: wall and CPU seconds, peak resident memory (MB), judge summary."""

    program: str
    wall_s: float
    cpu_s: float
    peak_MB: float
    judge: dict = field(default_factory=dict)
    note: str = ""


def run_measured(cmd: list[str], cwd: Path, log: Path, threads: int) -> tuple[float, float, float]:
    """Run `cmd` in `cwd` on `threads` threads; return (wall s, child CPU s, child peak RSS MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed (exit {proc.returncode}); see {log}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def write_subset(star: Path, n: int, out: Path, seed: int = 0) -> Path:
    """Write `n` randomly chosen particles of `star` (optics block kept) to `out`."""
    blocks = starfile.read(star, always_dict=True)
    parts = blocks["particles"]
    if n >= len(parts):
        return star
    pick = np.sort(np.random.default_rng(seed).choice(len(parts), n, replace=False))
    blocks["particles"] = parts.iloc[pick].reset_index(drop=True)
    starfile.write(blocks, out, overwrite=True)
    return out


def iteration_times(out_dir: Path, start: float) -> list[float]:
    """Elapsed seconds at which RELION finished each iteration (mtime of run_itNNN_model.star)."""
    stamps = sorted(out_dir.glob("run_it[0-9][0-9][0-9]_model.star"))
    return [p.stat().st_mtime - start for p in stamps if not p.name.startswith("run_it000")]


def run_relion(data: Path, star: Path, work: Path, args: argparse.Namespace) -> Run:
    """RELION 3.1 Class2D as its GUI writes it (../shared/bench/README.md); returns its Run."""
    exe = shutil.which("relion_refine")
    if exe is None:
        sys.exit("relion_refine not found: run `make relion` (Debian's relion 3.1)")
    out_dir = work / "relion"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    cmd = class2d_command(
        exe,
        star,
        out_dir / "run",
        args.classes,
        args.diameter,
        args.threads,
        iterations=args.relion_iter,
        max_res_A=args.max_res,
        extra=[
            "--pad",
            "2",
            "--pool",
            "3",
            "--preread_images",
            "--dont_combine_weights_via_disc",
            "--random_seed",
            "1",
        ],
    )
    start = time.time()
    wall, cpu, peak = run_measured(cmd, data, work / "relion.log", args.threads)
    done = iteration_times(out_dir, start)
    last = f"run_it{args.relion_iter:03d}"
    run = Run(
        "RELION 3.1",
        wall,
        cpu,
        peak,
        judge(data, out_dir / f"{last}_data.star", out_dir / f"{last}_classes.mrcs"),
    )
    if args.relion_iter < FULL_ITERATIONS:
        # RELION's iterations get shorter as its adaptive sampling narrows, then level off
        # (507, 279, 165, 84, 57, then 48-62 s on trpv1_micelle), so the last one measured is the
        # closest estimate of the rest and never an underestimate.
        per_iter = float(np.diff([0.0, *done])[-1])
        run.wall_s = wall + (FULL_ITERATIONS - args.relion_iter) * per_iter
        run.cpu_s = cpu * run.wall_s / wall
        run.note = (
            f"SHORT RUN: {args.relion_iter} of {FULL_ITERATIONS} iterations measured "
            f"({wall:.0f} s); time extrapolated with {per_iter:.0f} s per remaining "
            f"iteration; quality is that of iteration {args.relion_iter}, not converged"
        )
    else:
        run.note = f"full run, {FULL_ITERATIONS} iterations measured"
    run.note += "; iteration ends at " + ", ".join(f"{t:.0f}" for t in done) + " s"
    return run


def run_cryoclass(data: Path, star: Path, work: Path, args: argparse.Namespace) -> Run:
    """`cryoclass classify` with the same K and resolution limit; returns its Run."""
    out = work / "cryoclass"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "cryoclass.cli.__main__",
        "classify",
        str(star),
        "--out",
        str(out),
        "-K",
        str(args.classes),
        "--max-res-A",
        str(args.max_res),
        *args.extra,
    ]
    wall, cpu, peak = run_measured(cmd, data, work / "cryoclass.log", args.threads)
    return Run(
        "cryoclass",
        wall,
        cpu,
        peak,
        judge(data, out / "particles.star", out / "classes.mrcs"),
        "full run, start-up and file I/O included",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a set made by simulate.py")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--max-res", type=float, default=8.0, help="resolution limit, A")
    ap.add_argument(
        "--relion-iter",
        type=int,
        default=FULL_ITERATIONS,
        help="RELION iterations to run (fewer than 25: extrapolated)",
    )
    ap.add_argument("--subset", type=int, default=0, help="run both on this many particles")
    ap.add_argument("--diameter", type=float, default=170.0, help="RELION mask diameter, A")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-relion", action="store_true", help="run and score cryoclass only")
    args, args.extra = ap.parse_known_args()
    if not 1 <= args.relion_iter <= FULL_ITERATIONS:
        sys.exit(f"--relion-iter must be 1..{FULL_ITERATIONS}")
    data = args.data.resolve()
    work = data / "side_by_side"
    work.mkdir(exist_ok=True)
    star = data / "particles.star"
    if args.subset:
        star = write_subset(star, args.subset, work / f"subset_{args.subset}.star")
    n = len(starfile.read(star, always_dict=True)["particles"])

    torch.set_num_threads(args.threads)
    peak_before = sgemm_peak(torch.device("cpu"))

    runs = [run_cryoclass(data, star, work, args)]
    if not args.skip_relion:
        runs.append(run_relion(data, star, work, args))
    peak_after = sgemm_peak(torch.device("cpu"))

    report = {
        "data": str(data),
        "particles": n,
        "K": args.classes,
        "max_res_A": args.max_res,
        "threads": args.threads,
        "cryoclass_options": " ".join(args.extra),
        "sgemm_peak_gflops_before_after": [round(peak_before), round(peak_after)],
        "runs": [asdict(r) for r in runs],
    }
    print(
        f"{n} particles, K = {args.classes}, {args.max_res} A, {args.threads} threads; "
        f"SGEMM peak {peak_before:.0f} / {peak_after:.0f} GFLOP/s before / after"
    )
    head = f"{'program':<11} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} " + " ".join(
        f"{k:>18}" for k in JUDGE_KEYS
    )
    print(head)
    for r in runs:
        print(
            f"{r.program:<11} {r.wall_s:>8.1f} {r.cpu_s:>8.1f} {r.peak_MB:>8.0f} "
            + " ".join(f"{r.judge[k]!s:>18}" for k in JUDGE_KEYS)
        )
    for r in runs:
        print(f"  {r.program}: {r.note}")
    if len(runs) == 2:
        ours, relion = runs
        ratios = {
            "wall_time_relion_over_cryoclass": round(relion.wall_s / ours.wall_s, 1),
            "cpu_time_relion_over_cryoclass": round(relion.cpu_s / ours.cpu_s, 1),
            "ari_cryoclass_over_relion": round(ours.judge["ari"] / relion.judge["ari"], 2)
            if relion.judge["ari"] > 0
            else None,
            "views_recovered_bp_cryoclass_minus_relion": _views(ours.judge) - _views(relion.judge),
        }
        report["ratios"] = ratios
        print("ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    (work / "report.json").write_text(json.dumps(report, indent=1))
    print(f"report: {work / 'report.json'}")


def _views(summary: dict) -> int:
    """Number of views recovered from the judge's 'k/12' string (or an int)."""
    v = summary["views_recovered_bp"]
    return int(str(v).split("/")[0])


if __name__ == "__main__":
    main()
