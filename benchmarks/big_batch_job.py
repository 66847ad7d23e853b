"""Time a large batch job: a simulated set made N particles large by hard-linking its stacks under
new names (no extra disk, each copy distinct to the reader), then ``cryoclass classify`` on it.

    python benchmarks/big_batch_job.py --work DIR [--n 100000] [--base 5000] [-K 50] [--max-res 8]

Prints one JSON line: particles, classes, box, seconds to simulate / to classify (wall, start-up
and file I/O included), particles classified per second, and the output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import starfile

from cryoclass.simulate import simulate_dataset


def replicated_set(base: Path, out: Path, n: int) -> Path:
    """particles.star in ``out`` listing n particles: ceil(n / len(base)) copies of the base set,
    copy c's stacks hard links ``c<c>_<name>`` in out/Movies and its micrographs renamed alike
    (so no copy is a duplicate pick of another). Returns the STAR path."""
    star = starfile.read(base / "particles.star")
    parts: pd.DataFrame = star["particles"]
    movies = out / "Movies"
    movies.mkdir(parents=True, exist_ok=True)
    copies = []
    for c in range(math.ceil(n / len(parts))):
        for stack in sorted((base / "Movies").glob("*.mrcs")):
            link = movies / f"c{c}_{stack.name}"
            if not link.exists():
                os.link(stack, link)
        t = parts.copy()
        pieces = t["rlnImageName"].str.split("@", n=1)
        name = pieces.str[1].str.split("/").str[-1]
        t["rlnImageName"] = pieces.str[0] + f"@Movies/c{c}_" + name
        t["rlnMicrographName"] = f"c{c}_" + t["rlnMicrographName"].astype(str)
        copies.append(t)
    table = pd.concat(copies, ignore_index=True).iloc[:n]
    path = out / "particles.star"
    starfile.write({"optics": star["optics"], "particles": table}, path, overwrite=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--base", type=int, default=5_000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("-K", "--classes", type=int, default=50)
    ap.add_argument("--max-res", type=float, default=8.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = args.work / "base"
    if not (base / "particles.star").exists():
        simulate_dataset(
            base,
            n_particles=args.base,
            box=args.box,
            pixel_size_A=3.0,
            n_views=20,
            snr=0.05,
            seed=0,
        )
    star = replicated_set(base, args.work / f"set_{args.n}", args.n)
    t_sim = time.perf_counter() - t0
    out = args.work / f"job_{args.n}"
    cmd = [
        sys.executable,
        "-m",
        "cryoclass.cli",
        "classify",
        str(star),
        "--out",
        str(out),
        "-K",
        str(args.classes),
        "--max-res-A",
        str(args.max_res),
    ]
    t1 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t1
    n_out = len(starfile.read(out / "particles.star")["particles"])
    print(
        json.dumps(
            {
                "particles": args.n,
                "classified": n_out,
                "K": args.classes,
                "box": args.box,
                "max_res_A": args.max_res,
                "simulate_s": round(t_sim, 1),
                "classify_wall_s": round(wall, 1),
                "particles_per_s": round(args.n / wall, 1),
                "out": str(out),
            }
        )
    )


if __name__ == "__main__":
    main()
