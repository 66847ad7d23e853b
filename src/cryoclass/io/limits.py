"""The resolution parameters checked against the images (box, pixel size) before any work.

A resolution coarser than the box leaves no Fourier component to align on: refused with one line
naming the parameter and its range. A ``max_res_A`` finer than the images hold is lowered to
what they hold, and said once.
"""

from __future__ import annotations

import logging
from os import PathLike

from cryoclass.config import Config
from cryoclass.io.errors import InputError

log = logging.getLogger("cryoclass")


def finest_A(box: int, pixel_size_A: float) -> float:
    """The finest resolution (Å) the engine uses for these images (just short of Nyquist)."""
    return box * pixel_size_A / max(box / 2.0 - 1.0, 1.0)


def check_resolution(
    config: Config, box: int, pixel_size_A: float, source: str | PathLike[str] | None = None
) -> list[str]:
    """InputError if max_res_A or init_res_A is coarser than the box (box x pixel size, Å);
    returns (and logs) a warning when max_res_A is finer than the images hold."""
    box_A = box * pixel_size_A
    for name in ("max_res_A", "init_res_A"):
        value = float(getattr(config, name))
        if value > box_A:
            flag = "--" + name.replace("_", "-")
            raise InputError(
                f"{flag} {value:g} Å is coarser than these images allow: it must lie between "
                f"{2 * pixel_size_A:g} Å (Nyquist, 2 x {pixel_size_A:g} Å/px) and {box_A:g} Å "
                f"(the box, {box} px x {pixel_size_A:g} Å/px)",
                file=source,
            )
    notes = []
    finest = finest_A(box, pixel_size_A)
    if config.max_res_A < finest:
        notes.append(
            f"--max-res-A {config.max_res_A:g} Å is finer than these images hold "
            f"(box {box} px at {pixel_size_A:g} Å/px): using {finest:.3g} Å"
        )
    if config.mask_diameter_A is not None and config.mask_diameter_A > box_A:
        notes.append(
            f"--mask-diameter-A {config.mask_diameter_A:g} Å is larger than the box "
            f"({box_A:g} Å): using {(box - 2) * pixel_size_A:g} Å"
        )
    for note in notes:
        log.warning("%s", note)
    return notes
