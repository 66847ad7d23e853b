"""Every parameter of a simulated data set, with its unit and default."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SimulationConfig"]


@dataclass
class SimulationConfig:
    """Parameters of :func:`cryoclass.simulate.simulate_dataset` (units in the names or below).

    Sample and views: ``map_path`` (MRC map; None = built-in phantom), ``map_pixel_size_A`` (if the
    header lacks it), ``membrane`` (add a micelle-like belt), ``belt_density`` (x protein peak),
    ``belt_half_thickness_A``, ``belt_width_A``, ``tm_center_A`` (z of the membrane slab, Å from the
    box centre; None = 0 for the phantom, the map's widest part for maps), ``n_views``,
    ``view_candidates`` (directions on the hemisphere the views are picked from).

    Particles: ``n_particles``, ``box`` (px, even), ``pixel_size_A``, ``jitter_deg`` (sd of the
    orientation jitter about each in-plane axis), ``shift_sd_px`` / ``shift_max_px`` (per-axis
    normal shift, clipped), ``particles_per_micrograph`` (an int, or a (min, max) range).

    Optics: ``ctf`` (False = no CTF at all), ``voltage_kV``, ``cs_mm``, ``amp_contrast``,
    ``bfactor_A2`` (envelope applied; the STAR says rlnCtfBfactor 0), ``defocus_range_um`` (mean
    defocus per micrograph, uniform), ``max_astigmatism_A`` (|U - V|, uniform), ``defocus_spread_A``
    (per-particle sd added to U and V), ``ctf_pad`` (the CTF is applied in a box this many times
    larger, then cropped).

    Noise: ``snr`` (signal variance in the particle mask / noise variance; ``math.inf`` = none),
    ``noise_floor`` and ``noise_falloff_A`` (PSD ``floor + (1 - floor) exp(-s falloff)``),
    ``ice_fraction`` (share of the noise variance that passes through the CTF, as ice does),
    ``calibration_particles`` (particles used to set the noise level), ``invert_contrast`` (write
    protein black instead of white), ``seed``.
    """

    n_particles: int = 2000
    box: int = 64
    pixel_size_A: float = 3.0
    n_views: int = 12
    view_candidates: int = 240
    snr: float = 0.05
    membrane: bool = False
    belt_density: float = 0.4
    belt_half_thickness_A: float = 24.0
    belt_width_A: float = 25.0
    tm_center_A: float | None = None
    map_path: str | None = None
    map_pixel_size_A: float | None = None
    particles_per_micrograph: int | tuple[int, int] = (100, 300)
    seed: int = 0
    invert_contrast: bool = False
    ctf: bool = True
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amp_contrast: float = 0.1
    bfactor_A2: float = 50.0
    defocus_range_um: tuple[float, float] = (0.8, 3.0)
    max_astigmatism_A: float = 500.0
    defocus_spread_A: float = 50.0
    jitter_deg: float = 2.0
    shift_sd_px: float = 2.0
    shift_max_px: float = 6.0
    noise_floor: float = 0.15
    noise_falloff_A: float = 25.0
    ice_fraction: float = 0.3
    ctf_pad: int = 2
    calibration_particles: int = 256

    def validate(self) -> "SimulationConfig":
        """Check ranges; raise ValueError naming the bad parameter. Returns self."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.n_particles >= 1, f"n_particles must be >= 1, got {self.n_particles}")
        need(self.box >= 16 and self.box % 2 == 0, f"box must be even and >= 16, got {self.box}")
        need(self.pixel_size_A > 0, f"pixel_size_A must be > 0, got {self.pixel_size_A}")
        need(
            1 <= self.n_views <= self.view_candidates,
            f"n_views must be in 1..view_candidates ({self.view_candidates}), got {self.n_views}",
        )
        need(self.snr > 0, f"snr must be > 0 (math.inf for no noise), got {self.snr}")
        need(
            0 <= self.belt_density <= 1, f"belt_density must be in [0, 1], got {self.belt_density}"
        )
        need(0 <= self.amp_contrast < 1, f"amp_contrast must be in [0, 1), got {self.amp_contrast}")
        need(
            0 <= self.ice_fraction <= 1, f"ice_fraction must be in [0, 1], got {self.ice_fraction}"
        )
        need(0 <= self.noise_floor <= 1, f"noise_floor must be in [0, 1], got {self.noise_floor}")
        need(
            isinstance(self.ctf_pad, int) and self.ctf_pad >= 2,
            f"ctf_pad must be an integer >= 2, got {self.ctf_pad}",
        )
        lo, hi = self.defocus_range_um
        need(0 < lo <= hi, f"defocus_range_um must be 0 < min <= max, got {self.defocus_range_um}")
        ppm = self.particles_per_micrograph
        if isinstance(ppm, int):
            need(ppm >= 1, f"particles_per_micrograph must be >= 1, got {ppm}")
        else:
            need(
                len(ppm) == 2 and 1 <= ppm[0] <= ppm[1],
                f"particles_per_micrograph must be an int or (min, max), got {ppm}",
            )
        need(self.shift_max_px >= 0 and self.shift_sd_px >= 0, "shifts must be >= 0")
        need(self.calibration_particles >= 1, "calibration_particles must be >= 1")
        return self

    @property
    def noise_free(self) -> bool:
        return math.isinf(self.snr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all parameters (inf SNR written as the string "inf")."""
        d = asdict(self)
        if math.isinf(self.snr):
            d["snr"] = "inf"
        d["particles_per_micrograph"] = (
            list(self.particles_per_micrograph)
            if not isinstance(self.particles_per_micrograph, int)
            else self.particles_per_micrograph
        )
        d["defocus_range_um"] = list(self.defocus_range_um)
        return d
