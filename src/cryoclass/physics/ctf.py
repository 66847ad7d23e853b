"""The contrast transfer function (CTF), RELION / CryoSPARC convention, as batched torch maths.

Conventions (the same as RELION's ``CTF::getCTF`` and the shared benchmark):

* Frequencies are spatial frequencies in 1/Å. ``freq_x`` runs along image columns, ``freq_y``
  along image rows; the azimuth of a frequency is ``theta = atan2(freq_y, freq_x)``.
* Defocus ``defocus_u_A`` / ``defocus_v_A`` in Å, positive = underfocus (RELION ``rlnDefocusU/V``).
  The defocus at azimuth theta is
  ``dz(theta) = (U + V)/2 + (U - V)/2 * cos(2 (theta - astig_angle))``, with ``astig_angle`` in
  degrees measured from the x (column) axis towards y (RELION ``rlnDefocusAngle``).
* ``CTF = sin(chi)``,
  ``chi = pi*lambda*dz*s^2 - pi/2*Cs*lambda^3*s^4 + phase_shift + atan(w / sqrt(1 - w^2))``
  (RELION computes ``-sin(K1 deltaf s^2 + K2 s^4 - K5 - K3)`` with ``deltaf = -dz``: the same),
  times ``exp(-B s^2 / 4)`` when ``bfactor_A2 != 0``.
  Cs is given in mm and converted to Å (x 1e7); lambda is the relativistic electron wavelength.
* Sign: for underfocus the CTF is positive (≈ w) at low frequency. Multiplying a *white-protein*
  (positive density) projection by this CTF gives the white-protein particle image that RELION's
  extraction (with contrast inversion, its default) produces and that RELION's model assumes.

The same CTF is produced by teamtomo's ``torch_ctf.calculate_ctf_2d`` (see
``tests/physics/test_ctf.py``) with: ``defocus = (U + V) / 2 / 1e4`` (µm), ``astigmatism =
(U - V) / 2 / 1e4`` (µm, must be >= 0: swap U/V and add 90° to the angle otherwise),
``astigmatism_angle = astig_angle`` (degrees from the column axis, despite its docstring),
``rfft=True, fftshift=False`` for the ``torch.fft.rfft2`` layout; no sign change is needed.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

ArrayLike = Union[float, int, np.ndarray, torch.Tensor, list]

__all__ = ["electron_wavelength_A", "ctf_2d", "rfft_frequencies", "ctf_rfft"]


def electron_wavelength_A(voltage_kV: ArrayLike) -> ArrayLike:
    """Relativistic electron wavelength in Å.

    ``lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2))) = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))``
    with V in volts: 0.019687 Å at 300 kV, 0.025079 Å at 200 kV.

    Args:
        voltage_kV: acceleration voltage in kV (float, numpy array or torch tensor).

    Returns:
        The wavelength in Å, of the same kind (float, array, tensor) as the input.
    """
    if isinstance(voltage_kV, torch.Tensor):
        v = voltage_kV.to(torch.float64) * 1e3
        return 12.2643247 / torch.sqrt(v * (1.0 + 0.978466e-6 * v))
    v = np.asarray(voltage_kV, dtype=np.float64) * 1e3
    lam = 12.2643247 / np.sqrt(v * (1.0 + 0.978466e-6 * v))
    return float(lam) if lam.ndim == 0 else lam


def _batch(params: list[ArrayLike], device: torch.device) -> list[torch.Tensor]:
    """Per-particle parameters -> float64 tensors of one common shape (n,) (n = 1 for scalars)."""
    ts = [
        torch.as_tensor(
            np.array(p) if isinstance(p, (list, np.ndarray)) else p, dtype=torch.float64
        )
        .to(device)
        .reshape(-1)
        for p in params
    ]
    n = max(t.numel() for t in ts)
    out = []
    for t in ts:
        if t.numel() not in (1, n):
            raise ValueError(
                f"per-particle CTF parameters must have one common length; got "
                f"{[int(x.numel()) for x in ts]}"
            )
        out.append(t.expand(n) if t.numel() == 1 else t)
    return out


def ctf_2d(
    freq_x: torch.Tensor,
    freq_y: torch.Tensor,
    defocus_u_A: ArrayLike,
    defocus_v_A: ArrayLike,
    astig_angle_deg: ArrayLike,
    voltage_kV: ArrayLike,
    cs_mm: ArrayLike,
    amp_contrast: ArrayLike,
    phase_shift_deg: ArrayLike = 0.0,
    bfactor_A2: ArrayLike = 0.0,
) -> torch.Tensor:
    """CTF values of n particles on a grid of 2D spatial frequencies (RELION sign convention).

    Args:
        freq_x: spatial frequency along image columns, 1/Å, any shape S (broadcast with freq_y).
        freq_y: spatial frequency along image rows, 1/Å, shape broadcastable with freq_x.
        defocus_u_A: defocus U in Å (positive = underfocus), shape (n,) or scalar.
        defocus_v_A: defocus V in Å, shape (n,) or scalar.
        astig_angle_deg: astigmatism angle (direction of U) in degrees from the column (x) axis
            towards the row (y) axis, shape (n,) or scalar.
        voltage_kV: acceleration voltage in kV, (n,) or scalar.
        cs_mm: spherical aberration in mm, (n,) or scalar.
        amp_contrast: amplitude contrast fraction w in [0, 1), (n,) or scalar.
        phase_shift_deg: extra phase shift (phase plate) in degrees, (n,) or scalar.
        bfactor_A2: B-factor of the envelope ``exp(-B s^2 / 4)`` in Å^2, (n,) or scalar.

    Returns:
        float32 tensor of shape (n, *S) on the device of ``freq_x``; n = 1 when every parameter
        is a scalar. Positive (≈ w) at low frequency for underfocus.
    """
    fx = torch.as_tensor(freq_x)
    fy = torch.as_tensor(freq_y, device=fx.device)
    fx, fy = torch.broadcast_tensors(fx.to(torch.float32), fy.to(torch.float32))
    device = fx.device
    du, dv, ang, kv, cs, w, phs, bf = _batch(
        [
            defocus_u_A,
            defocus_v_A,
            astig_angle_deg,
            voltage_kV,
            cs_mm,
            amp_contrast,
            phase_shift_deg,
            bfactor_A2,
        ],
        device,
    )
    if torch.any((w < 0) | (w >= 1)):
        raise ValueError("amp_contrast must lie in [0, 1)")
    lam = electron_wavelength_A(kv)
    # per-particle coefficients in float64, then float32 for the grid work
    k_defocus = math.pi * lam  # * dz * s^2
    k_cs = 0.5 * math.pi * (cs * 1e7) * lam**3  # * s^4
    k_const = torch.deg2rad(phs) + torch.atan(w / torch.sqrt(1.0 - w * w))
    mean_dz = 0.5 * (du + dv)
    half_astig = 0.5 * (du - dv)
    ang2 = 2.0 * torch.deg2rad(ang)
    # chi is linear in five per-particle coefficients times five per-frequency terms
    # (cos 2(theta - a) = cos 2theta cos 2a + sin 2theta sin 2a), so the grid work is one small
    # matrix product and one sine per point, however many particles.
    coef = torch.stack(
        [
            k_defocus * mean_dz,
            k_defocus * half_astig * torch.cos(ang2),
            k_defocus * half_astig * torch.sin(ang2),
            -k_cs,
            k_const,
        ],
        dim=1,
    )
    s2 = (fx * fx + fy * fy).reshape(-1)
    theta2 = 2.0 * torch.atan2(fy, fx).reshape(-1)
    basis = torch.stack(
        [s2, s2 * torch.cos(theta2), s2 * torch.sin(theta2), s2 * s2, torch.ones_like(s2)]
    )  # (5, P)
    ctf = torch.sin(coef.to(torch.float32) @ basis)  # (n, P)
    if torch.any(bf != 0):
        ctf = ctf * torch.exp(-bf.to(torch.float32)[:, None] * s2[None] / 4.0)
    return ctf.reshape(-1, *fx.shape)


def rfft_frequencies(
    box: int, pixel_size_A: float, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial frequencies (1/Å) of the ``torch.fft.rfft2`` grid of a box x box image.

    Args:
        box: image size in pixels.
        pixel_size_A: pixel size in Å.
        device: torch device of the result.

    Returns:
        ``(fx, fy)``, two float32 tensors of shape (box, box // 2 + 1): ``fy`` varies along dim 0
        (``fftfreq(box, pixel_size_A)``, rows), ``fx`` along dim 1 (``rfftfreq``, columns).
    """
    fy1 = torch.fft.fftfreq(box, d=pixel_size_A, device=device, dtype=torch.float32)
    fx1 = torch.fft.rfftfreq(box, d=pixel_size_A, device=device, dtype=torch.float32)
    fy, fx = torch.meshgrid(fy1, fx1, indexing="ij")
    return fx, fy


def ctf_rfft(
    box: int,
    pixel_size_A: float,
    defocus_u_A: ArrayLike,
    defocus_v_A: ArrayLike,
    astig_angle_deg: ArrayLike,
    voltage_kV: ArrayLike,
    cs_mm: ArrayLike,
    amp_contrast: ArrayLike,
    phase_shift_deg: ArrayLike = 0.0,
    bfactor_A2: ArrayLike = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """:func:`ctf_2d` on the ``rfft2`` grid of a box x box image: float32 (n, box, box // 2 + 1).

    Multiply ``torch.fft.rfft2(torch.fft.ifftshift(img, dim=(-2, -1)))`` by it to apply the CTF to
    images centred at pixel (box // 2, box // 2). Units as in :func:`ctf_2d`.
    """
    fx, fy = rfft_frequencies(box, pixel_size_A, device=device)
    return ctf_2d(
        fx,
        fy,
        defocus_u_A,
        defocus_v_A,
        astig_angle_deg,
        voltage_kV,
        cs_mm,
        amp_contrast,
        phase_shift_deg,
        bfactor_A2,
    )
