"""Synthetic particles made independently of the engine's Fourier code: analytic shapes turned
and moved in real space (particle(x) = f(R_psi (x - t)), RELION's model with rlnAnglePsi = psi),
optionally multiplied by the CTF on the rfft grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cryoclass.engine.model import ModelState
from cryoclass.engine.mstep import Assignments, Statistics
from cryoclass.io.columns import ctf_parameters
from cryoclass.physics.ctf import ctf_2d, rfft_frequencies

BOX, APIX = 48, 3.0


def shape(k: int, x: torch.Tensor, y: torch.Tensor, sharpness: float = 1.0) -> torch.Tensor:
    """Three distinct, asymmetric shapes (pixels); sharpness > 1 makes the blobs smaller."""
    g = lambda cx, cy, s: torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (s / sharpness) ** 2))  # noqa: E731
    if k == 0:
        return g(-6, 0, 3.0) + g(6, 0, 3.0) + 0.8 * g(0, 7, 2.5)
    if k == 1:
        return g(0, 0, 4.0) + 0.9 * g(9, -5, 2.5)
    return g(-5, -5, 2.5) + g(0, 0, 2.5) + g(5, 5, 2.5) + 0.7 * g(-7, 6, 2.0)


def render(
    cls: np.ndarray, psi: np.ndarray, tx: np.ndarray, ty: np.ndarray, sharpness: float = 1.0
) -> torch.Tensor:
    c = torch.arange(BOX, dtype=torch.float32) - BOX // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    out = []
    for k, p, a, b in zip(cls, psi, tx, ty):
        r = np.deg2rad(p)
        xs, ys = x - a, y - b
        xr = np.cos(r) * xs - np.sin(r) * ys
        yr = np.sin(r) * xs + np.cos(r) * ys
        out.append(shape(int(k), xr, yr, sharpness))
    return torch.stack(out)


def apply_ctf(images: torch.Tensor, table: pd.DataFrame) -> torch.Tensor:
    fx, fy = rfft_frequencies(BOX, APIX)
    ctf = ctf_2d(
        fx,
        fy,
        table.rlnDefocusU.values,
        table.rlnDefocusV.values,
        table.rlnDefocusAngle.values,
        300.0,
        2.7,
        0.1,
    )
    ft = torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1))) * ctf
    return torch.fft.fftshift(torch.fft.irfft2(ft, s=(BOX, BOX)), dim=(-2, -1))


class ArraySource:
    """A particle source over in-memory images (the engine's ParticleSource protocol)."""

    def __init__(self, images: torch.Tensor, table: pd.DataFrame) -> None:
        self._images = images.numpy()
        self.table = table
        self.box = BOX
        self.pixel_size_A = APIX

    def __len__(self) -> int:
        return len(self.table)

    def images(self, idx: np.ndarray) -> np.ndarray:
        return self._images[np.asarray(idx)]

    def ctf_params(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return ctf_parameters(self.table.iloc[np.asarray(idx)])

    def add(self, pattern: torch.Tensor) -> None:
        """Add (n, D, D) to the raw images (as if it were in the micrograph)."""
        self._images = self._images + pattern.numpy()


def make_set(
    n: int, noise_sd: float = 0.0, ctf: bool = True, seed: int = 0, sharpness: float = 1.0
):
    """n particles of the 3 shapes; returns (source, truth dict)."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 3, n)
    psi = rng.uniform(0, 360, n)
    tx, ty = rng.integers(-2, 3, n).astype(float), rng.integers(-2, 3, n).astype(float)
    du = rng.uniform(8000, 25000, n)
    table = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1}@synthetic.mrcs" for i in range(n)],
            "rlnDefocusU": du,
            "rlnDefocusV": du - 200.0,
            "rlnDefocusAngle": rng.uniform(0, 180, n),
            "rlnVoltage": 300.0,
            "rlnSphericalAberration": 2.7,
            "rlnAmplitudeContrast": 0.1,
            "rlnImagePixelSize": APIX,
        }
    )
    img = render(cls, psi, tx, ty, sharpness)
    if ctf:
        img = apply_ctf(img, table)
    img = img + noise_sd * torch.as_tensor(rng.standard_normal(img.shape), dtype=torch.float32)
    return ArraySource(img, table), {"cls": cls, "psi": psi, "tx": tx, "ty": ty}


def true_assignments(truth: dict) -> Assignments:
    """Each particle of ``make_set``'s truth in its true class and pose, weight 1."""
    n = len(truth["cls"])
    f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return Assignments(
        row=torch.arange(n),
        cls=torch.as_tensor(truth["cls"]),
        psi_deg=f(truth["psi"]),
        tx=f(truth["tx"]),
        ty=f(truth["ty"]),
        weight=torch.ones(n),
        rot=torch.zeros(n, dtype=torch.long),
        shift=torch.zeros(n, dtype=torch.long),
    )


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def state_holding(stats: Statistics) -> ModelState:
    """A model of 8 x 8 px empty classes (1 Å/px) holding ``stats``: what a checkpoint test
    needs around the statistics it saves and loads."""
    k, shells = stats.weight.shape[-1], stats.noise_power.shape[-1]
    return ModelState(
        box=8,
        pixel_size_A=1.0,
        class_images=torch.zeros(k, 8, 8),
        stats=stats,
        sigma2=torch.ones(shells),
        r_work=3.0,
        resolution_A=torch.full((k,), 999.0),
    )
