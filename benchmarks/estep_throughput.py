"""E-step throughput and efficiency of the hot kernel against this machine's SGEMM peak.

    python benchmarks/estep_throughput.py [--box 96] [--classes 20] [--res 8] [--n 2000]

Prints particles/s of a full E-step (scores + M-step statistics) with the coarse-to-fine search and
with the exhaustive one, the GFLOP/s of the score GEMM, and the SGEMM peak measured in the same
run, on CUDA when present.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from cryoclass.config import Config
from cryoclass.engine.batch import ParticleBatch, prepare_batch
from cryoclass.engine.device import pick_device
from cryoclass.engine.em import Engine
from cryoclass.engine.estep import score_best_poses
from cryoclass.engine.references import rotated_references
from cryoclass.io.columns import ctf_parameters


def sgemm_peak(device: torch.device, size: int = 2048, reps: int = 5, trials: int = 3) -> float:
    """Best of a few timed SGEMM runs (GFLOP/s)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    best = 0.0
    for _ in range(trials):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def best_time(fn, trials: int = 2) -> float:
    """Shortest of a few runs (seconds), to keep other processes' noise out."""
    out = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_batch(eng: Engine, n: int, box: int, apix: float, dev: torch.device) -> ParticleBatch:
    """n white-noise images of `box` px with random defoci, prepared for `eng` on `dev`."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, box, box)).astype(np.float32)
    table = pd.DataFrame(
        {
            "rlnDefocusU": rng.uniform(8e3, 3e4, n),
            "rlnDefocusV": 1.5e4,
            "rlnDefocusAngle": 10.0,
            "rlnVoltage": 300.0,
            "rlnSphericalAberration": 2.7,
            "rlnAmplitudeContrast": 0.1,
        }
    )
    return prepare_batch(
        np.arange(n),
        images,
        ctf_parameters(table),
        apix,
        eng.mask,
        eng.mask_radius_px,
        False,
        False,
        dev,
    )


def estep_rate(
    box: int,
    apix: float,
    classes: int,
    res: float,
    n: int,
    dev: torch.device,
    exhaustive: bool = False,
) -> tuple[float, Engine, ParticleBatch]:
    """Particles/s of one full E-step (scores + M-step statistics) at the working resolution
    `res` (A) for n particles of `box` px and `classes` classes; also returns the engine and
    the prepared batch."""
    cfg = Config(n_classes=classes, max_res_A=res, exhaustive_search=exhaustive)
    eng = Engine(cfg, box, apix, dev)
    batch = synthetic_batch(eng, n, box, apix, dev)
    eng.initialise(batch)
    eng.state.r_work = eng.r_max
    eng.expectation(batch, 0.0)  # warm-up
    dt = best_time(lambda: (eng.expectation(batch, 0.0), sync(dev)))
    return n / dt, eng, batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--box", type=int, default=96)
    ap.add_argument("--apix", type=float, default=2.0)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--res", type=float, default=8.0)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    dev = pick_device("auto")
    out = {
        "device": str(dev),
        "box": args.box,
        "K": args.classes,
        "res_A": args.res,
        "n": args.n,
        "sgemm_peak_gflops": round(sgemm_peak(dev), 1),
    }
    for exhaustive in (False, True):
        rate, eng, batch = estep_rate(
            args.box, args.apix, args.classes, args.res, args.n, dev, exhaustive
        )
        out["exhaustive" if exhaustive else "coarse_to_fine"] = {"particles_per_s": round(rate, 1)}
    # the hot kernel alone: exhaustive score GEMMs
    band, inv = eng.alignment_band()
    poses = eng.pose_grid()
    refs = rotated_references(eng.state.class_images, band, poses.psi)
    X, ctf = batch.band(band), batch.ctf(band.kx, band.ky)
    dt = best_time(lambda: (score_best_poses(X, ctf, inv, refs, poses.shifts, band), sync(dev)))
    flops = 2.0 * args.n * poses.n_shift * refs.shape[0] * refs.shape[1] * 2 * band.size
    out["kernel"] = {
        "rotations": poses.n_rot,
        "shifts": poses.n_shift,
        "band_points": band.size,
        "gflops": round(flops / dt / 1e9, 1),
        "fraction_of_sgemm_peak": round(flops / dt / 1e9 / out["sgemm_peak_gflops"], 2),
    }
    out["peak_memory_MB"] = round(
        __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
