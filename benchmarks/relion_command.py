"""The RELION 3.1 Class2D command line that the side-by-side benchmarks run: the options RELION's
GUI writes for a CPU Class2D job (../shared/bench/README.md), in one place.

    from relion_command import class2d_command
    cmd = class2d_command("relion_refine", star, out_prefix, classes=20, diameter_A=200, threads=2)
"""

from __future__ import annotations

from os import PathLike

#: Options common to every run: 2 x tau2_fudge, CTF, solvent flattened and zero-masked, psi 12°
#: with oversampling 1, offsets ±5 px in steps of 2, --norm and --scale.
GUI_OPTIONS = [
    "--tau2_fudge",
    "2",
    "--ctf",
    "--flatten_solvent",
    "--zero_mask",
    "--oversampling",
    "1",
    "--psi_step",
    "12",
    "--offset_range",
    "5",
    "--offset_step",
    "2",
    "--norm",
    "--scale",
]


def class2d_command(
    exe: str,
    star: str | PathLike,
    out_prefix: str | PathLike,
    classes: int,
    diameter_A: float,
    threads: int,
    iterations: int = 25,
    max_res_A: float | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """relion_refine's argument list for a Class2D run of ``iterations`` iterations on ``star``
    writing ``out_prefix``_itNNN_*; max_res_A (Å): --strict_highres_exp, None = RELION's own
    band; extra: further options (performance-only ones such as --pool or --preread_images)."""
    cmd = [exe, "--i", str(star), "--o", str(out_prefix), "--K", str(classes)]
    cmd += ["--iter", str(iterations), "--particle_diameter", str(diameter_A), *GUI_OPTIONS]
    if max_res_A is not None:
        cmd += ["--strict_highres_exp", str(max_res_A)]
    return cmd + list(extra or []) + ["--j", str(threads)]
