"""Classify a TRPV1 set made by ../shared/bench/simulate.py and score it with the outside judge.

    python benchmarks/trpv1_judge.py --data DATA/trpv1_micelle [--classes 20] [--max-res 8] \
        [any cryoclass classify option, e.g. --seed 1 --min-res-A 40]

Make the data first (see ../shared/bench/README.md), e.g.
    python ../shared/bench/simulate.py --map ../shared/bench/inputs/trpv1_volume.mrc \
        --out DATA/trpv1_micelle --n 3000 --box 96 --apix 2.0 --views 12 --snr 0.05 \
        --micelle --tm-center 30 --seed 0
Prints wall time (start-up and file I/O included) and the judge's summary line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
JUDGE_KEYS = ["views_recovered_bp", "ari", "ami", "psi_R", "shift_frac_2px_all"]


def judge(data: Path, particles: Path, classes: Path) -> dict:
    """The outside judge's summary (../shared/bench/evaluate.py), JUDGE_KEYS only, for one
    program's particles STAR and class-average stack on the set in `data`."""
    ev = subprocess.run(
        [
            sys.executable,
            str(BENCH / "evaluate.py"),
            "--truth",
            str(data),
            "--particles",
            str(particles),
            "--classes",
            str(classes),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    summary = json.loads(ev.stdout.strip().splitlines()[0])
    return {k: summary[k] for k in JUDGE_KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--max-res", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=None)
    args, extra = ap.parse_known_args()
    out = args.out or args.data / "cryoclass_out"
    t0 = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "cryoclass.cli.__main__",
        "classify",
        str(args.data / "particles.star"),
        "--out",
        str(out),
        "-K",
        str(args.classes),
        "--max-res-A",
        str(args.max_res),
        *extra,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    scores = judge(args.data, out / "particles.star", out / "classes.mrcs")
    print(
        json.dumps(
            {
                "data": str(args.data),
                "K": args.classes,
                "max_res_A": args.max_res,
                "options": " ".join(extra),
                "wall_s": round(wall, 1),
                **scores,
            }
        )
    )


if __name__ == "__main__":
    main()
