"""What a perfect reference allows on a simulated set: the ceiling of classification by likelihood.

    python benchmarks/oracle_ceiling.py --data DATA/p2x7_micelle/s0 [--n 500] \
        [--band 6 --band 40:6] [--search [--refs data]]

The references are the set's TRUE noiseless views (``views.mrcs`` of ../shared/bench/simulate.py),
at the amplitude fitted to the particles by least squares at their true poses. Each particle is
given the view of highest Gaussian log-likelihood, whitened by the simulation's own noise spectrum,
CTF applied, within a band of resolutions (``--band HI`` or ``LO:HI``, Å):

- default: at its TRUE in-plane angle and shift (the ceiling of the classification alone);
- ``--search``: over every view x in-plane angle (``--psi-step`` degrees) x integer shift within
  ``--max-shift`` pixels, as a program must (the ceiling of alignment and classification together);
  also the view of highest likelihood summed over those poses (``marginal_ari``), as a
  classifier that marginalises over the poses would choose (cryoclass's ``class_score marginal``).

With ``--search --refs data`` the references are not the true views but averages of the
particles themselves at their true views and poses (CTF-weighted, Wiener-filtered), each
particle scored against the averages of the half-set it is not in (``data_references``): the
best references a program could estimate from these particles, so the ceiling of any
data-driven classification. ``estep_true_views.py`` runs cryoclass's own E-step on the true
views.

A program that takes each particle's best pose, and must estimate its references, cannot beat these
figures on average (marginalising over the poses can do somewhat better than the search); the gap
between a program and them is what its references and its optimisation cost. Prints one JSON line per band:
ARI and accuracy against the true views, and with --search the fraction of particles whose
in-plane angle is within 10 degrees and whose shift is within 2 pixels of the truth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryoclass.quality.metrics import adjusted_rand_index

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"


def load(data: Path, n: int | None):
    """(sim params, truth table (first n rows), particles (n, D, D) float64, views (V, D, D))."""
    sim = json.loads((data / "sim_params.json").read_text())
    truth = pd.read_csv(data / "truth.csv")
    if n:
        truth = truth.iloc[:n]
    views = mrcfile.read(data / "views.mrcs").astype(np.float64)
    d = views.shape[-1]
    parts = np.zeros((len(truth), d, d))
    stack = truth["image_name"].str.split("@")
    for name, rows in truth.groupby(stack.str[1]):
        images = mrcfile.read(data / name)
        parts[rows.index.to_numpy()] = images[
            rows["image_name"].str.split("@").str[0].astype(int) - 1
        ]
    return sim, truth, parts, views


def band_weights(sim: dict, d: int, lo_A: float | None, hi_A: float) -> np.ndarray:
    """(D, D//2+1) rfft-grid weights: 1 / the simulation's noise PSD (relative), inside the band
    lo_A..hi_A (Å), 0 outside."""
    apix = float(sim["apix"])
    s = np.hypot(np.fft.fftfreq(d, apix)[:, None], (np.arange(d // 2 + 1) / (d * apix))[None])
    floor, falloff = sim["noise_floor"], sim["noise_falloff"]
    w = 1.0 / (floor + (1 - floor) * np.exp(-s * falloff))
    inside = (s <= 1.0 / hi_A) & ((s >= 1.0 / lo_A) if lo_A else True)
    return w * inside


def half_plane(w: np.ndarray) -> np.ndarray:
    """Weights for sums over the rfft half-plane that stand for the whole plane."""
    out = w.copy()
    d = w.shape[0]
    out[:, 1 : d // 2 + (d % 2)] *= 2
    return out


def ctfs(sim: dict, truth: pd.DataFrame, d: int) -> np.ndarray:
    """(n, D, D//2+1) the particles' CTFs (the simulation's own formula)."""
    import simulate

    return simulate.ctf_rfft(
        d,
        float(sim["apix"]),
        truth["defocus_u"],
        truth["defocus_v"],
        truth["defocus_angle"],
        sim["voltage_kv"],
        sim["cs"],
        sim["amplitude_contrast"],
        np.zeros(len(truth)),
        sim.get("bfactor", 0.0),
    )


def rfft(images: np.ndarray) -> torch.Tensor:
    """rfft2 of images centred at (D//2, D//2)."""
    return torch.as_tensor(np.fft.rfft2(np.fft.ifftshift(images, axes=(-2, -1))))


def at_true_poses(sim, truth, parts, views, bands):
    """(per band: (n, V) cross terms and norms) of every view at each particle's true pose."""
    import simulate

    d = views.shape[-1]
    kx = np.fft.rfftfreq(d)[None]
    ky = np.fft.fftfreq(d)[:, None]
    weights = [half_plane(band_weights(sim, d, lo, hi)) for lo, hi in bands]
    cross = np.zeros((len(bands), len(truth), len(views)))
    norm = np.zeros_like(cross)
    ctf = ctfs(sim, truth, d)
    X = rfft(parts).numpy()
    for i, row in enumerate(truth.itertuples()):
        model = np.stack([simulate.rotate_image(v, -row.psi_deg, order=1) for v in views])
        F = np.fft.rfft2(np.fft.ifftshift(model, axes=(-2, -1)))
        F = F * np.exp(-2j * np.pi * (kx * row.shift_x_px + ky * row.shift_y_px)) * ctf[i]
        for b, w in enumerate(weights):
            cross[b, i] = (w * np.real(np.conj(X[i]) * F)).sum((1, 2))
            norm[b, i] = (w * np.abs(F) ** 2).sum((1, 2))
    return cross, norm


def searched(sim, truth, parts, views, band, amplitude, psi_step, max_shift, group=None):
    """Best (view, psi degrees, shift (2,) pixels) of each particle over the whole pose grid,
    and the view of highest likelihood summed over the grid's poses (marginal). The sum needs
    the noise's absolute level: each particle's whitened power in the band (signal is a tenth
    of it or less at the bench's SNRs). views: (V, D, D), or (G, V, D, D) reference sets of
    which particle i is scored against set group[i]."""
    import simulate

    sets = views[None] if views.ndim == 3 else views
    group = np.zeros(len(truth), dtype=int) if group is None else group
    d = sets.shape[-1]
    n_views = sets.shape[1]
    psis = np.arange(0.0, 360.0, psi_step)
    Fs = [
        rfft(
            np.stack([[simulate.rotate_image(v, -p, order=1) for p in psis] for v in refs])
        ).reshape(n_views * len(psis), d, d // 2 + 1)
        * amplitude
        for refs in sets
    ]
    w = torch.as_tensor(band_weights(sim, d, *band))
    w2 = torch.as_tensor(half_plane(band_weights(sim, d, *band)))
    ctf = torch.as_tensor(ctfs(sim, truth, d))
    X = rfft(parts)
    c = np.arange(d)
    dy, dx = np.meshgrid((c + d // 2) % d - d // 2, (c + d // 2) % d - d // 2, indexing="ij")
    disc = torch.as_tensor(dx**2 + dy**2 <= max_shift**2)
    powers = [F.abs() ** 2 for F in Fs]
    view = np.zeros(len(truth), dtype=int)
    marginal = np.zeros(len(truth), dtype=int)
    n_coeffs = float((w2 / w.clamp_min(1e-30)).sum())  # band points of the whole plane
    psi = np.zeros(len(truth))
    shift = np.zeros((len(truth), 2))
    for i in range(len(truth)):
        F, power = Fs[group[i]], powers[group[i]]
        norm = torch.einsum("ij,rij->r", ctf[i] ** 2 * w2, power) / (d * d)
        # irfft2 sums the Hermitian plane: the value at t of sum_k X conj(CTF F) w e^{2 pi i k.t}
        cc = torch.fft.irfft2((X[i].conj() * ctf[i] * w)[None].conj() * F.conj(), s=(d, d))
        score = torch.where(disc[None], 2 * cc - norm[:, None, None], -torch.inf)
        level = float((w2 * X[i].abs() ** 2).sum()) / (d * d) / n_coeffs  # noise per coefficient
        marginal[i] = int(torch.logsumexp(score.reshape(n_views, -1) / (2 * level), 1).argmax())
        r, k = np.unravel_index(int(score.argmax()), score.shape[:1] + (d * d,))
        view[i], psi[i] = r // len(psis), psis[r % len(psis)]
        shift[i] = dx.flat[k], dy.flat[k]
    return view, psi, shift, marginal


def data_references(sim, truth, parts, views, amplitude):
    """(2, V, D, D) references estimated from the particles themselves, as well as any program
    could if it knew every particle's true view and pose: set h averages the particles of rows
    with index % 2 == h, each moved back to its view's frame (shift, then in-plane rotation
    undone), CTF-weighted and Wiener-filtered (signal power per shell from the true views at
    the fitted amplitude, noise power from the particles' whitened power and the simulation's
    noise shape: the best linear estimate). The CTF^2 sum is not rotated (the sets' astigmatism
    is ~1 % of the defocus). Particles scored against the other set's references are never in
    their own reference."""
    import simulate

    d = views.shape[-1]
    apix = float(sim["apix"])
    kx = np.fft.rfftfreq(d)[None]
    ky = np.fft.fftfreq(d)[:, None]
    ctf = ctfs(sim, truth, d)
    X = rfft(parts).numpy()
    w = band_weights(sim, d, None, 2 * apix)  # 1 / relative noise PSD (0 beyond Nyquist)
    inside = w > 0
    noise = (w * np.abs(X) ** 2)[:, inside].mean()  # absolute level of the relative PSD
    shell = np.minimum(np.rint(np.hypot(kx * d, ky * d)).astype(int), d // 2)
    tau2_k = np.abs(rfft(views).numpy() * amplitude) ** 2  # (V, D, D//2+1)
    tau2 = np.bincount(shell.ravel(), tau2_k.mean(0).ravel()) / np.bincount(shell.ravel())
    reg = np.where(inside, noise / np.where(inside, w, 1.0), np.inf) / np.maximum(
        tau2[shell], 1e-30
    )
    view = truth["view"].to_numpy()
    num = np.zeros((2, len(views), d, d))
    den = np.zeros((2, len(views), d, d // 2 + 1))
    for i, row in enumerate(truth.itertuples()):
        back = X[i] * ctf[i] * np.exp(2j * np.pi * (kx * row.shift_x_px + ky * row.shift_y_px))
        image = np.fft.fftshift(np.fft.irfft2(back, s=(d, d)))
        num[i % 2, view[i]] += simulate.rotate_image(image, row.psi_deg, order=1)
        den[i % 2, view[i]] += ctf[i] ** 2
    refs = rfft(num).numpy() / (den + reg)
    return np.fft.fftshift(np.fft.irfft2(refs, s=(d, d)), axes=(-2, -1))


def parse_band(text: str) -> tuple[float | None, float]:
    """'HI' or 'LO:HI' (Å) -> (LO or None, HI)."""
    lo, _, hi = text.rpartition(":")
    return (float(lo) if lo else None), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a simulate.py data set folder")
    ap.add_argument("--n", type=int, default=None, help="first n particles only")
    ap.add_argument("--band", action="append", help="HI or LO:HI in Å (default: 6 and 40:6)")
    ap.add_argument("--search", action="store_true", help="search the poses instead of true ones")
    ap.add_argument("--psi-step", type=float, default=4.0)
    ap.add_argument("--max-shift", type=float, default=6.0)
    ap.add_argument(
        "--refs",
        choices=("true", "data"),
        default="true",
        help="with --search: the true views, or references averaged from the particles at "
        "their true views and poses, each particle scored against the half-set it is not in",
    )
    args = ap.parse_args()
    if args.refs == "data" and not args.search:
        sys.exit("--refs data needs --search")
    if not BENCH.is_dir():
        sys.exit(f"{BENCH} not found: this benchmark needs ../shared/bench beside the checkout")
    sys.path.insert(0, str(BENCH))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bands = [parse_band(b) for b in (args.band or ["6", "40:6"])]
    # --refs data averages every particle of the set, so they are read once, all of them
    sim, truth_all, parts_all, views = load(args.data, None if args.refs == "data" else args.n)
    truth, parts = truth_all.iloc[: args.n], parts_all[: args.n]
    true_view = truth["view"].to_numpy()
    rows = np.arange(len(truth))
    cross, norm = at_true_poses(sim, truth, parts, views, [(None, bands[0][1]), *bands])
    amplitude = cross[0][rows, true_view].sum() / norm[0][rows, true_view].sum()
    refs, group, ref_amplitude = views, None, amplitude
    if args.refs == "data":  # from every particle of the set, not only the first n
        refs = data_references(sim, truth_all, parts_all, views, amplitude)
        group, ref_amplitude = 1 - np.arange(len(truth)) % 2, 1.0
    for b, band in enumerate(bands):
        out = {"data": str(args.data), "n": len(truth), "band_A": band, "amplitude": amplitude}
        out["refs"] = args.refs
        if args.search:
            view, psi, shift, marginal = searched(
                sim, truth, parts, refs, band, ref_amplitude, args.psi_step, args.max_shift, group
            )
            dpsi = np.abs((psi - truth["psi_deg"].to_numpy() + 180) % 360 - 180)
            dt = np.hypot(shift[:, 0] - truth["shift_x_px"], shift[:, 1] - truth["shift_y_px"])
            out.update(
                psi_within_10deg=float((dpsi < 10).mean()),
                shift_within_2px=float((dt < 2).mean()),
                marginal_ari=round(float(adjusted_rand_index(true_view, marginal)), 4),
                marginal_accuracy=round(float((marginal == true_view).mean()), 4),
            )
        else:
            view = (2 * amplitude * cross[b + 1] - amplitude**2 * norm[b + 1]).argmax(1)
        out.update(
            mode="search" if args.search else "true poses",
            ari=round(float(adjusted_rand_index(true_view, view)), 4),
            accuracy=round(float((view == true_view).mean()), 4),
        )
        print(json.dumps(out))


if __name__ == "__main__":
    main()
