"""Compute of streaming vs batch classification of the same particles (not a test).

For each stream length N, the same simulated particles are classified three ways:
- batch: ``run_batch`` on all N (online EM, then the full passes);
- online stream: delivered in chunks of --chunk particles (``stream_policy="online"``);
- live stream: the CryoSPARC Live schedule, corrected (``stream_policy="live"``).

Printed per N: particle E-steps (particles x visits, the engine's unit of work), compute seconds
(read + E-step + M-step; streams exclude checkpoints and output writing, listed separately as
"io s") and ARI against the true views; and the ratios stream / batch.

    .venv/bin/python benchmarks/stream_cost.py --sizes 400 800 1600 3200
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryoclass.config import Config
from cryoclass.io import read_particles
from cryoclass.quality import adjusted_rand_index
from cryoclass.schedules.batch import run_batch
from cryoclass.simulate import simulate_dataset
from cryoclass.stream import Stream, read_events


def config(args, policy: str) -> Config:
    return Config(
        n_classes=args.classes,
        max_res_A=args.max_res,
        batch_size_per_class=args.bpc,
        n_online_em_iters=args.iters,
        n_full_iters=args.full,
        sigma_anneal_start=1,
        sigma_anneal_iters=args.iters // 2,
        seed=args.seed,
        device=args.device,
        stream_policy=policy,
    )


def run_stream(pset, cfg: Config, chunk: int, out: Path) -> dict:
    t0 = time.perf_counter()
    with Stream(cfg, out, outputs_every_s=args.write_every) as s:
        for a in range(0, len(pset), chunk):
            s.add_particles(pset.subset(np.arange(a, min(len(pset), a + chunk))))
        res = s.finish()
    wall = time.perf_counter() - t0
    ev = [e for e in read_events(out / "events.jsonl") if "n_new" in e]
    sec = sum(v for e in ev for k, v in e["seconds"].items() if k in ("read", "estep", "mstep"))
    io = sum(
        v
        for e in read_events(out / "events.jsonl")
        for k, v in e["seconds"].items()
        if k in ("checkpoint", "outputs")
    )
    order = np.argsort(res.particles.index)
    return {
        "visits": sum(e["n_new"] + e["n_revisited"] for e in ev),
        "s": sec,
        "io_s": io,
        "wall_s": wall,
        "cls": res.particles.cls[order],
        "updates": len(ev),
    }


def main(args) -> None:
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="stream_cost_"))
    n_max = max(args.sizes)
    data = tmp / "data"
    simulate_dataset(
        data,
        n_particles=n_max,
        box=args.box,
        pixel_size_A=args.apix,
        n_views=args.classes,
        snr=args.snr,
        particles_per_micrograph=50,
        seed=1,
    )
    pset = read_particles(data / "particles.star")
    truth = pd.read_csv(data / "truth.csv")["view"].to_numpy()
    print(
        f"box {args.box} px, {args.apix} Å/px, K={args.classes}, minibatch "
        f"{args.bpc * args.classes}, {args.iters} online-EM iterations, {args.full} full; "
        f"stream chunks of {args.chunk}; {args.threads} thread(s), device {args.device}"
    )
    head = (
        f"{'N':>6} | {'batch E-steps':>13} {'s':>6} {'ARI':>5} | {'online E-steps':>14} "
        f"{'s':>6} {'io s':>5} {'ARI':>5} {'ratio':>6} {'s ratio':>7} | {'live E-steps':>12} "
        f"{'s':>6} {'ARI':>5} {'ratio':>6} {'s ratio':>7}"
    )
    print(head)
    print("-" * len(head))
    for n in sorted(args.sizes):
        sub = pset.subset(np.arange(n))
        t0 = time.perf_counter()
        b = run_batch(sub, config(args, "online"))
        b_s = time.perf_counter() - t0
        b_visits = sum(e.n_particles for e in b.log)
        b_ari = adjusted_rand_index(truth[:n], b.particles.cls)
        row = f"{n:>6} | {b_visits:>13} {b_s:>6.1f} {b_ari:>5.2f} |"
        for policy in ("online", "live"):
            out = tmp / f"{policy}_{n}"
            r = run_stream(sub, config(args, policy), args.chunk, out)
            a = adjusted_rand_index(truth[:n], r["cls"])
            if policy == "online":
                row += (
                    f" {r['visits']:>14} {r['s']:>6.1f} {r['io_s']:>5.1f} {a:>5.2f} "
                    f"{r['visits'] / b_visits:>6.2f} {r['s'] / b_s:>7.2f} |"
                )
            else:
                row += (
                    f" {r['visits']:>12} {r['s']:>6.1f} {a:>5.2f} "
                    f"{r['visits'] / b_visits:>6.2f} {r['s'] / b_s:>7.2f}"
                )
            shutil.rmtree(out, ignore_errors=True)
        print(row, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[400, 800, 1600, 3200])
    p.add_argument("--chunk", type=int, default=50, help="particles per arrival")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--bpc", type=int, default=20, help="batch size per class")
    p.add_argument("--iters", type=int, default=10, help="online-EM iterations")
    p.add_argument("--full", type=int, default=2, help="full iterations at the end")
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--apix", type=float, default=5.0)
    p.add_argument("--max-res", type=float, default=12.5)
    p.add_argument("--snr", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--write-every",
        type=float,
        default=0.0,
        help="stream outputs at most every S seconds (0: every update)",
    )
    args = p.parse_args()
    main(args)
