"""The simulation itself, micrograph by micrograph.

:class:`Simulation` does everything that must be fixed before the first micrograph (map, views,
every particle's view / angles / shift / defocus, the noise level) from the seed, and then makes
any micrograph's particle stack on demand, independently of the others: micrograph k always holds
the same particles with the same noise, whatever order (or subset) is asked for. A data set on disk
(:func:`cryoclass.simulate.simulate_dataset`) and a stream delivering it over time are two
consumers of :func:`iter_micrographs`.

Image model per particle i (all in a box padded ``ctf_pad`` x, then cropped):

    clean_i    = T(shift_i) R(-psi_i) P(J_i V_view(i))     (Fourier slice, phase-ramp shift)
    signal_i   = CTF_i * clean_i                            (RELION sign; B-factor envelope)
    image_i    = normalise(signal_i + sigma * noise_i)      (coloured noise; RELION normalisation)

with P the projection, V the view's rotation, J a small random tilt (jitter), R(-psi) the in-plane
rotation (content turned clockwise by psi in (x, y)) and T the shift; protein is white (positive)
unless ``invert_contrast``. In RELION terms the particle has rlnAnglePsi = psi and
rlnOriginX/YAngst = -shift * pixel size relative to ``views.mrcs[view]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cryoclass.physics.ctf import ctf_rfft
from cryoclass.simulate.config import SimulationConfig
from cryoclass.simulate.geometry import matrix_to_euler, rot_z, rotvec_to_matrix
from cryoclass.simulate.maps import load_map
from cryoclass.simulate.membrane import add_belt, auto_tm_center
from cryoclass.simulate.noise import (
    coloured_noise,
    noise_amplitude,
    relion_normalise,
    signal_variance,
)
from cryoclass.simulate.phantom import PHANTOM_TM_CENTER_A, phantom_volume
from cryoclass.simulate.projection import FourierProjector, shift_ramp, spectra_to_images
from cryoclass.simulate.views import ViewSet, inplane_period, select_views

__all__ = ["Simulation", "Micrograph", "iter_micrographs", "micrograph_sizes", "build_volume"]

_BATCH = 256  # particles rendered per batch (memory bound: batch x (2D)^2 complex values)


@dataclass
class Micrograph:
    """One micrograph's particles.

    index: 0-based micrograph number; name: ``mic_0001`` (1-based); stack_path / star_path:
    paths relative to the data set folder (``Movies/mic_0001.mrcs`` / ``.star``); images: float32
    (n, D, D); table: RELION columns (optics merged per row), rlnImageName
    ``000001@Movies/mic_0001.mrcs``; truth: the ground truth of these particles (truth.csv rows).
    """

    index: int
    name: str
    stack_path: str
    star_path: str
    images: np.ndarray
    table: pd.DataFrame
    truth: pd.DataFrame


def micrograph_sizes(rng: np.random.Generator, n: int, per_mic: int | tuple[int, int]) -> list[int]:
    """Split n particles into micrographs: ``per_mic`` each (an int; the last takes the rest) or a
    uniform random count in [min, max] (a small remainder is merged into the previous one)."""
    if isinstance(per_mic, int):
        sizes = [per_mic] * (n // per_mic) + ([n % per_mic] if n % per_mic else [])
        return sizes
    lo, hi = int(per_mic[0]), int(per_mic[1])
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(lo, hi + 1)))
    sizes[-1] -= sum(sizes) - n
    if len(sizes) > 1 and sizes[-1] < lo // 2:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def build_volume(cfg: SimulationConfig) -> tuple[np.ndarray, dict]:
    """The map to project: the phantom or ``cfg.map_path`` at the requested box and pixel size,
    with the micelle-like belt when ``cfg.membrane``. Returns (float32 (D, D, D), info dict)."""
    if cfg.map_path:
        vol, info = load_map(cfg.map_path, cfg.box, cfg.pixel_size_A, cfg.map_pixel_size_A)
        info["map"] = str(cfg.map_path)
        default_tm = None
    else:
        vol = phantom_volume(cfg.box, cfg.pixel_size_A)
        info = {"map": "builtin:phantom"}
        default_tm = PHANTOM_TM_CENTER_A
    if cfg.membrane:
        tm = cfg.tm_center_A if cfg.tm_center_A is not None else default_tm
        if tm is None:
            tm = auto_tm_center(vol, cfg.pixel_size_A, cfg.belt_half_thickness_A)
        vol, belt = add_belt(
            vol,
            cfg.pixel_size_A,
            tm_center_A=tm,
            half_thickness_A=cfg.belt_half_thickness_A,
            width_A=cfg.belt_width_A,
            density=cfg.belt_density,
        )
        info["belt"] = belt
    return vol, info


class Simulation:
    """A simulated data set, fixed by its :class:`SimulationConfig` (and seed).

    Attributes (after construction): ``volume`` (D, D, D), ``views`` (:class:`ViewSet`),
    ``view_id`` / ``psi_deg`` / ``shifts_px`` / ``jitter_rad`` per particle, ``sizes`` (particles per
    micrograph), ``defocus_u/v`` (Å) and ``defocus_angle`` (deg) per particle, ``noise_sigma``
    (noise standard deviation before normalisation, in the units of the projected map).
    """

    def __init__(self, config: SimulationConfig) -> None:
        self.config = cfg = config.validate()
        self.volume, self.map_info = build_volume(cfg)
        self.projector = FourierProjector(self.volume, pad=cfg.ctf_pad)
        self.views: ViewSet = select_views(
            self.projector, cfg.n_views, cfg.pixel_size_A, n_candidates=cfg.view_candidates
        )
        self.psi_period = [inplane_period(v) for v in self.views.images]
        self._draw(np.random.default_rng([cfg.seed, 0]))
        self.noise_sigma = self._calibrate(np.random.default_rng([cfg.seed, 1]))
        self._amp = noise_amplitude(cfg.box, cfg.pixel_size_A, cfg.noise_floor, cfg.noise_falloff_A)
        p = cfg.ctf_pad * cfg.box
        self._amp_pad = noise_amplitude(p, cfg.pixel_size_A, cfg.noise_floor, cfg.noise_falloff_A)

    # ------------------------------------------------------------------ set-up
    def _draw(self, rng: np.random.Generator) -> None:
        """Every particle's view, psi, jitter, shift; micrograph sizes and defoci."""
        cfg = self.config
        n = cfg.n_particles
        self.view_id = rng.integers(0, cfg.n_views, n)
        self.psi_deg = np.round(rng.uniform(0.0, 360.0, n), 4)
        self.jitter_rad = rng.normal(0.0, np.deg2rad(cfg.jitter_deg), (n, 2))
        self.shifts_px = np.round(
            np.clip(rng.normal(0.0, cfg.shift_sd_px, (n, 2)), -cfg.shift_max_px, cfg.shift_max_px),
            4,
        )
        self.sizes = micrograph_sizes(rng, n, cfg.particles_per_micrograph)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        n_mic = len(self.sizes)
        lo, hi = cfg.defocus_range_um
        mean = rng.uniform(lo * 1e4, hi * 1e4, n_mic)
        astig = rng.uniform(0.0, cfg.max_astigmatism_A, n_mic)
        self.mic_defocus = np.stack(
            [mean + astig / 2, mean - astig / 2, rng.uniform(0.0, 180.0, n_mic)], axis=1
        )
        mic_of = np.repeat(np.arange(n_mic), self.sizes)
        ddf = rng.normal(0.0, cfg.defocus_spread_A, n)
        self.defocus_u = np.round(self.mic_defocus[mic_of, 0] + ddf, 2)
        self.defocus_v = np.round(self.mic_defocus[mic_of, 1] + ddf, 2)
        self.defocus_angle = np.round(self.mic_defocus[mic_of, 2], 2)
        self.micrograph_of = mic_of

    def rotations(self, idx: np.ndarray) -> np.ndarray:
        """(m, 3, 3) full rotations ``Rz(-psi) J V_view`` of particles ``idx``."""
        j = np.zeros((len(idx), 3))
        j[:, :2] = self.jitter_rad[idx]
        return (
            rot_z(-self.psi_deg[idx]) @ rotvec_to_matrix(j) @ self.views.matrices[self.view_id[idx]]
        )

    def render(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Noise-free particles ``idx``: (clean (m, D, D) without CTF, signal (m, D, D) with CTF,
        CTF on the padded rfft grid (m, P, P//2+1) or None when ``ctf`` is off)."""
        cfg = self.config
        p = self.projector.padded_box
        spec = self.projector.spectra(self.rotations(idx)) * shift_ramp(p, self.shifts_px[idx])
        clean = spectra_to_images(spec, p, cfg.box)
        if not cfg.ctf:
            return clean, clean, None
        ctf = ctf_rfft(
            p,
            cfg.pixel_size_A,
            self.defocus_u[idx],
            self.defocus_v[idx],
            self.defocus_angle[idx],
            cfg.voltage_kV,
            cfg.cs_mm,
            cfg.amp_contrast,
            0.0,
            cfg.bfactor_A2,
        )
        return clean, spectra_to_images(spec * ctf, p, cfg.box), ctf

    def _calibrate(self, rng: np.random.Generator) -> float:
        """Noise sd such that mean(signal variance in mask) / sigma^2 = snr, estimated on up to
        ``calibration_particles`` particles of the data set (all of them for small sets)."""
        cfg = self.config
        if cfg.noise_free:
            return 0.0
        n = cfg.n_particles
        k = min(n, cfg.calibration_particles)
        idx = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
        var = []
        with torch.no_grad():
            for s in range(0, k, _BATCH):
                clean, signal, _ = self.render(idx[s : s + _BATCH])
                var.append(signal_variance(signal, clean))
        return float(math.sqrt(float(torch.cat(var).mean()) / cfg.snr))

    # ------------------------------------------------------------------ micrographs
    @property
    def n_micrographs(self) -> int:
        return len(self.sizes)

    def micrograph(self, k: int) -> Micrograph:
        """Micrograph ``k`` (0-based): its particles' images, STAR table and truth."""
        cfg = self.config
        idx = np.arange(self.starts[k], self.starts[k + 1])
        rng = np.random.default_rng([cfg.seed, 2, k])
        images, sig_var = [], []
        with torch.no_grad():
            for s in range(0, len(idx), _BATCH):
                sub = idx[s : s + _BATCH]
                clean, signal, ctf = self.render(sub)
                sig_var.append(signal_variance(signal, clean))
                images.append(self._add_noise(signal, ctf, rng))
        imgs = torch.cat(images).numpy().astype(np.float32)
        if cfg.invert_contrast:
            imgs = -imgs
        snr = (
            torch.cat(sig_var).numpy() / self.noise_sigma**2
            if self.noise_sigma > 0
            else np.full(len(idx), np.inf)
        )
        name = f"mic_{k + 1:04d}"
        stack = f"Movies/{name}.mrcs"
        names = [f"{j + 1:06d}@{stack}" for j in range(len(idx))]
        return Micrograph(
            index=k,
            name=name,
            stack_path=stack,
            star_path=f"Movies/{name}.star",
            images=imgs,
            table=self._star_table(idx, names, name),
            truth=self._truth_table(idx, names, k, snr),
        )

    def _add_noise(
        self, signal: torch.Tensor, ctf: torch.Tensor | None, rng: np.random.Generator
    ) -> torch.Tensor:
        """signal + sigma * coloured noise (part of it through the CTF, as ice), then RELION-style
        normalisation (noise-free images: background mean only)."""
        cfg = self.config
        if self.noise_sigma == 0:
            return relion_normalise(signal, scale=False)
        m, d = signal.shape[0], cfg.box
        noise = coloured_noise(rng, m, d, self._amp)
        if ctf is not None and cfg.ice_fraction > 0:
            p = self.projector.padded_box
            ice = coloured_noise(rng, m, p, self._amp_pad)
            ice = torch.fft.irfft2(torch.fft.rfft2(ice) * ctf, s=(p, p))
            o = p // 2 - d // 2
            ice = ice[:, o : o + d, o : o + d]
            ice = ice / ice.flatten(1).std(dim=1).clamp_min(1e-12)[:, None, None]
            noise = math.sqrt(1 - cfg.ice_fraction) * noise + math.sqrt(cfg.ice_fraction) * ice
        return relion_normalise(signal + self.noise_sigma * noise)

    def _star_table(self, idx: np.ndarray, names: list[str], mic_name: str) -> pd.DataFrame:
        """RELION columns for particles ``idx`` (optics merged per row)."""
        cfg = self.config
        m = len(idx)
        cols = int(math.ceil(math.sqrt(m)))
        spacing = 2 * cfg.box
        pos = np.arange(m)
        return pd.DataFrame(
            {
                "rlnImageName": names,
                "rlnMicrographName": [f"Movies/{mic_name}.mrc"] * m,
                "rlnCoordinateX": ((pos % cols) + 1) * spacing + 0.0,
                "rlnCoordinateY": ((pos // cols) + 1) * spacing + 0.0,
                "rlnDefocusU": self.defocus_u[idx],
                "rlnDefocusV": self.defocus_v[idx],
                "rlnDefocusAngle": self.defocus_angle[idx],
                "rlnPhaseShift": 0.0,
                "rlnCtfBfactor": 0.0,
                "rlnOpticsGroup": 1,
                "rlnVoltage": float(cfg.voltage_kV),
                "rlnSphericalAberration": float(cfg.cs_mm),
                "rlnAmplitudeContrast": float(cfg.amp_contrast),
                "rlnImagePixelSize": float(cfg.pixel_size_A),
                "rlnImageSize": int(cfg.box),
            }
        )

    def _truth_table(
        self, idx: np.ndarray, names: list[str], k: int, snr: np.ndarray
    ) -> pd.DataFrame:
        """Ground truth for particles ``idx`` (the rows of truth.csv)."""
        apix = self.config.pixel_size_A
        eul = matrix_to_euler(self.rotations(idx))
        sx, sy = self.shifts_px[idx, 0], self.shifts_px[idx, 1]
        return pd.DataFrame(
            {
                "particle": idx,
                "image_name": names,
                "micrograph": k + 1,
                "view": self.view_id[idx],
                "jitter_deg": np.round(np.rad2deg(np.hypot(*self.jitter_rad[idx].T)), 3),
                "psi_deg": self.psi_deg[idx],
                "shift_x_px": sx,
                "shift_y_px": sy,
                "shift_x_A": np.round(sx * apix, 4),
                "shift_y_A": np.round(sy * apix, 4),
                "defocus_u": self.defocus_u[idx],
                "defocus_v": self.defocus_v[idx],
                "defocus_angle": self.defocus_angle[idx],
                "rot": np.round(eul[:, 0], 3),
                "tilt": np.round(eul[:, 1], 3),
                "psi3d": np.round(eul[:, 2], 3),
                "snr": np.round(snr, 5),
            }
        )

    def __iter__(self) -> Iterator[Micrograph]:
        for k in range(self.n_micrographs):
            yield self.micrograph(k)


def iter_micrographs(config: SimulationConfig | None = None, **params) -> Iterator[Micrograph]:
    """Yield the data set's micrographs in order (``config`` or :class:`SimulationConfig`
    keyword arguments). Memory is bounded by one micrograph's stack."""
    sim = Simulation(config or SimulationConfig(**params))
    yield from sim
