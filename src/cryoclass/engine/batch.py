"""A batch of particles made ready for the engine: normalised, masked, Fourier-transformed.

Nothing here knows whether particles came from a file or a stream, or what format described them:
a ParticleBatch is built from an image array and the particles' CTF parameters in physical units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cryoclass.engine.fourier_cache import FourierCache
from cryoclass.physics.ctf import ctf_2d
from cryoclass.physics.fourier import Band, PaddedSpectrum, padded_fft, padded_window, rfft_band
from cryoclass.physics.masks import background_stats


@dataclass
class ParticleBatch:
    """n preprocessed particles.

    index: (n,) long, the particles' rows in the job's particle table; images: (n, D, D) float32,
    background-normalised (mean 0, sd 1 outside the mask) and soft-masked; ctf_params: name ->
    (n,) float tensors (units in the names); pixel_size_A: Å per pixel; skip_ctf: CTF taken as 1.
    fourier: where the band coefficients, CTF and padded transforms of these particles are kept
    between iterations (``index`` = rows of its source; None: computed for every batch).
    """

    index: torch.Tensor
    images: torch.Tensor
    ctf_params: dict[str, torch.Tensor]
    pixel_size_A: float
    skip_ctf: bool = False
    align_images: torch.Tensor | None = None
    fourier: FourierCache | None = None
    _padded: PaddedSpectrum | None = None

    @property
    def n(self) -> int:
        return int(self.index.numel())

    @property
    def box(self) -> int:
        return int(self.images.shape[-1])

    def rows(self, pos: slice | torch.Tensor) -> "ParticleBatch":
        """The particles at positions ``pos`` (a slice or (m,) long) as a batch of their own
        (the same values as preparing only them)."""
        return ParticleBatch(
            index=self.index[pos],
            images=self.images[pos],
            ctf_params={k: v[pos] for k, v in self.ctf_params.items()},
            pixel_size_A=self.pixel_size_A,
            skip_ctf=self.skip_ctf,
            align_images=None if self.align_images is None else self.align_images[pos],
            fourier=self.fourier,
        )

    def _derived(
        self, name: str, key: object, compute: Callable[[torch.Tensor | None], torch.Tensor]
    ) -> torch.Tensor:
        """compute(pos) -> values at positions pos of the batch (all for None), through the
        Fourier cache when the batch has one."""
        if self.fourier is None:
            return compute(None)
        return self.fourier.get(name, key, self.index, compute)

    @staticmethod
    def _at(t: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        return t if pos is None else t[pos]

    def band(self, band: Band, highpassed: bool = True) -> torch.Tensor:
        """(n, F) complex band coefficients of the images used for alignment: the copies
        high-passed at the minimum alignment resolution when there are any and ``highpassed``,
        else the images themselves."""
        use = highpassed and self.align_images is not None
        images = self.align_images if use else self.images
        return self._derived(
            "band_hp" if use else "band",
            (band.box, band.size),
            lambda pos: rfft_band(self._at(images, pos), band),
        )

    def band_ctf(self, band: Band) -> torch.Tensor:
        """(n, F) CTF at the band's points (``ctf(band.kx, band.ky)``)."""
        return self._derived(
            "band_ctf", (band.box, band.size), lambda pos: self.ctf(band.kx, band.ky, rows=pos)
        )

    def padded(self, radius: float) -> PaddedSpectrum:
        """Padded transforms for interpolation within radius (Fourier pixels); computed once
        per batch unless a wider radius is asked for later."""
        w = padded_window(self.box, 2, radius)
        if self._padded is None or self._padded.window < w:
            data = self._derived(
                "padded", w, lambda pos: padded_fft(self._at(self.images, pos), 2, radius).data
            )
            self._padded = PaddedSpectrum(data, 2)
        return self._padded

    def ctf(
        self,
        kx: torch.Tensor,
        ky: torch.Tensor,
        rows: torch.Tensor | None = None,
        extra_angle_deg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CTF at frequencies (kx, ky) in Fourier pixels, shape (F,) -> (m, F).

        rows: which particles (default all); extra_angle_deg (m,): the CTF pattern turned by this
        angle, i.e. CTF(R_-a k), used to evaluate it in a class's frame.
        """
        m = self.n if rows is None else int(rows.numel())
        if self.skip_ctf:
            return torch.ones(m, kx.numel(), dtype=torch.float32, device=kx.device)
        p = {k: (v if rows is None else v[rows]) for k, v in self.ctf_params.items()}
        if extra_angle_deg is not None:
            p["astig_angle_deg"] = p["astig_angle_deg"] + extra_angle_deg
        scale = 1.0 / (self.box * self.pixel_size_A)
        return ctf_2d(kx * scale, ky * scale, **p)


def ctf_tensors(
    ctf: dict[str, np.ndarray], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """CTF parameters in physical units (name -> (n,) array: defocus_u_A, defocus_v_A,
    astig_angle_deg, voltage_kV, cs_mm, amp_contrast, phase_shift_deg, bfactor_A2) as float32
    tensors on ``device``."""
    return {
        name: torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=torch.float32, device=device)
        for name, v in ctf.items()
    }


def prepare_batch(
    index: np.ndarray,
    images: np.ndarray,
    ctf: dict[str, np.ndarray],
    pixel_size_A: float,
    mask: torch.Tensor,
    mask_radius_px: float,
    invert_contrast: bool,
    skip_ctf: bool,
    device: torch.device,
    highpass_radius: float = 0.0,
) -> ParticleBatch:
    """Normalise, mask and package raw particle images (n, D, D) with their CTF parameters
    (physical units, see ``ctf_tensors``).

    Normalisation as RELION --norm: background outside mask_radius_px to mean 0, sd 1; then the
    soft mask (zero outside). invert_contrast multiplies by -1 (dark-protein stacks).
    highpass_radius (Fourier pixels, the minimum alignment resolution): the alignment copy of each
    image has every frequency below it removed *before* masking, and the scale comes from that
    copy's background, so that no pattern made of those frequencies can change a particle's
    alignment; the averaging copy keeps them.
    """
    x = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32, device=device)
    if invert_contrast:
        x = -x
    mean, sd = background_stats(x, mask_radius_px)
    align = None
    if highpass_radius > 0:
        # Both copies take the scale of the high-passed background, so that the averages are
        # on the scale of the images they are compared with, and a strong low-frequency belt
        # (which would dominate the raw background's sd) changes neither.
        xh = highpass(x, highpass_radius)
        _, sd = background_stats(xh, mask_radius_px)
        align = xh / sd.clamp_min(1e-6)[:, None, None] * mask
    x = (x - mean[:, None, None]) / sd.clamp_min(1e-6)[:, None, None] * mask
    return ParticleBatch(
        index=torch.as_tensor(np.asarray(index), dtype=torch.long, device=device),
        images=x,
        ctf_params=ctf_tensors(ctf, device),
        pixel_size_A=float(pixel_size_A),
        skip_ctf=skip_ctf,
        align_images=align,
    )


def highpass(images: torch.Tensor, radius: float) -> torch.Tensor:
    """(n, D, D) images with every Fourier component of |k| < radius (Fourier pixels) removed."""
    d = images.shape[-1]
    ky = torch.fft.fftfreq(d, d=1.0 / d, device=images.device)
    kx = torch.fft.rfftfreq(d, d=1.0 / d, device=images.device)
    keep = (torch.sqrt(kx[None, :] ** 2 + ky[:, None] ** 2) >= radius).float()
    return torch.fft.irfft2(torch.fft.rfft2(images) * keep, s=(d, d))
