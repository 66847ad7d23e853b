"""Per class of a finished job: who picked it in the signal-evidence search, and what each
evidence test supports (engine/evidence.py).

    python benchmarks/class_evidence.py JOB_DIR [--shells 12]

Reads JOB_DIR/checkpoint.pt. One line per class, heaviest first: its weight (particles), how
many particles and how many sign-flipped controls picked it in the last evidence search (the
last full pass, or the running sums of a job without one), the resolution it is reported at
(either test) and the one its reference is faded at (the summed test alone), then the summed and
the mean z-scores of the first ``--shells`` shells. A class that many controls pick while its
summed z-scores are negative is one the summed test alone would call 999 Å.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoclass.engine.evidence import evidence_z  # noqa: E402
from cryoclass.outputs.checkpoint import read_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", type=Path, help="a cryoclass job directory (with checkpoint.pt)")
    ap.add_argument("--shells", type=int, default=12, help="shells of z-scores to print")
    args = ap.parse_args()
    model = read_checkpoint(args.job / "checkpoint.pt").model
    if model is None:
        raise SystemExit(f"{args.job / 'checkpoint.pt'}: the job has no model yet")
    st = model.stats
    z_sum, z_mean = evidence_z(st.evidence, st.evidence_sq, st.evidence_n)
    weight = st.weight.sum(0)
    n = min(args.shells, z_sum.shape[1] - 1)
    res_a = model.box * model.pixel_size_A / np.arange(1, n + 1)
    print(f"shells 1-{n}: {res_a[0]:.0f} .. {res_a[-1]:.1f} Å")
    print(" k   weight  particles  controls  reported_A  reference_A")
    np.set_printoptions(precision=1, suppress=True, linewidth=200)
    for k in torch.argsort(weight, descending=True).tolist():
        n_p, n_c = st.evidence_n[k].tolist()
        print(
            f"{k:2d} {float(weight[k]):8.0f} {n_p:10.0f} {n_c:9.0f} "
            f"{float(model.resolution_A[k]):11.1f} {float(model.working_resolution_A[k]):12.1f}"
        )
        print("     z summed", z_sum[k, 1 : n + 1].cpu().numpy())
        print("     z mean  ", z_mean[k, 1 : n + 1].cpu().numpy())


if __name__ == "__main__":
    main()
