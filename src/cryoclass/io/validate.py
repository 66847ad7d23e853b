"""Per-particle plausibility checks: CTF values and duplicated particles on a canonical table,
and images a job cannot classify (``unusable_images``: NaN/Inf pixels, constant), for batch and
streaming alike.

Each check flags rows in a :class:`~cryoclass.io.problems.RowProblems` (raise on the first, or
collect them so the particles are set aside). Units: Å, kV, mm, degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .columns import STACK_INDEX, STACK_PATH
from .problems import RowProblems


@dataclass(frozen=True)
class Limit:
    """A plausible range ``low < v <= high`` (``low_inclusive``: ``low <= v``), with its unit
    and what the value is."""

    low: float
    high: float
    unit: str
    what: str
    low_inclusive: bool = False
    high_inclusive: bool = True

    def bad(self, v: np.ndarray) -> np.ndarray:
        lo = v < self.low if self.low_inclusive else v <= self.low
        hi = v > self.high if self.high_inclusive else v >= self.high
        return ~np.isfinite(v) | lo | hi

    def describe(self) -> str:
        lo = "<=" if self.low_inclusive else "<"
        hi = "<=" if self.high_inclusive else "<"
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.low:g} {lo} value {hi} {self.high:g}{unit}"


#: Plausible CTF values. Defocus follows RELION's sign (positive = underfocus); 20 µm is far
#: beyond any single-particle data. An amplitude contrast of 1 leaves no phase contrast.
CTF_LIMITS: dict[str, Limit] = {
    "rlnDefocusU": Limit(0.0, 200_000.0, "Å", "defocus (RELION sign: positive = underfocus)"),
    "rlnDefocusV": Limit(0.0, 200_000.0, "Å", "defocus (RELION sign: positive = underfocus)"),
    "rlnVoltage": Limit(0.0, 1000.0, "kV", "acceleration voltage"),
    "rlnSphericalAberration": Limit(0.0, 20.0, "mm", "spherical aberration", low_inclusive=True),
    "rlnAmplitudeContrast": Limit(
        0.0, 1.0, "", "amplitude contrast fraction", low_inclusive=True, high_inclusive=False
    ),
    "rlnImagePixelSize": Limit(0.0, 1000.0, "Å", "pixel size"),
}
#: Columns whose values come from the optics group (RELION 3.1+), named in messages.
_OPTICS = frozenset(
    {"rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize"}
)
#: Optional CTF columns that must at least be finite numbers when present.
FINITE_COLUMNS = ("rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBfactor")


def _show(v: object) -> str:
    return repr(v) if isinstance(v, str) else f"{v}"


def check_ctf(table: pd.DataFrame, problems: RowProblems) -> None:
    """Flag rows whose CTF values are absurd (outside :data:`CTF_LIMITS`) or not numbers."""
    for col, lim in CTF_LIMITS.items():
        if col not in table.columns:
            continue
        raw = table[col]
        v = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        group = table["rlnOpticsGroup"] if "rlnOpticsGroup" in table.columns else None

        def reason(
            pos: int,
            col: str = col,
            lim: Limit = lim,
            v: np.ndarray = v,
            raw: pd.Series = raw,
            group: pd.Series | None = group,
        ) -> str:
            where = (
                f" (optics group {group.iloc[pos]})" if group is not None and col in _OPTICS else ""
            )
            value = (
                f"{np.format_float_positional(v[pos], trim='-')} {lim.unit}".rstrip()
                if np.isfinite(v[pos])
                else _show(raw.iloc[pos])
            )
            return f"{col} {value}{where} is not a plausible {lim.what}: expected {lim.describe()}"

        problems.flag(lim.bad(v), reason)
    for col in FINITE_COLUMNS:
        if col not in table.columns:
            continue
        raw = table[col]
        v = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        problems.flag(
            ~np.isfinite(v),
            lambda pos, col=col, raw=raw: f"{col} is not a finite number ({_show(raw.iloc[pos])})",
        )


#: Defocus (Å) that real data lies within; values outside are likely in another unit.
DEFOCUS_USUAL_A = (1_000.0, 100_000.0)


def defocus_unit_note(table: pd.DataFrame, rows: np.ndarray | None = None) -> str | None:
    """A warning when plausible-looking defocus values lie outside DEFOCUS_USUAL_A: which
    column, how many rows (the first few named, 0-based) and the likely unit; else None.
    ``rows``: the rows' 0-based data rows in the file (default 0..n-1)."""
    lo, hi = DEFOCUS_USUAL_A
    for col in ("rlnDefocusU", "rlnDefocusV"):
        if col not in table.columns:
            continue
        v = pd.to_numeric(table[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        odd = np.isfinite(v) & (v > 0) & ((v < lo) | (v > hi))
        if not odd.any():
            continue
        pos = np.flatnonzero(odd)
        src = np.arange(len(v)) if rows is None else np.asarray(rows)
        named = ", ".join(str(int(src[p])) for p in pos[:5]) + (", ..." if pos.size > 5 else "")
        med = float(np.median(v[pos]))
        unit = (
            "µm (x 10,000 for Å)"
            if med < 20
            else "nm (x 10 for Å)"
            if med < lo
            else "not Å (over 10 µm)"
        )
        return (
            f"{col} of {pos.size} of {len(v)} rows (0-based data rows {named}) lies outside "
            f"{lo:,.0f}-{hi:,.0f} Å (median {med:g}): it looks like {unit}; cryoclass "
            "reads defocus in Å, as RELION writes it"
        )
    return None


def check_duplicates(table: pd.DataFrame, problems: RowProblems) -> None:
    """Flag every later row that refers to the same image (stack file + index) as an earlier one.

    The first occurrence is kept; each duplicate names it (0-based data row).
    """
    if not len(table) or STACK_PATH not in table.columns:
        return
    key = table[STACK_PATH].astype(str) + "\0" + table[STACK_INDEX].astype(str)
    dup = key.duplicated(keep="first").to_numpy()
    if not dup.any():
        return
    first = pd.Series(np.arange(len(key)), index=key.to_numpy()).groupby(level=0).first()
    names = table["rlnImageName"].astype(str) if "rlnImageName" in table.columns else key

    def reason(pos: int) -> str:
        return (
            f"duplicate particle: image {names.iloc[pos]} is also row "
            f"{problems.row_of(int(first[key.iloc[pos]]))} (0-based data row); the first one is kept"
        )

    problems.flag(dup, reason)


def unusable_images(images: np.ndarray, with_value: bool = True) -> list[tuple[int, str]]:
    """(position, what is wrong) of each image of ``images`` (n, D, D) that cannot be
    classified: 'has NaN/Inf pixels', or 'is constant (std 0, every pixel V)' ('is constant
    (std 0)' without ``with_value``). The images are not copied."""
    if not len(images):
        return []
    flat = images.reshape(len(images), -1)
    finite = np.isfinite(flat).all(axis=1)
    with np.errstate(invalid="ignore"):  # rows with NaN compare False
        constant = finite & (flat.max(axis=1) == flat.min(axis=1))
    out = []
    for j in np.flatnonzero(~finite | constant):
        if not finite[j]:
            out.append((int(j), "has NaN/Inf pixels"))
        else:
            out.append(
                (
                    int(j),
                    f"is constant (std 0, every pixel {flat[j, 0]:g})"
                    if with_value
                    else "is constant (std 0)",
                )
            )
    return out
