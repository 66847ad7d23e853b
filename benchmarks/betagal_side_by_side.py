"""cryoclass and RELION 3.1 Class2D side by side on the real β-galactosidase particles of the
RELION tutorial (``../shared/data/relion_tutorial_betagal``): one PNG with both galleries
(particle count and resolution under each class, sorted by count), and both wall times.

    python benchmarks/betagal_side_by_side.py --work /tmp/betagal [--relion-run DIR/run]
        [--classes 20] [--mask-diameter-A 200] [--threads 2] [--png docs/betagal_side_by_side.png]
        [--no-ctf]

RELION cannot read float16 stacks: they are converted to float32 under --work first. RELION's
command line is its GUI's for a CPU Class2D job (K, 200 Å mask, 25 iterations, tau2_fudge 2, CTF,
norm + scale, psi 12° with oversampling 1, offsets ±5 px step 2), no resolution limit. With
``--relion-run`` an existing run (its ``*_it025_*`` files) is used instead of running RELION.
cryoclass runs with the same K and mask, defaults otherwise. ``--no-ctf``: both ignore the CTF
(RELION without ``--ctf``, cryoclass ``--skip-ctf``). There is no truth on real data: the picture
is the judge.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import starfile

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cryoclass.io import read_images, stack_pixel_size_A, stack_shape, write_stack  # noqa: E402
from cryoclass.outputs.montage import normalise_tile  # noqa: E402
from cryoclass.outputs.results import blank_empty_classes  # noqa: E402
from relion_command import class2d_command  # noqa: E402  (sibling script)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "relion_tutorial_betagal"


def whole_stack(path: Path) -> np.ndarray:
    """Every image of an MRC stack, (n, D, D) float32."""
    return read_images(path, np.arange(stack_shape(path)[0]))


def float32_copy(src: Path, work: Path) -> Path:
    """Copy the STAR file and its stacks under work, stacks as float32 (RELION 3.1 reads no
    float16); returns the copied STAR path."""
    for stack in src.glob("Extract/**/*.mrcs"):
        out = work / stack.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            write_stack(out, whole_stack(stack), stack_pixel_size_A(stack))
    for name in ("particles.star", "mtf_k2_200kV.star"):
        shutil.copy(src / name, work / name)
    return work / "particles.star"


def run_relion(star: Path, work: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """relion_refine Class2D in work/relion (work/relion_noctf without --ctf, with --no-ctf);
    returns (run prefix, wall seconds)."""
    name = "relion_noctf" if args.no_ctf else "relion"
    out = work / name
    out.mkdir(exist_ok=True)
    cmd = class2d_command(
        "relion_refine", star.name, f"{name}/run", args.classes, args.mask_diameter_A, args.threads
    )
    if args.no_ctf:
        cmd.remove("--ctf")
    t0 = time.time()
    with open(work / f"{name}.log", "w") as log:
        subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, check=True)
    return out / "run", time.time() - t0


def relion_classes(prefix: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, D, D) class averages, (K,) particle counts and (K,) resolutions (Å) of RELION's
    iteration 25."""
    imgs = whole_stack(Path(f"{prefix}_it025_classes.mrcs"))
    model = starfile.read(f"{prefix}_it025_model.star")["model_classes"]
    parts = starfile.read(f"{prefix}_it025_data.star")["particles"]
    counts = np.bincount(parts["rlnClassNumber"].to_numpy() - 1, minlength=len(imgs))
    return imgs, counts, model["rlnEstimatedResolution"].to_numpy()


def run_cryoclass(
    star: Path, work: Path, args: argparse.Namespace, out: str = "cryoclass", extra: str = ""
) -> float:
    """cryoclass classify (with the extra arguments) into work/out; returns wall seconds."""
    t0 = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cryoclass.cli",
            "classify",
            str(star),
            "--out",
            str(work / out),
            "-K",
            str(args.classes),
            "--mask-diameter-A",
            str(args.mask_diameter_A),
            *extra.split(),
        ],
        check=True,
    )
    return time.time() - t0


