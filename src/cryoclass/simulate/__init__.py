"""Simulated particle data sets with ground truth (phantom or map, views, CTF, coloured noise).

Public API::

    simulate_dataset(out_dir, n_particles=2000, box=64, pixel_size_A=3.0, ...) -> SimulationResult
    iter_micrographs(config | **params) -> Iterator[Micrograph]     (for streaming)
    Simulation(SimulationConfig(...))                                (set-up + micrograph(k))
    feed.feed_simulation(out_dir, sim_config, rate)    a pipeline writing micrographs into a
                                                       watched folder (for ``cryoclass stream``)

Conventions (the shared benchmark's, i.e. RELION's): image centre at pixel (D/2, D/2), x = column,
y = row; ``particle = T(shift) R(-psi) views[view]`` (RELION rlnAnglePsi = psi,
rlnOriginX/YAngst = -shift * pixel size); RELION CTF sign; protein white.
"""

from cryoclass.simulate.config import SimulationConfig
from cryoclass.simulate.dataset import SimulationResult, simulate_dataset, write_micrograph
from cryoclass.simulate.micrographs import Micrograph, Simulation, iter_micrographs

__all__ = [
    "SimulationConfig",
    "SimulationResult",
    "simulate_dataset",
    "write_micrograph",
    "Micrograph",
    "Simulation",
    "iter_micrographs",
]
