"""How the residual power of a finished job's particles depends on their CTF: the case for a noise
model that follows each particle's CTF (cryoclass and RELION use one radial spectrum per shell).

    python benchmarks/noise_ctf.py JOB_DIR --particles INPUT.star [--max-particles 1500]

Reads JOB_DIR/checkpoint.pt (the final model and the last pass's classes), JOB_DIR/config.json
and the job's input particles (the rows of its last pass). Each particle (the first
--max-particles rows) is scored against the final model as the job's last pass scores it
(``Engine.score``); at its best class and pose the residual R = X - CTF S_t A_c(R k) is taken at
every point of the alignment band. Per pair of shells the table gives the mean residual power
|R|^2 where the particle's CTF^2 is below 0.15 and where it is above 0.7, their ratio, and b / a
of the least-squares fit |R|^2 = a + b CTF^2 (b / a = 0: the power does not follow the CTF).
Ice and other background imaged through the microscope follow the CTF, as does whatever of the
signal the class average does not explain; shot noise does not (docs/status.md, session 24).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryoclass.engine.em import Engine  # noqa: E402
from cryoclass.engine.source import ParticleSource, load_batch  # noqa: E402
from cryoclass.physics.fourier import shift_phase  # noqa: E402
from merge_ratios import finished_engine  # noqa: E402

LOW_CTF2 = 0.15  # CTF^2 below this: near a zero of the CTF
HIGH_CTF2 = 0.7  # CTF^2 above this: near a maximum
MIN_CTF2_VARIANCE = 0.03  # CTF^2 spread a shell needs for the fit (narrow defocus: low shells)


def residuals(
    engine: Engine, source: ParticleSource, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual power |R|^2 (n, F) of the first n particles at their best class and pose, their
    CTF^2 (n, F), and the shell of each band point (F,)."""
    batch = load_batch(engine, source, np.arange(n))
    scored = engine.score(batch)
    band, poses = scored.band, scored.poses
    top = scored.best.argmax(1)
    rows = torch.arange(n, device=top.device)
    rot, shf = scored.rot[rows, top], scored.shf[rows, top]
    moved = shift_phase(
        band.kx[None], band.ky[None], poses.shifts[shf, :1], poses.shifts[shf, 1:], band.box
    )
    res = scored.X - scored.refs.values[top, rot] * moved * scored.ctf
    return res.real**2 + res.imag**2, scored.ctf**2, band.shell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", type=Path, help="a finished cryoclass job directory")
    ap.add_argument("--particles", type=Path, required=True, help="the job's input STAR / .cs")
    ap.add_argument("--max-particles", type=int, default=1500)
    args = ap.parse_args()
    engine, source, _ = finished_engine(args.job, args.particles)
    power, ctf2, shell = residuals(engine, source, min(len(source), args.max_particles))
    size = engine.box * engine.apix
    print("shells   res (Å)  |R|^2 CTF^2<0.15  |R|^2 CTF^2>0.7  ratio   b / a")
    for s in range(2, int(shell.max()) + 1, 2):
        at = (shell == s) | (shell == s + 1)
        p, c = power[:, at].flatten().cpu().numpy(), ctf2[:, at].flatten().cpu().numpy()
        lo = p[c < LOW_CTF2].mean() if (c < LOW_CTF2).any() else np.nan
        hi = p[c > HIGH_CTF2].mean() if (c > HIGH_CTF2).any() else np.nan
        slope = np.nan
        if c.var() > MIN_CTF2_VARIANCE:  # else the fit cannot tell a from b
            fit = np.linalg.lstsq(np.stack([np.ones_like(c), c], 1), p, rcond=None)[0]
            slope = fit[1] / fit[0]
        print(
            f"{s:3d}-{s + 1:<3d} {size / s:8.1f} {lo:17.3f} {hi:16.3f} {hi / lo:6.2f} "
            f"{slope:7.2f}".replace("nan", "  -")
        )


if __name__ == "__main__":
    main()
