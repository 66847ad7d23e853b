"""Where a batch job's wall time goes, and how much of it the pose searches' matrix products need.

    python benchmarks/job_phases.py PARTICLES.star [-K 20] [--max-res-A 8] [--seed 0]

Runs ``cryoclass classify`` on the particles (output in a temporary folder) with timers around
the engine's phases: online-EM E-steps, full-pass E-steps, the split test's 2-class runs and the
rest. It also counts the floating-point work of the two big matrix products of every E-step (the
coarse pose search, ``estep.score_best_poses``, and the signal-evidence search,
``evidence.best_cross_by_shell``), times a product of the same shape in bfloat16 and float32 in
the same run, and prints the time those products need at that rate: the part of the job that
only fewer hypotheses (classes x rotations x shifts x band points) or faster hardware can cut.
One JSON object on stdout. Timings on a shared machine are not timings: run it alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from cryoclass.engine import em, estep, executor
from cryoclass.engine.device import fast_bfloat16

sys.path.insert(0, str(Path(__file__).resolve().parent))
from estep_throughput import best_time  # noqa: E402  (a sibling script)

WALL: dict[str, float] = defaultdict(float)
GEMM = {"flop": 0.0, "shape": None}


def timed(owner: object, name: str, label: str) -> None:
    """Wrap owner.name so that its wall time adds to WALL[label]."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            WALL[label] += time.perf_counter() - t

    setattr(owner, name, wrapper)


def counted(owner: object, name: str, rows_of) -> None:
    """Wrap owner.name (a pose search) so that its GEMM work, 2 x n x 2F x rows FLOP, is counted;
    rows_of(args) gives the reference matrix's row count (classes x rotations x shifts)."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        x = args[0]  # (n, F) complex band coefficients
        n, f = x.shape
        rows = rows_of(args)
        GEMM["flop"] += 2.0 * n * 2 * f * rows
        if GEMM["shape"] is None or 2 * f * rows > GEMM["shape"][1] * GEMM["shape"][2]:
            GEMM["shape"] = (256, 2 * f, rows)  # the largest product, timed below
        return fn(*args, **kwargs)

    setattr(owner, name, wrapper)


def gemm_rate(shape: tuple[int, int, int], dtype: torch.dtype, reps: int = 10) -> float:
    """GFLOP/s of an (m, k) x (k, r) product in dtype on the CPU (best of three timings)."""
    m, k, r = shape
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(r, k).to(dtype)
    a @ b.T
    dt = best_time(lambda: [a @ b.T for _ in range(reps)], trials=3) / reps
    return 2.0 * m * k * r / dt / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("star")
    ap.add_argument("-K", type=int, default=20)
    ap.add_argument("--max-res-A", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    timed(executor.LocalEStep, "minibatch", "online_estep_s")
    timed(executor.LocalEStep, "full", "full_estep_s")
    timed(em.Engine, "split_runs", "split_test_s")  # every 2-class run: merges and divisions
    # the coarse search: refs (K, R/2, F) at the coarse shifts, or all poses when exhaustive
    counted(estep, "score_best_poses", lambda a: a[3].shape[0] * a[3].shape[1] * a[4].shape[0])
    counted(em, "score_best_poses", lambda a: a[3].shape[0] * a[3].shape[1] * a[4].shape[0])
    counted(em, "best_cross_by_shell", lambda a: a[4].shape[0])  # its shifted-reference matrix

    from cryoclass.cli import main as cli

    with tempfile.TemporaryDirectory() as out:
        sys.argv = ["cryoclass", "classify", args.star, "--out", out, "-K", str(args.K)]
        sys.argv += ["--max-res-A", str(args.max_res_A), "--seed", str(args.seed)]
        t0 = time.perf_counter()
        try:
            cli()
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise
        total = time.perf_counter() - t0

    coarse_dtype = torch.bfloat16 if fast_bfloat16(torch.device("cpu")) else torch.float32
    shape = GEMM["shape"]
    report = {
        "star": args.star,
        "K": args.K,
        "max_res_A": args.max_res_A,
        "threads": torch.get_num_threads(),
        "total_s": round(total, 1),
        **{k: round(v, 1) for k, v in WALL.items()},
        "rest_s": round(total - sum(WALL.values()), 1),
        "search_gemm_gflop": round(GEMM["flop"] / 1e9, 1),
    }
    if shape is not None:  # no search ran (no iterations): nothing to time
        rate = gemm_rate(shape, coarse_dtype)
        report.update(
            gemm_shape_m_k_r=shape,
            coarse_dtype=str(coarse_dtype).replace("torch.", ""),
            gemm_gflops_coarse_dtype=round(rate, 1),
            gemm_gflops_float32=round(gemm_rate(shape, torch.float32), 1),
            search_gemm_s_at_that_rate=round(GEMM["flop"] / 1e9 / rate, 1),
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
