"""RELION STAR files: read 3.0 (one particle block) and 3.1+/4/5 (optics + particles); write 3.1.

Reading returns the particle block with the optics-group values merged into each row;
unit conversions and image lookup happen in :mod:`cryoclass.io.canonical`.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from .atomic import atomic_write
from .columns import OPTICS_COLUMNS, STRING_COLUMNS, is_internal
from .errors import InputError, show_value

#: Column order of the optics block written by :func:`write_star`.
_OPTICS_ORDER = (
    "rlnOpticsGroup",
    "rlnOpticsGroupName",
    "rlnAmplitudeContrast",
    "rlnSphericalAberration",
    "rlnVoltage",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
)
_OPTICS_INT = (
    "rlnOpticsGroup",
    "rlnImageSize",
    "rlnImageDimensionality",
    "rlnCtfDataAreCtfPremultiplied",
)
_STAR_VERSION = "# version 30001"


@dataclass
class StarContent:
    """What :func:`read_star` found in a STAR file."""

    particles: pd.DataFrame  # one row per particle, optics values merged in
    optics: pd.DataFrame | None  # the optics block as read (RELION 3.1+), else None
    relion30: bool  # True for a RELION 3.0-style file (no optics block)


def _as_frame(block: pd.DataFrame | dict) -> pd.DataFrame:
    if isinstance(block, pd.DataFrame):
        return block.reset_index(drop=True)
    return pd.DataFrame([block])  # a single-row block written without loop_


def _read_blocks(path: Path) -> dict[str, pd.DataFrame]:
    if not path.is_file():
        raise InputError("file not found", file=path)
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(STRING_COLUMNS))
    except (ValueError, OSError, IndexError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise InputError(
            f"cannot parse STAR file ({type(err).__name__}: {err})", file=path
        ) from None
    if not blocks:
        raise InputError("no data blocks found (not a STAR file?)", file=path)
    return {name: _as_frame(block) for name, block in blocks.items() if block is not None}


def _pick_particle_block(path: Path, blocks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    if "particles" in blocks:
        return blocks["particles"]
    candidates = {k: v for k, v in blocks.items() if k != "optics"}
    with_images = [k for k, v in candidates.items() if "rlnImageName" in v.columns]
    if len(with_images) == 1:
        return candidates[with_images[0]]
    if len(with_images) > 1:
        names = ", ".join(f"data_{k}" for k in with_images)
        raise InputError(f"several particle blocks ({names}); expected one", file=path)
    if len(candidates) == 1:
        return next(iter(candidates.values()))  # validated later (reports missing rlnImageName)
    names = ", ".join(f"data_{k}" for k in blocks)
    raise InputError(f"no particle block with rlnImageName among {names}", file=path)


def _check_complete_rows(path: Path, particles: pd.DataFrame) -> None:
    """InputError naming the first row that lacks its last values (a file cut short): STAR
    values are never empty, so missing trailing values mean the row is incomplete."""
    if not len(particles) or not particles.shape[1]:
        return
    missing = particles.isna().to_numpy()
    if not missing[:, -1].any():
        return
    n_given = particles.shape[1] - np.argmin(missing[:, ::-1], axis=1)
    n_given[missing.all(axis=1)] = 0
    cut = missing[:, -1] & np.array([missing[i, n:].all() for i, n in enumerate(n_given)])
    if cut.any():
        row = int(np.flatnonzero(cut)[0])
        raise InputError(
            f"incomplete row: {n_given[row]} of {particles.shape[1]} values, "
            f"{', '.join(particles.columns[n_given[row] :][:3])}"
            f"{'...' if particles.shape[1] - n_given[row] > 3 else ''} missing "
            "(is the file cut short?)",
            file=path,
            row=row,
        )


def _merge_optics(path: Path, particles: pd.DataFrame, optics: pd.DataFrame) -> pd.DataFrame:
    if "rlnOpticsGroup" not in optics.columns:
        raise InputError("data_optics has no rlnOpticsGroup column", file=path)
    groups = pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce")
    if groups.isna().any() or groups.duplicated().any():
        raise InputError("data_optics: rlnOpticsGroup values must be unique integers", file=path)
    optics = optics.assign(rlnOpticsGroup=groups.astype(np.int64))
    particles = particles.copy()
    if "rlnOpticsGroup" not in particles.columns:
        if len(optics) != 1:
            raise InputError(
                f"data_particles has no rlnOpticsGroup column but data_optics defines {len(optics)} groups",
                file=path,
            )
        particles["rlnOpticsGroup"] = int(optics["rlnOpticsGroup"].iloc[0])
    pg = pd.to_numeric(particles["rlnOpticsGroup"], errors="coerce")
    unknown = ~pg.isin(optics["rlnOpticsGroup"])
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(
            f"rlnOpticsGroup {show_value(particles['rlnOpticsGroup'].iloc[row])} is not defined in data_optics",
            file=path,
            row=row,
        )
    particles["rlnOpticsGroup"] = pg.astype(np.int64)
    by_group = optics.set_index("rlnOpticsGroup")
    for col in by_group.columns:
        if col not in particles.columns:  # a per-particle value wins over the group value
            particles[col] = particles["rlnOpticsGroup"].map(by_group[col])
    return particles


def read_star(path: str | PathLike[str]) -> StarContent:
    """Read a RELION particle STAR file (3.0, 3.1, 4 or 5).

    Returns the particle rows with every optics-group column merged into each row
    (values as in the file: Å, degrees, kV, mm), the optics block as read, and
    whether the file is RELION 3.0-style.
    """
    p = Path(path)
    blocks = _read_blocks(p)
    particles = _pick_particle_block(p, blocks)
    _check_complete_rows(p, particles)
    optics = blocks.get("optics")
    if optics is None:
        return StarContent(particles=particles.copy(), optics=None, relion30=True)
    return StarContent(
        particles=_merge_optics(p, particles, optics), optics=optics.copy(), relion30=False
    )


# ----------------------------------------------------------------------------- writing


def _format_for_star(df: pd.DataFrame) -> pd.DataFrame:
    """Floats as their shortest round-trip text (lossless), bools as 0/1."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(np.int64)
        elif pd.api.types.is_float_dtype(s):
            out[col] = s.to_numpy(dtype=np.float64).astype(str)
    return out


