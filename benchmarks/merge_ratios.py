"""The duplicate-class test (engine/class_merge.py) on every pair of classes of a finished job,
at several shell cut-offs, with the truth of a simulated set when given.

    python benchmarks/merge_ratios.py JOB_DIR [--truth DATA/truth.csv] [--min-expected 0.3 0.8]

Reads JOB_DIR/checkpoint.pt (the final half-set averages and the last pass's assignments) and,
with --truth, JOB_DIR/particles.star (rlnImageName) and the simulator's truth.csv (image_name,
view). Prints one line per pair of classes with at least --min-particles particles: the classes
(internal index, particles, majority true view and its fraction), the pair's ratio at each
cut-off (``same_view_ratio``'s min_expected; the engine uses ``MIN_EXPECTED_FRC``), then,
with --truth, a summary: the ratios of "copies" (both classes at least --purity pure, same
view) against those of "distinct" pairs (both pure, different views). A threshold on the ratio separates copies from distinct views only where
the lowest copy stays above the highest distinct pair (docs/status.md, session 14).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cryoclass.engine.class_merge as class_merge  # noqa: E402
from cryoclass.config import Config  # noqa: E402
from cryoclass.engine.em import Engine  # noqa: E402
from cryoclass.engine.model import ModelState  # noqa: E402
from cryoclass.engine.source import ParticleSource  # noqa: E402
from cryoclass.io import read_particles  # noqa: E402
from cryoclass.io.locate import parse_image_names  # noqa: E402
from cryoclass.outputs.checkpoint import read_checkpoint  # noqa: E402


def _image_keys(file: Path, names: pd.Series) -> list[tuple[int, str]]:
    """(0-based index, stack file name) of each RELION image name 'N@path/stack.mrcs'."""
    paths, index = parse_image_names(file, names)
    return [(int(i), Path(p).name) for p, i in zip(paths, index)]


def majority_views(
    job: Path, truth_csv: Path, cls: np.ndarray
) -> dict[int, tuple[int, float, int]]:
    """Per internal class: (majority true view, its fraction, particles), from the job's
    particles.star (rows in the order of the last pass's results) and the simulator's truth."""
    star = starfile.read(job / "particles.star")
    table = star["particles"] if isinstance(star, dict) else star
    if len(table) != cls.size:
        raise SystemExit(f"{job / 'particles.star'}: {len(table)} rows, checkpoint {cls.size}")
    truth = pd.read_csv(truth_csv)
    view_of = dict(zip(_image_keys(truth_csv, truth["image_name"]), truth["view"]))
    views = np.array([view_of[key] for key in _image_keys(job, table["rlnImageName"])])
    out = {}
    for c in np.unique(cls):
        v, counts = np.unique(views[cls == c], return_counts=True)
        out[int(c)] = (
            int(v[counts.argmax()]),
            float(counts.max() / counts.sum()),
            int(counts.sum()),
        )
    return out


def finished_job(job: Path) -> tuple[ModelState, np.ndarray]:
    """The final model of a finished job (JOB/checkpoint.pt) and its last pass's classes (n,),
    in the row order of JOB/particles.star; exits with a message for an unfinished job."""
    ck = read_checkpoint(job / "checkpoint.pt")
    model, final = ck.model, ck.state.get("point", {}).get("final")
    if model is None or model.half_images is None or final is None:
        raise SystemExit(f"{job / 'checkpoint.pt'}: not a finished job")
    return model, np.asarray(final["cls"])


def finished_engine(job: Path, particles: Path) -> tuple[Engine, ParticleSource, np.ndarray]:
    """An engine holding a finished job's final model (``finished_job``, the job's
    config.json), the job's input particles (the STAR / .cs file it read: the rows of its last
    pass) and that pass's classes (n,); exits with a message when the counts differ."""
    model, cls = finished_job(job)
    cfg = Config(**json.loads((job / "config.json").read_text()))
    source = read_particles(particles)
    if len(source) != cls.size:
        raise SystemExit(f"{particles}: {len(source)} particles, the job's last pass {cls.size}")
    engine = Engine(cfg, source.box, source.pixel_size_A)
    engine.state = model
    return engine, source, cls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", type=Path, help="a finished cryoclass job directory")
    ap.add_argument("--truth", type=Path, help="truth.csv of a simulated set")
    ap.add_argument("--min-expected", type=float, nargs="+", default=[0.3, 0.8])
    ap.add_argument("--min-particles", type=int, default=20)
    ap.add_argument("--purity", type=float, default=0.6)
    args = ap.parse_args()
    model, cls = finished_job(args.job)
    max_shift = json.loads((args.job / "config.json").read_text()).get("max_shift_px", 6.0)
    counts = np.bincount(cls, minlength=model.n_classes)
    classes = [int(c) for c in np.nonzero(counts >= args.min_particles)[0]]
    maj = majority_views(args.job, args.truth, cls) if args.truth else {}
    ratios = {}
    for cut in args.min_expected:
        ratios[cut] = class_merge.same_view_ratio(
            model.half_images, model.r_work, max_shift, classes, min_expected=cut
        )
    pairs = sorted(set().union(*ratios.values()))
    print(
        f"ratio at MIN_EXPECTED_FRC {args.min_expected}; merged at >= {class_merge.SAME_VIEW_RATIO}"
    )
    kinds: dict[str, list[list[float]]] = {"copies": [], "distinct": []}
    rows = []
    for a, b in pairs:
        r = [ratios[cut].get((a, b), float("nan")) for cut in args.min_expected]
        label = ""
        if maj:
            (va, pa, _), (vb, pb, _) = maj[a], maj[b]
            if min(pa, pb) >= args.purity:
                label = "copies" if va == vb else "distinct"
                kinds[label].append(r)
        rows.append((r, a, b, label))
    for r, a, b, label in sorted(rows, key=lambda t: -np.nan_to_num(t[0][-1], nan=-9.0)):
        desc = [f"{c:2d} ({counts[c]} ptcl" + (f", view {maj[c][0]} {maj[c][1]:.2f})" if maj else ")")
                for c in (a, b)]  # fmt: skip
        print(f"{desc[0]:28s} {desc[1]:28s} " + " ".join(f"{x:5.2f}" for x in r) + f"  {label}")
    if maj:
        for label, vals in kinds.items():
            v = np.array(vals).reshape(-1, len(args.min_expected))
            span = [f"{np.nanmin(v[:, j]):.2f}-{np.nanmax(v[:, j]):.2f}" if len(v) else "-"
                    for j in range(len(args.min_expected))]  # fmt: skip
            print(f"{label:8s} ({len(v)} pairs, both >= {args.purity} pure): " + "  ".join(span))


if __name__ == "__main__":
    main()
