"""The split test (engine/class_split.py) on every pair of classes of a finished job that looks
alike, with the truth of a simulated set when given.

    python benchmarks/split_agreements.py JOB_DIR --particles INPUT.star [--truth truth.csv]
        [--min-ratio 0.45]

Reads JOB_DIR/checkpoint.pt (the final model and the last pass's classes) and JOB_DIR/config.json,
and the job's input particles (the rows of its last pass: give the STAR file the job read).
For each pair with a duplicate-test ratio of at least --min-ratio (``same_view_ratio``), prints
the ratio and the split test's agreement (``Engine.split_agreement``: the best of up to
SPLIT_STARTS starts; the engine merges below REPRODUCED when the ratio is at least
SPLIT_TEST_RATIO), and with --truth each class's majority view and purity and the pair's kind:
"copies" (both at least --purity pure, same view), "distinct" (both pure, different views) or
"mixed". The engine ran the test on the models of its merging passes, not on the final model,
so a pair the final model holds may never have been tested.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoclass.engine.class_merge import populated_ratios  # noqa: E402
from cryoclass.engine.class_split import (  # noqa: E402
    REPRODUCED,
    SPLIT_TEST_RATIO,
    pair_split,
)
from cryoclass.engine.source import load_batch  # noqa: E402
from merge_ratios import finished_engine, majority_views  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", type=Path, help="a finished cryoclass job directory")
    ap.add_argument("--particles", type=Path, required=True, help="the job's input STAR / .cs")
    ap.add_argument("--truth", type=Path, help="truth.csv of a simulated set")
    ap.add_argument("--min-ratio", type=float, default=0.45)
    ap.add_argument("--purity", type=float, default=0.6)
    args = ap.parse_args()
    engine, source, cls = finished_engine(args.job, args.particles)
    maj = majority_views(args.job, args.truth, cls) if args.truth else {}
    ratios = populated_ratios(
        engine.state.half_images,
        engine.state.class_weights,
        engine.state.r_work,
        engine.cfg.max_shift_px,
    )
    print(f"merged when ratio >= {SPLIT_TEST_RATIO} and agreement < {REPRODUCED}")
    for (a, b), ratio in sorted(ratios.items(), key=lambda kv: -kv[1]):
        if ratio < args.min_ratio:
            continue
        rows, old, smaller = pair_split(cls, a, b)
        if smaller < 2:
            continue
        agree = engine.split_agreement(load_batch(engine, source, rows), old, a, b)
        kind, desc = "", []
        for c in (a, b):
            n = int((cls == c).sum())
            desc.append(
                f"{c:2d} ({n} ptcl" + (f", view {maj[c][0]} {maj[c][1]:.2f})" if maj else ")")
            )
        if maj:
            (va, pa, _), (vb, pb, _) = maj[a], maj[b]
            pure = min(pa, pb) >= args.purity
            kind = ("copies" if va == vb else "distinct") if pure else "mixed"
        print(f"{desc[0]:28s} {desc[1]:28s} ratio {ratio:.2f} agreement {agree:.2f}  {kind}")


if __name__ == "__main__":
    main()
