"""How the E-step's cost scales with particles, classes, box and resolution limit.

    python benchmarks/scaling.py [--n 1000] [--quick]

Starting from box 96 at 2 A/px, K = 20, 8 A and 1,000 particles, varies one factor at a time and
prints particles/s and microseconds per particle of a full E-step (coarse-to-fine scores + M-step
statistics, at the working resolution), on CUDA when present. The SGEMM peak is measured before
and after, since a shared machine's speed drifts. For streaming cost against batch cost see
stream_cost.py; for the whole job see trpv1_judge.py and relion_side_by_side.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cryoclass.engine.device import pick_device  # noqa: E402
from estep_throughput import estep_rate, sgemm_peak  # noqa: E402  (a sibling script)

BASE = {"box": 96, "classes": 20, "res": 8.0, "n": 1000}
SWEEPS = {
    "n": [250, 1000, 4000],
    "classes": [5, 20, 50, 100],
    "box": [64, 96, 128, 192],
    "res": [20.0, 12.0, 8.0, 6.0, 4.5],
}
QUICK = {"n": [250, 1000], "classes": [5, 20], "box": [64, 96], "res": [12.0, 8.0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=BASE["n"], help="particles, except in the n sweep")
    ap.add_argument("--apix", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="two points per factor")
    args = ap.parse_args()
    dev = pick_device("auto")
    base = {**BASE, "n": args.n}
    sweeps = QUICK if args.quick else SWEEPS
    peak = [sgemm_peak(dev)]
    rows = []
    print(
        f"{'factor':<8} {'box':>4} {'K':>4} {'res A':>6} {'n':>6} {'particles/s':>12} "
        f"{'us/particle':>12}"
    )
    for factor, values in sweeps.items():
        for v in values:
            p = {**base, factor: v}
            rate, _, _ = estep_rate(p["box"], args.apix, p["classes"], p["res"], p["n"], dev)
            rows.append({"factor": factor, **p, "particles_per_s": round(rate, 1)})
            print(
                f"{factor:<8} {p['box']:>4} {p['classes']:>4} {p['res']:>6} {p['n']:>6} "
                f"{rate:>12.1f} {1e6 / rate:>12.0f}",
                flush=True,
            )
    peak.append(sgemm_peak(dev))
    print(
        json.dumps(
            {
                "device": str(dev),
                "apix": args.apix,
                "sgemm_peak_gflops_before_after": [round(x, 1) for x in peak],
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
