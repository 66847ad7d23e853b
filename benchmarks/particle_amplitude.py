"""How much the particles of a finished job vary in amplitude beyond their noise: the case for a
per-particle intensity scale (RELION's --scale / --norm, CryoSPARC's per-particle scale).

    python benchmarks/particle_amplitude.py JOB_DIR --particles INPUT.star

Reads JOB_DIR/checkpoint.pt (the final model and the last pass's classes), JOB_DIR/config.json
and the job's input particles (the rows of its last pass). Each particle is searched again
exhaustively over the pose grid, with the final model's alignment band and noise model and no
shift prior, and at its best pose in its own class the amplitude that fits it best is measured:

    alpha = cross / norm,  cross = sum Re(conj(X) CTF A) / sigma2,  norm = sum CTF^2 |A|^2 / sigma2

over the band (half-plane sums, as ``estep.score_best_poses``). A particle that is its class
average plus noise has alpha = 1 up to noise of sd 1 / sqrt(2 norm) (the real part of complex
noise carries half its power). Per class (the model's internal index, as in
``merge_ratios.py``) with at least --min-particles particles: the mean alpha, its observed sd,
the sd its noise alone gives, and the excess sd (observed^2 - noise^2, clipped at 0,
square-rooted), the particle-to-particle amplitude change that a fitted scale would correct.
Fitting it raises a particle's score by about (alpha - 1)^2 norm (docs/status.md, session 22).
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
from cryoclass.engine.estep import score_best_poses  # noqa: E402
from cryoclass.engine.references import rotated_references  # noqa: E402
from cryoclass.engine.source import ParticleSource, load_batch  # noqa: E402
from cryoclass.physics.fourier import shift_phase  # noqa: E402
from merge_ratios import finished_engine  # noqa: E402

CHUNK = 256  # particles per search


def amplitudes(
    engine: Engine, source: ParticleSource, cls: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """alpha (n,) and its noise sd (n,) of every particle of source in its class cls ((n,),
    internal class index), at its best pose on the engine's pose grid."""
    band, inv_sigma2 = engine.alignment_band()
    poses = engine.pose_grid()
    refs = rotated_references(engine.alignment_images(), band, poses.psi)  # (K, R, F)
    alpha, noise_sd = [], []
    for a in range(0, len(source), CHUNK):
        rows = np.arange(a, min(len(source), a + CHUNK))
        batch = load_batch(engine, source, rows)
        X = batch.band(band, highpassed=engine.highpass_active)
        ctf = batch.band_ctf(band)
        c = torch.as_tensor(cls[rows], device=X.device)
        # best pose in every class (n, K), then each particle's own class
        _, rot, shf = score_best_poses(X, ctf, inv_sigma2, refs, poses.shifts, band)
        ar = torch.arange(rows.size, device=X.device)
        r, s = rot[ar, c], shf[ar, c]
        shift = poses.shifts[s]
        ph = shift_phase(band.kx[None], band.ky[None], shift[:, :1], shift[:, 1:], band.box)
        A = refs[c, r] * ph  # (m, F) the class average at the particle's pose
        w = ctf * inv_sigma2
        cross = (X.conj() * A).real.mul(w).sum(1)
        norm = (A.real**2 + A.imag**2).mul(ctf * w).sum(1).clamp_min(1e-12)
        alpha.append((cross / norm).cpu().numpy())
        noise_sd.append((1.0 / torch.sqrt(2.0 * norm)).cpu().numpy())
    return np.concatenate(alpha), np.concatenate(noise_sd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", type=Path, help="a finished cryoclass job directory")
    ap.add_argument("--particles", type=Path, required=True, help="the job's input STAR / .cs")
    ap.add_argument("--min-particles", type=int, default=20)
    args = ap.parse_args()
    engine, source, cls = finished_engine(args.job, args.particles)
    alpha, noise = amplitudes(engine, source, cls)
    print(" class  ptcl  mean alpha  sd observed  sd noise  sd excess   (class: internal index)")
    excess_all = []
    for k in np.unique(cls):
        m = cls == k
        if m.sum() < args.min_particles:
            continue
        obs, nse = float(alpha[m].std()), float(np.sqrt(np.mean(noise[m] ** 2)))
        excess = float(np.sqrt(max(obs**2 - nse**2, 0.0)))
        excess_all.append((int(m.sum()), excess))
        print(f"{k:6d} {m.sum():5d} {alpha[m].mean():11.3f} {obs:12.3f} {nse:9.3f} {excess:10.3f}")
    if excess_all:
        n = np.array([e[0] for e in excess_all])
        ex = np.array([e[1] for e in excess_all])
        print(
            f"excess sd, particle-weighted mean over these classes: {np.sum(n * ex) / n.sum():.3f}"
        )


if __name__ == "__main__":
    main()
