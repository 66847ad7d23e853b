"""What cryoclass's own E-step makes of perfect references: one E-step of the engine on every
particle of a simulated set, with the set's TRUE views as the class references.

    python benchmarks/estep_true_views.py --data DATA/strudel6272/s0 [--scale 0.2 --scale 0.4]
        [--noise initial|shape|JOB_DIR] [--fade 5] [--refs JOB_DIR] [--exhaustive]

``oracle_ceiling.py`` scores the particles with its own likelihood; this runs the engine's
(``Engine.labels``: its pose grid, coarse-to-fine search, masks, CTF and noise model), so the two
together tell whether a job's shortfall lies in its E-step or in the references its EM converges
to. Prints one JSON line per scale: the ARI of the labels against the true views.

- ``--scale``: the references are views.mrcs x scale (the particles are background-normalised,
  so the simulation's amplitude does not carry over; scan it, the score is sensitive to it).
- ``--noise``: the noise spectrum sigma2: ``initial`` (the engine's first estimate, the
  particles' power spectrum, signal included), ``shape`` (the simulation's noise shape, scaled to
  the initial estimate's finest shells), or a finished job's folder (its checkpoint's sigma2).
- ``--fade R``: the references kept whole to R Fourier pixels and faded over the next
  REFERENCE_TAPER, as a job fades a class at its resolution.
- ``--refs JOB_DIR``: score with that job's final class averages instead of the true views
  (a check: at scale 1 it gives back about the job's own ARI).
- ``--exhaustive``: every rotation and shift instead of the coarse-to-fine search.

One thread, CPU; about a minute per scale for 3,000 particles of box 64.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoclass.config import Config  # noqa: E402
from cryoclass.engine.em import REFERENCE_TAPER, Engine  # noqa: E402
from cryoclass.engine.model import ModelState  # noqa: E402
from cryoclass.engine.mstep import lowpass_by_class  # noqa: E402
from cryoclass.engine.source import load_batch  # noqa: E402
from cryoclass.io.particles import read_particles  # noqa: E402
from cryoclass.outputs.checkpoint import read_checkpoint  # noqa: E402
from cryoclass.physics.fourier import band_to_image, rfft_band, shell_sum  # noqa: E402
from cryoclass.quality.metrics import adjusted_rand_index  # noqa: E402

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"


def job_model(job: Path) -> ModelState:
    """The final model of a finished job (JOB/checkpoint.pt)."""
    return read_checkpoint(job / "checkpoint.pt").model


def faded(engine: Engine, images: torch.Tensor, radius: float) -> torch.Tensor:
    """(V, D, D) images kept whole to radius (Fourier pixels) and faded over the next
    REFERENCE_TAPER pixels, as a job fades a class at its resolution (``lowpass_by_class``)."""
    grid = engine.grid
    radii = torch.full((images.shape[0],), radius)
    kept = lowpass_by_class(rfft_band(images, grid), grid, radii, REFERENCE_TAPER)
    return band_to_image(kept, grid).real.float()


def noise_shape(sim: dict, engine: Engine) -> torch.Tensor:
    """(n_shells,) the simulation's own noise power spectrum (``simulate.noise_amplitude_rfft``
    squared), averaged over the engine's shells; relative units."""
    import simulate

    amp = simulate.noise_amplitude_rfft(
        engine.box, engine.apix, sim["noise_falloff"], sim["noise_floor"]
    )
    grid = engine.grid
    power = torch.as_tensor(amp.astype(np.float64) ** 2).flatten()[grid.flat_index][None]
    count = shell_sum(torch.ones_like(power), grid.shell, engine.n_shells)
    return (shell_sum(power, grid.shell, engine.n_shells) / count.clamp_min(1))[0].float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a simulate.py data set folder")
    ap.add_argument("--scale", type=float, action="append", help="reference scale (default 0.4)")
    ap.add_argument("--noise", default="initial", help="initial, shape, or a job folder")
    ap.add_argument("--fade", type=float, default=None, help="fade radius (Fourier pixels)")
    ap.add_argument("--refs", type=Path, default=None, help="a job folder: its class averages")
    ap.add_argument("--exhaustive", action="store_true")
    args = ap.parse_args()
    if not BENCH.is_dir():
        sys.exit(f"{BENCH} not found: this benchmark needs ../shared/bench beside the checkout")
    sys.path.insert(0, str(BENCH))
    torch.set_num_threads(1)
    data = args.data
    pset = read_particles(data / "particles.star", on_bad="reject").scan_images()
    truth = pd.read_csv(data / "truth.csv")
    if (
        len(pset) != len(truth)
        or not (pset.table["rlnImageName"].to_numpy() == truth["image_name"].to_numpy()).all()
    ):
        sys.exit("particles.star and truth.csv do not list the same particles in one order")
    if args.refs is not None:
        refs = job_model(args.refs).class_images.float().cpu()
    else:
        refs = torch.as_tensor(mrcfile.read(data / "views.mrcs").astype(np.float32))
    cfg = Config(n_classes=len(refs), init_res_A=1.0, exhaustive_search=args.exhaustive, seed=0)
    engine = Engine(cfg, pset.box, pset.pixel_size_A, torch.device("cpu"))
    n = len(pset)
    engine.initialise(load_batch(engine, pset, np.arange(min(cfg.minibatch_size, n))))
    state = engine.state
    state.r_work = engine.r_max  # the whole band to max_res_A, as a job's band once grown
    if args.fade is not None:
        refs = faded(engine, refs, args.fade)
    if args.noise == "shape":
        shape = noise_shape(json.loads((data / "sim_params.json").read_text()), engine)
        state.sigma2 = shape * float(state.sigma2[-5:].mean() / shape[-5:].mean())
    elif args.noise != "initial":
        state.sigma2 = job_model(Path(args.noise)).sigma2.float().cpu()
    batch = load_batch(engine, pset, np.arange(n))
    true_view = truth["view"].to_numpy()
    for scale in args.scale or [0.4]:
        images = refs * scale
        state.class_images = images if args.refs is not None else images * engine.mask
        state.alignment_images = None
        labels = engine.labels(batch)
        print(
            json.dumps(
                {
                    "data": str(data),
                    "refs": str(args.refs or "true views"),
                    "scale": scale,
                    "noise": args.noise,
                    "fade_px": args.fade,
                    "exhaustive": args.exhaustive,
                    "ari": round(float(adjusted_rand_index(true_view, labels)), 4),
                }
            )
        )


if __name__ == "__main__":
    main()
