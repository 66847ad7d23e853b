"""CryoSPARC .cs particle files (read with cryosparc-tools) <-> the canonical RELION-named table.

Field mapping (CryoSPARC -> canonical):

* ``blob/path`` (leading ``>`` stripped) + ``blob/idx`` (0-based) -> ``rlnImageName``
  ``"{idx+1:06d}@{path}"`` (RELION style, 1-based); ``blob/psize_A`` -> rlnImagePixelSize (Å);
  ``blob/shape`` ``[ny, nx]`` -> rlnImageSize (px); ``blob/sign`` -> ``_cs_blob_sign``.
* ``ctf/df1_A``, ``ctf/df2_A`` -> rlnDefocusU, rlnDefocusV (Å); ``ctf/df_angle_rad`` ->
  rlnDefocusAngle (degrees); ``ctf/phase_shift_rad`` -> rlnPhaseShift (degrees);
  ``ctf/accel_kv`` -> rlnVoltage (kV); ``ctf/cs_mm`` -> rlnSphericalAberration (mm);
  ``ctf/amp_contrast`` -> rlnAmplitudeContrast; ``ctf/bfactor`` -> rlnCtfBfactor (Å², copied
  as is; the sign convention is assumed to match RELION's); ``ctf/exp_group_id`` (0-based)
  -> rlnOpticsGroup (1-based, as pyem's csparc2star does).
* ``location/micrograph_path`` -> rlnMicrographName; ``location/center_x_frac``,
  ``location/center_y_frac`` with ``location/micrograph_shape`` ``[ny, nx]`` ->
  rlnCoordinateX = x_frac * nx, rlnCoordinateY = y_frac * ny (pixels of the micrograph
  as CryoSPARC stores it, no Y flip. Note: pyem's csparc2star flips Y by default
  (1 - y_frac), for micrographs motion-corrected outside CryoSPARC; we do not, as the
  coordinates are metadata only here). The micrograph shape is kept in
  ``_micrograph_ny`` / ``_micrograph_nx`` so the fractions can be written back.
* ``alignments2D/class`` (0-based) -> rlnClassNumber (1-based);
  ``alignments2D/pose`` (radians, in-plane) -> rlnAnglePsi = degrees(pose);
  ``alignments2D/shift`` ``[x, y]`` (pixels at ``alignments2D/psize_A``) ->
  rlnOriginXAngst / rlnOriginYAngst = shift * alignments2D/psize_A (Å);
  ``alignments2D/class_posterior`` -> rlnMaxValueProbDistribution.

Sign-convention assumption (not verified against images here): CryoSPARC's 2D pose and
shift map to RELION's rlnAnglePsi and rlnOriginX/YAngst with no sign change, exactly as
pyem's ``csparc2star.py`` (the converter CryoSPARC users rely on) does:
psi_deg = degrees(pose); origin_A = shift_px * psize_A. Neither cryosparc-tools'
source nor its docs state a convention. ``uid`` is kept in ``_cs_uid``.

The few-valued float32 fields (kV, mm, amplitude contrast, Å/px) are read as their
shortest decimal (0.1, not 0.10000000149); writing them back as float32 restores the
same bits, so a .cs read -> write -> read round trip is lossless.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cryosparc.dataset import Dataset, generate_uids
from cryosparc.errors import DatasetLoadError

from .atomic import atomic_write
from .columns import CS_UID
from .errors import InputError
from .locate import parse_image_names

MICROGRAPH_NY = "_micrograph_ny"
MICROGRAPH_NX = "_micrograph_nx"
BLOB_SIGN = "_cs_blob_sign"

REQUIRED_FIELDS: tuple[str, ...] = (
    "blob/path",
    "blob/idx",
    "blob/psize_A",
    "ctf/df1_A",
    "ctf/df2_A",
    "ctf/df_angle_rad",
    "ctf/accel_kv",
    "ctf/cs_mm",
    "ctf/amp_contrast",
)
_CTF_DIRECT = {
    "ctf/df1_A": "rlnDefocusU",
    "ctf/df2_A": "rlnDefocusV",
    "ctf/bfactor": "rlnCtfBfactor",
}
_OPTICS_FIELDS = {
    "ctf/accel_kv": "rlnVoltage",
    "ctf/cs_mm": "rlnSphericalAberration",
    "ctf/amp_contrast": "rlnAmplitudeContrast",
}


def _strip_gt(values: Any) -> pd.Series:
    s = pd.Series(np.asarray(values, dtype=object)).astype(str)
    return s.str.replace(r"^>", "", regex=True)


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _f64_tidy(a: Any) -> np.ndarray:
    """float32 -> float64 by shortest decimal (0.1f -> 0.1, not 0.10000000149).

    Lossless: casting back to float32 gives the stored value. Used for the few-valued
    optics fields (kV, mm, amplitude contrast, Å/px), converting each distinct value once.
    """
    arr = np.asarray(a)
    if arr.dtype != np.float32:
        return arr.astype(np.float64)
    uniq, inverse = np.unique(arr, return_inverse=True)
    return uniq.astype(str).astype(np.float64)[inverse.reshape(arr.shape)]


def load_dataset(path: str | PathLike[str]) -> Dataset:
    """Load a .cs file with cryosparc-tools; :class:`InputError` if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        return Dataset.load(p)
    except (DatasetLoadError, OSError, ValueError) as err:
        cause = err.__cause__ or err
        raise InputError(f"cannot read CryoSPARC .cs file ({cause})", file=p) from None