def _one_per_group(table: pd.DataFrame, groups: pd.Series, col: str) -> bool:
    return bool((table[col].groupby(groups, sort=True).nunique(dropna=False) <= 1).all())


def _group_values(path: Path, table: pd.DataFrame, groups: pd.Series, col: str) -> pd.Series:
    """One value of ``col`` per optics group; :class:`InputError` if a group holds several."""
    s = table[col]
    counts = s.groupby(groups, sort=True).nunique(dropna=False)
    if (counts > 1).any():
        g = int(counts.index[np.flatnonzero(counts.to_numpy() > 1)[0]])
        values = pd.unique(s[groups == g])[:3]
        raise InputError(
            f"optics group {g} has several values of {col} ({', '.join(map(str, values))}); "
            "give them separate rlnOpticsGroup numbers before writing",
            file=path,
        )
    return s.groupby(groups, sort=True).first()


def build_optics(
    path: Path, table: pd.DataFrame, optics: pd.DataFrame | None
) -> tuple[pd.DataFrame, list[str]]:
    """Build the data_optics block for ``table``; return it and the columns it takes over.

    Known optics labels in ``table`` must have one value per rlnOpticsGroup (else
    :class:`InputError`). Other columns of ``optics`` move to the optics block only if
    they too have one value per group; otherwise they stay per particle.
    """
    groups = (
        table["rlnOpticsGroup"].astype(np.int64)
        if "rlnOpticsGroup" in table.columns
        else pd.Series(np.ones(len(table), np.int64), index=table.index)
    )
    given = set() if optics is None else set(optics.columns) - {"rlnOpticsGroup"}
    values: dict[str, pd.Series] = {}
    for c in table.columns:
        if is_internal(c) or c == "rlnOpticsGroup":
            continue
        if c in OPTICS_COLUMNS or (c in given and _one_per_group(table, groups, c)):
            values[c] = _group_values(path, table, groups, c)
    group_ids = np.unique(groups.to_numpy())
    from_table = pd.DataFrame(values, index=pd.Index(group_ids, dtype=np.int64))
    if optics is not None and len(optics):
        out = optics.copy()
        out["rlnOpticsGroup"] = pd.to_numeric(out["rlnOpticsGroup"]).astype(np.int64)
        out = out.set_index("rlnOpticsGroup")
        out = out.reindex(list(out.index) + [g for g in group_ids if g not in out.index])
        for c, series in from_table.items():
            if c not in out.columns:
                out[c] = pd.Series(np.nan, index=out.index, dtype=object)
            merged = out[c].astype(object)
            merged.loc[series.index] = series.astype(object)
            out[c] = merged.astype(series.dtype) if merged.notna().all() else merged
    else:
        out = from_table
    out.index.name = "rlnOpticsGroup"
    out = out.reset_index()
    default_names = "opticsGroup" + out["rlnOpticsGroup"].astype(str)
    if "rlnOpticsGroupName" in out.columns:
        names = out["rlnOpticsGroupName"]
        out["rlnOpticsGroupName"] = names.where(names.notna(), default_names).astype(str)
    else:
        out["rlnOpticsGroupName"] = default_names.astype(str)
    if "rlnImageDimensionality" not in out.columns:
        out["rlnImageDimensionality"] = 2
    for c in _OPTICS_INT:
        if c in out.columns and out[c].notna().all():
            out[c] = out[c].astype(np.int64)
    order = [c for c in _OPTICS_ORDER if c in out.columns]
    order += [c for c in out.columns if c not in _OPTICS_ORDER]
    return out[order], list(values)


def write_star(
    path: str | PathLike[str], table: pd.DataFrame, optics: pd.DataFrame | None = None
) -> None:
    """Write ``table`` as a RELION 3.1 particle STAR file (data_optics + data_particles).

    The optics block comes from the merged per-particle optics columns (one row per
    rlnOpticsGroup: name, voltage kV, Cs mm, amplitude contrast, pixel size Å, box px,
    dimensionality 2, plus any other optics labels present); ``optics``, when given,
    supplies extra columns and group names. Internal ``_`` columns and the optics
    columns are left out of data_particles. Floats are written losslessly. Atomic.

    rlnImageName is written as it is in ``table`` (paths as in the source file), so
    read the result with ``project_dir`` if it lands in another folder.
    """
    p = Path(path)
    if "rlnImageName" not in table.columns:
        raise InputError("cannot write STAR: table has no rlnImageName column", file=p)
    optics_block, moved = build_optics(p, table, optics)
    particles = table.drop(columns=[c for c in table.columns if is_internal(c) or c in moved])
    if "rlnOpticsGroup" not in particles.columns:
        particles["rlnOpticsGroup"] = 1
    text = starfile.to_string(
        {"optics": _format_for_star(optics_block), "particles": _format_for_star(particles)},
        float_format="%.6f",
        sep="\t",
    )
    lines = [
        f"{_STAR_VERSION}\n\n{line}" if line in ("data_optics", "data_particles") else line
        for line in text.splitlines()
    ]
    with atomic_write(p) as fh:
        fh.write("\n".join(lines) + "\n")