def cryoclass_classes(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, D, D) class averages, (K,) counts and (K,) resolutions (Å) of a cryoclass job."""
    imgs = whole_stack(out / "classes.mrcs")
    model = starfile.read(out / "model.star")["model_classes"]
    counts = model["cryoclassParticleCount"].to_numpy()
    return (
        blank_empty_classes(imgs, counts),  # drawn flat grey, as in the job's gallery
        counts,
        model["rlnEstimatedResolution"].to_numpy(),
    )


def draw(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], png: Path) -> None:
    """One row of galleries (title, images, counts, resolutions), each sorted by count."""
    cols = 5
    rows = max(int(np.ceil(len(p[1]) / cols)) for p in panels)
    fig = plt.figure(figsize=(len(panels) * cols * 1.25 + 0.4, rows * 1.55 + 0.5))
    for j, (title, imgs, counts, res) in enumerate(panels):
        order = np.argsort(-counts, kind="stable")
        x0 = j / len(panels)
        fig.text(x0 + 0.5 / len(panels), 0.985, title, ha="center", va="top", fontsize=9)
        for i, c in enumerate(order):
            r, q = divmod(i, cols)
            ax = fig.add_axes(
                (
                    x0 + (q + 0.05) / (cols * len(panels)),
                    1 - (0.5 + (r + 1) * 1.55 - 0.3) / (rows * 1.55 + 0.5),
                    0.9 / (cols * len(panels)),
                    1.15 / (rows * 1.55 + 0.5),
                )
            )
            ax.imshow(normalise_tile(imgs[c]), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            ax.set_title(f"{int(counts[c])} ptcls\n{res[c]:.1f} Å", fontsize=6.5, y=-0.32)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, facecolor="white")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, type=Path, help="scratch folder (outside the repo)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--relion-run",
        type=Path,
        default=None,
        help="prefix of a finished RELION run (DIR/run) to use instead of running it",
    )
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--mask-diameter-A", type=float, default=200.0)
    ap.add_argument("--threads", type=int, default=2, help="RELION threads (--j)")
    ap.add_argument("--png", type=Path, default=Path("docs/betagal_side_by_side.png"))
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="more cryoclass arguments for one more panel (e.g. --variant=--skip-ctf); repeatable",
    )
    ap.add_argument(
        "--no-ctf",
        action="store_true",
        help="both programs ignore the CTF: cryoclass --skip-ctf, RELION without --ctf",
    )
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found (the shared data folder beside the checkout)")
    args.work.mkdir(parents=True, exist_ok=True)
    star = float32_copy(args.data, args.work)
    if args.relion_run is None:
        prefix, t_relion = run_relion(star, args.work, args)
    else:
        prefix = args.relion_run
        t_relion = (
            Path(f"{prefix}_it025_model.star").stat().st_mtime
            - Path(f"{prefix}_it000_model.star").stat().st_mtime
        )  # from its files' times
    ours_name, ours_extra = ("cryoclass_noctf", "--skip-ctf") if args.no_ctf else ("cryoclass", "")
    t_cc = run_cryoclass(star, args.work, args, ours_name, ours_extra)
    rel = relion_classes(prefix)
    ours = cryoclass_classes(args.work / ours_name)
    n = len(starfile.read(star)["particles"])
    title = " ".join(["cryoclass", ours_extra]).strip()
    panels = [(f"{title}, {n} particles, K={args.classes} ({t_cc:.0f} s)", *ours)]
    for i, extra in enumerate(args.variant):
        t = run_cryoclass(star, args.work, args, f"cryoclass_variant{i + 1}", extra)
        panels.append(
            (
                f"cryoclass {extra} ({t:.0f} s)",
                *cryoclass_classes(args.work / f"cryoclass_variant{i + 1}"),
            )
        )
    without = " without --ctf" if args.no_ctf else ""
    panels.append((f"RELION 3.1{without}, 25 iterations ({t_relion:.0f} s)", *rel))
    draw(panels, args.png)
    print(f"wall s: cryoclass {t_cc:.1f}, RELION {t_relion:.1f}; wrote {args.png}")


if __name__ == "__main__":
    main()