def read_cs_table(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a CryoSPARC particle .cs file into a table with RELION 3.1 column names.

    Units: Å, degrees, kV, mm, pixels (see the module docstring for every field).
    Image paths are as in the file; they are resolved later.
    """
    p = Path(path)
    d = load_dataset(p)
    fields = set(d.fields())
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise InputError(f"missing required field(s) {', '.join(missing)} in the .cs file", file=p)
    n = len(d)
    if n == 0:
        raise InputError("no particles: the particle table has no rows (empty input)", file=p)
    idx = np.asarray(d["blob/idx"], dtype=np.int64)
    paths = _strip_gt(d["blob/path"])
    t = pd.DataFrame(index=pd.RangeIndex(n))
    t["rlnImageName"] = pd.Series(idx + 1).astype(str).str.zfill(6) + "@" + paths
    if "location/micrograph_path" in fields:
        t["rlnMicrographName"] = _strip_gt(d["location/micrograph_path"])
    for field, col in _CTF_DIRECT.items():
        if field in fields:
            t[col] = _f64(d[field])
    for field, col in _OPTICS_FIELDS.items():
        t[col] = _f64_tidy(d[field])
    t["rlnDefocusAngle"] = np.degrees(_f64(d["ctf/df_angle_rad"]))
    t["rlnPhaseShift"] = (
        np.degrees(_f64(d["ctf/phase_shift_rad"])) if "ctf/phase_shift_rad" in fields else 0.0
    )
    if "rlnCtfBfactor" not in t.columns:
        t["rlnCtfBfactor"] = 0.0
    if "ctf/exp_group_id" in fields:
        t["rlnOpticsGroup"] = np.asarray(d["ctf/exp_group_id"], dtype=np.int64) + 1
    else:
        t["rlnOpticsGroup"] = np.ones(n, dtype=np.int64)
    t["rlnImagePixelSize"] = _f64_tidy(d["blob/psize_A"])
    if "blob/shape" in fields:
        shape = np.asarray(d["blob/shape"], dtype=np.int64).reshape(n, -1)
        if shape.shape[1] != 2:
            raise InputError(
                f"blob/shape has {shape.shape[1]} values per particle, expected 2", file=p
            )
        nonsquare = shape[:, 0] != shape[:, 1]
        if nonsquare.any():
            row = int(np.flatnonzero(nonsquare)[0])
            raise InputError(
                f"non-square images: blob/shape is {shape[row, 1]}x{shape[row, 0]} px",
                file=p,
                row=row,
            )
        t["rlnImageSize"] = shape[:, 0]
    if "blob/sign" in fields:
        t[BLOB_SIGN] = _f64(d["blob/sign"])
    _read_location(d, fields, t)
    _read_alignments2d(d, fields, t)
    t[CS_UID] = np.asarray(d["uid"], dtype=np.uint64)
    return t


def _read_location(d: Dataset, fields: set[str], t: pd.DataFrame) -> None:
    need = {"location/center_x_frac", "location/center_y_frac", "location/micrograph_shape"}
    if not need <= fields:
        return
    shape = np.asarray(d["location/micrograph_shape"], dtype=np.int64).reshape(len(t), -1)
    t["rlnCoordinateX"] = _f64(d["location/center_x_frac"]) * shape[:, 1]
    t["rlnCoordinateY"] = _f64(d["location/center_y_frac"]) * shape[:, 0]
    t[MICROGRAPH_NY] = shape[:, 0]
    t[MICROGRAPH_NX] = shape[:, 1]


def _read_alignments2d(d: Dataset, fields: set[str], t: pd.DataFrame) -> None:
    if "alignments2D/class" in fields:
        t["rlnClassNumber"] = np.asarray(d["alignments2D/class"], dtype=np.int64) + 1
    if "alignments2D/pose" in fields:
        pose = _f64(d["alignments2D/pose"]).reshape(len(t), -1)[:, 0]
        t["rlnAnglePsi"] = np.degrees(pose)
    if "alignments2D/shift" in fields:
        shift = _f64(d["alignments2D/shift"]).reshape(len(t), -1)
        field = "alignments2D/psize_A" if "alignments2D/psize_A" in fields else "blob/psize_A"
        psize = _f64_tidy(d[field])
        t["rlnOriginXAngst"] = shift[:, 0] * psize
        t["rlnOriginYAngst"] = shift[:, 1] * psize
    if "alignments2D/class_posterior" in fields:
        t["rlnMaxValueProbDistribution"] = _f64(d["alignments2D/class_posterior"])


# ----------------------------------------------------------------------------- writing


def _col(table: pd.DataFrame, name: str, default: float | None = None) -> np.ndarray:
    """Column ``name`` as float64; ``default`` fills a missing column."""
    if name in table.columns:
        return table[name].to_numpy(dtype=np.float64)
    if default is None:
        raise KeyError(name)  # callers check required columns first
    return np.full(len(table), default, dtype=np.float64)


def _cs_fields(p: Path, table: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    n = len(table)
    need = [
        "rlnImageName",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
    ]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise InputError(f"cannot write .cs: table lacks {', '.join(missing)}", file=p)
    uid = table[CS_UID].to_numpy(dtype=np.uint64) if CS_UID in table.columns else generate_uids(n)
    paths, idx0 = parse_image_names(p, table["rlnImageName"])
    psize = _col(table, "rlnImagePixelSize")
    f32 = np.float32
    out: list[tuple[str, np.ndarray]] = [
        ("uid", uid),
        ("blob/path", np.asarray([str(x) for x in paths], dtype=object)),
        ("blob/idx", idx0.astype(np.uint32)),
    ]
    if "rlnImageSize" in table.columns:
        box = table["rlnImageSize"].to_numpy(dtype=np.int64)
        out.append(("blob/shape", np.stack([box, box], axis=1).astype(np.uint32)))
    out.append(("blob/psize_A", psize.astype(f32)))
    if BLOB_SIGN in table.columns:
        out.append(("blob/sign", _col(table, BLOB_SIGN).astype(f32)))
    og = (
        table["rlnOpticsGroup"].to_numpy(np.int64)
        if "rlnOpticsGroup" in table.columns
        else np.ones(n, np.int64)
    )
    out += [
        ("ctf/exp_group_id", np.clip(og - 1, 0, None).astype(np.uint32)),
        ("ctf/accel_kv", _col(table, "rlnVoltage").astype(f32)),
        ("ctf/cs_mm", _col(table, "rlnSphericalAberration").astype(f32)),
        ("ctf/amp_contrast", _col(table, "rlnAmplitudeContrast").astype(f32)),
        ("ctf/df1_A", _col(table, "rlnDefocusU").astype(f32)),
        ("ctf/df2_A", _col(table, "rlnDefocusV").astype(f32)),
        ("ctf/df_angle_rad", np.radians(_col(table, "rlnDefocusAngle")).astype(f32)),
        ("ctf/phase_shift_rad", np.radians(_col(table, "rlnPhaseShift", 0.0)).astype(f32)),
        ("ctf/bfactor", _col(table, "rlnCtfBfactor", 0.0).astype(f32)),
    ]
    if "rlnMicrographName" in table.columns:
        names = table["rlnMicrographName"].astype(str).to_numpy(dtype=object)
        out.append(("location/micrograph_path", names))
    if {"rlnCoordinateX", "rlnCoordinateY", MICROGRAPH_NY, MICROGRAPH_NX} <= set(table.columns):
        ny = table[MICROGRAPH_NY].to_numpy(np.int64)
        nx = table[MICROGRAPH_NX].to_numpy(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(("location/center_x_frac", (_col(table, "rlnCoordinateX") / nx).astype(f32)))
            out.append(("location/center_y_frac", (_col(table, "rlnCoordinateY") / ny).astype(f32)))
        out.append(("location/micrograph_shape", np.stack([ny, nx], axis=1).astype(np.uint32)))
    out += _alignments2d_fields(table, psize)
    return out


def _alignments2d_fields(table: pd.DataFrame, psize: np.ndarray) -> list[tuple[str, np.ndarray]]:
    f32 = np.float32
    out: list[tuple[str, np.ndarray]] = []
    if "rlnClassNumber" in table.columns:
        cls = table["rlnClassNumber"].to_numpy(np.int64) - 1
        out.append(("alignments2D/class", np.clip(cls, 0, None).astype(np.uint32)))
    if "rlnAnglePsi" in table.columns:
        out.append(("alignments2D/pose", np.radians(_col(table, "rlnAnglePsi")).astype(f32)))
    if "rlnOriginXAngst" in table.columns and "rlnOriginYAngst" in table.columns:
        shift = np.stack(
            [_col(table, "rlnOriginXAngst") / psize, _col(table, "rlnOriginYAngst") / psize], axis=1
        )
        out.append(("alignments2D/shift", shift.astype(f32)))
    if out:
        out.append(("alignments2D/psize_A", psize.astype(f32)))
    if "rlnMaxValueProbDistribution" in table.columns:
        out.append(
            ("alignments2D/class_posterior", _col(table, "rlnMaxValueProbDistribution").astype(f32))
        )
    return out


def write_cs(
    path: str | PathLike[str],
    table: pd.DataFrame,
    extra_fields: Mapping[str, Any] | None = None,
) -> None:
    """Write ``table`` (canonical columns) as a CryoSPARC particle .cs file (numpy format).

    Writes uid (``_cs_uid`` or new random uids), blob/* (path and 0-based idx from
    rlnImageName, shape, psize_A), ctf/* (radians for angles), location/* (micrograph
    path; fractional centres when the micrograph shape is known), and alignments2D/*
    when the table has them: class (0-based), pose (radians), shift (pixels), psize_A,
    class_posterior. ``extra_fields`` maps more field names to arrays of length
    ``len(table)`` (they override standard fields of the same name). Atomic.
    """
    p = Path(path)
    fields = dict(_cs_fields(p, table))
    for name, values in (extra_fields or {}).items():
        arr = np.asarray(values)
        if arr.shape[:1] != (len(table),):
            raise ValueError(
                f"extra field {name!r} has {arr.shape[:1]} rows, table has {len(table)}"
            )
        fields[name] = arr
    try:
        dset = Dataset(list(fields.items()))
    except (AssertionError, TypeError, ValueError) as err:
        raise InputError(f"cannot build .cs dataset ({err})", file=p) from None
    with atomic_write(p, "wb") as fh:
        dset.save(fh)
