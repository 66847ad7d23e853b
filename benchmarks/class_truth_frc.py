"""What each class of a finished job on a simulated set really holds: its half-set FRC against
the FRC of its averages with the true view, shell by shell.

    python benchmarks/class_truth_frc.py JOB_DIR --data SIM_DIR [--min-particles 20]

Reads JOB_DIR/checkpoint.pt (the final half-set averages and the last pass's assignments),
JOB_DIR/particles.star, and the simulator's SIM_DIR/truth.csv and SIM_DIR/views.mrcs (the clean
projection of every view). For each class with at least --min-particles particles: its majority
true view and purity, the resolution it is reported at, and per shell its half-set FRC f and
t^2, where t is the FRC of a half-set average with its majority view's clean projection (each
half aligned to it over rotations and shifts, the two halves averaged). A half-set average
of SNR s per shell has half-set FRC f = s / (1 + s) and FRC t = sqrt(s / (1 + s)) with its
noise-free signal, so t^2 = f when the halves' noise is independent. A half-set FRC well above
t^2 is detail that both halves share and the true view does not have: noise aligned to the
class reference (Einstein from noise), or other views mixed in. Columns
"half 0.143" and "truth 0.143" are the resolutions (Å) where f and t^2 fall below 0.143.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mrcfile
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryoclass.engine.poses import shift_grid  # noqa: E402
from cryoclass.engine.references import rotated_references  # noqa: E402
from cryoclass.physics.fourier import make_band, rfft_band, shell_frc, shift_phase  # noqa: E402
from merge_ratios import finished_job, majority_views  # noqa: E402

#: FRC threshold of the two resolution columns.
THRESHOLD = 0.143
#: shells (Fourier pixels) the alignment to the true view uses, from this one up.
ALIGN_FROM_SHELL = 3


def frc_with_view(
    halves: torch.Tensor, view: torch.Tensor, r_work: float, max_shift_px: float
) -> torch.Tensor:
    """(n_shells,) FRC of the two half-set averages halves (2, D, D) with the clean projection
    view (D, D), each half aligned to it (1-degree rotations, 0.5-pixel shifts within
    max_shift_px, on shells ALIGN_FROM_SHELL..r_work), averaged over the halves."""
    d = view.shape[-1]
    band = make_band(d, r_work, r_lo=0.5)
    n_sh = int(r_work) + 2
    fh = rfft_band(halves, band)
    angles = torch.arange(0.0, 360.0, 1.0)
    shifts = shift_grid(max_shift_px, 0.5)
    phase = shift_phase(band.kx[None], band.ky[None], shifts[:, :1], shifts[:, 1:], d)
    turned = rotated_references(view[None], band, angles)[0]  # (R, F)
    use = (band.shell >= ALIGN_FROM_SHELL).float()
    out = torch.zeros(n_sh)
    for h in (0, 1):
        cc = torch.einsum("f,rf,sf->rs", fh[h].conj() * use, turned, phase).real
        best = int(cc.argmax())
        r, s = divmod(best, shifts.shape[0])
        out += shell_frc(fh[h], turned[r] * phase[s], band.shell, n_sh) / 2
    return out


def resolution_A(frc: torch.Tensor, box: int, pixel_A: float) -> float:
    """Resolution (Å) of the last shell before frc (n_shells,) first falls below THRESHOLD."""
    for s in range(1, frc.numel()):
        if frc[s] < THRESHOLD:
            return box * pixel_A / max(s - 1, 1)
    return box * pixel_A / (frc.numel() - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", type=Path, help="a finished cryoclass job directory")
    ap.add_argument("--data", type=Path, required=True, help="the simulated set's folder")
    ap.add_argument("--min-particles", type=int, default=20)
    ap.add_argument("--max-shift-px", type=float, default=6.0)
    args = ap.parse_args()
    model, cls = finished_job(args.job)
    maj = majority_views(args.job, args.data / "truth.csv", cls)
    views = torch.as_tensor(mrcfile.read(args.data / "views.mrcs").astype(np.float32))
    box, apix = model.box, model.pixel_size_A
    n_sh = int(model.r_work) + 2
    band = make_band(box, model.r_work, r_lo=0.5)
    print(f"r_work {model.r_work:.1f} px ({box * apix / model.r_work:.1f} Å); per shell: f / t^2")
    print(" k  ptcl  view purity  reported  half 0.143  truth 0.143")
    for c in sorted(maj, key=lambda c: -maj[c][2]):
        view, purity, count = maj[c]
        if count < args.min_particles or view < 0:
            continue
        halves = model.half_images[:, c]
        fh = rfft_band(halves, band)
        f = shell_frc(fh[0], fh[1], band.shell, n_sh)
        t = frc_with_view(halves, views[view], model.r_work, args.max_shift_px)
        t2 = t.clamp_min(0) ** 2
        print(
            f"{c:2d} {count:5d} {view:5d} {purity:6.2f} {float(model.resolution_A[c]):9.1f}"
            f" {resolution_A(f, box, apix):11.1f} {resolution_A(t2, box, apix):12.1f}"
        )
        print("     " + " ".join(f"{s}:{f[s]:.2f}/{t2[s]:.2f}" for s in range(2, n_sh, 2)))


if __name__ == "__main__":
    main()
