"""Peak memory of a batch job against the number of particles: bounded, whatever N.

    python benchmarks/batch_memory.py                      # N = 10,000 and 100,000, box 64
    python benchmarks/batch_memory.py --n 10000 30000 --box 96

For each N, simulates a data set once (``cryoclass simulate``, not timed; kept in --work), runs
``cryoclass classify`` on it in a child process and prints its wall time and peak resident
memory (the kernel's VmHWM, read while it runs), next to the size of the particle images on disk.
Prepared images are kept in memory between iterations only while all of them fit in the 1 GB
budget (``engine/prepared_cache.py``); past that the job reads them from disk in chunks of
``batch_particles``, so its memory stops growing with N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def peak_rss_mb(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run cmd; return (wall seconds, peak RSS in MB of that process)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    status = Path(f"/proc/{proc.pid}/status")
    hwm_kb = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm_kb = max(hwm_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read()}")
    return wall, hwm_kb / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--apix", type=float, default=3.0)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--max-res", type=float, default=10.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cryoclass_batch_memory"))
    args = ap.parse_args()
    exe = [sys.executable, "-m", "cryoclass.cli.__main__"]
    rows = []
    for n in args.n:
        data = args.work / f"n{n}_box{args.box}"
        if not (data / "particles.star").exists():
            print(f"simulating {n} particles of box {args.box} into {data} ...", flush=True)
            subprocess.run(
                exe
                + [
                    "simulate",
                    "--out",
                    str(data),
                    "--n",
                    str(n),
                    "--box",
                    str(args.box),
                    "--apix",
                    str(args.apix),
                    "--snr",
                    "0.1",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        images_mb = sum(p.stat().st_size for p in (data / "Movies").glob("*.mrcs")) / 2**20
        out = args.work / f"job_n{n}_box{args.box}"
        wall, rss = peak_rss_mb(
            exe
            + [
                "classify",
                "particles.star",
                "--out",
                str(out),
                "-K",
                str(args.classes),
                "--max-res-A",
                str(args.max_res),
            ],
            data,
        )
        row = {
            "n": n,
            "box": args.box,
            "K": args.classes,
            "images_on_disk_MB": round(images_mb),
            "peak_rss_MB": round(rss),
            "wall_s": round(wall, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(
            f"N x{b['n'] / a['n']:.0f}: images x{b['images_on_disk_MB'] / a['images_on_disk_MB']:.1f}"
            f", peak memory x{b['peak_rss_MB'] / a['peak_rss_MB']:.2f}"
        )


if __name__ == "__main__":
    main()
