"""min_res_A side by side on a micelle set: the outside judge's figures with and without it.

    python benchmarks/min_res_micelle.py --data DATA/trpv1_micelle [--classes 20] [--min-res 40]

Runs benchmarks/trpv1_judge.py twice (defaults, then --min-res-A) and prints one JSON line per
run and a side-by-side line of ARI and views recovered (band-passed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

JUDGE = Path(__file__).with_name("trpv1_judge.py")


def judge(data: Path, classes: int, out: Path, extra: list[str]) -> dict:
    """The judge's summary of one cryoclass run with extra cryoclass options."""
    cmd = [
        sys.executable,
        str(JUDGE),
        "--data",
        str(data),
        "--classes",
        str(classes),
        "--out",
        str(out),
    ]
    cmd += extra  # options trpv1_judge.py does not know go on to cryoclass classify
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return json.loads(line.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--min-res", type=float, default=40.0)
    args = ap.parse_args()
    off = judge(args.data, args.classes, args.data / "cryoclass_min_res_off", [])
    on = judge(
        args.data,
        args.classes,
        args.data / "cryoclass_min_res_on",
        ["--min-res-A", str(args.min_res)],
    )
    print(json.dumps({"min_res_A": None, **off}))
    print(json.dumps({"min_res_A": args.min_res, **on}))
    print(
        f"ARI {off['ari']:.3f} -> {on['ari']:.3f}; views_recovered_bp "
        f"{off['views_recovered_bp']} -> {on['views_recovered_bp']}"
    )


if __name__ == "__main__":
    main()
