"""Column names of the canonical particle table (RELION 3.1 labels) and their dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Canonical float columns and their units: Å, degrees, kV, mm, Å², Å/pixel.
FLOAT_COLUMNS: tuple[str, ...] = (
    "rlnDefocusU",  # Å
    "rlnDefocusV",  # Å
    "rlnDefocusAngle",  # degrees
    "rlnPhaseShift",  # degrees
    "rlnCtfBfactor",  # Å^2
    "rlnVoltage",  # kV
    "rlnSphericalAberration",  # mm
    "rlnAmplitudeContrast",  # fraction
    "rlnImagePixelSize",  # Å / pixel
)
#: Canonical integer columns.
INT_COLUMNS: tuple[str, ...] = ("rlnOpticsGroup", "rlnImageSize")

#: Columns every particle file must provide (directly, via the optics table or ``defaults``).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "rlnImageName",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
)

#: Labels that belong to the RELION 3.1+ optics table (one value per optics group).
OPTICS_COLUMNS: frozenset[str] = frozenset(
    {
        "rlnOpticsGroupName",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
        "rlnImageSize",
        "rlnImageDimensionality",
        "rlnMicrographOriginalPixelSize",
        "rlnMicrographPixelSize",
        "rlnCtfDataAreCtfPremultiplied",
        "rlnBeamTiltX",
        "rlnBeamTiltY",
        "rlnOddZernike",
        "rlnEvenZernike",
        "rlnMagMat00",
        "rlnMagMat01",
        "rlnMagMat10",
        "rlnMagMat11",
        "rlnMtfFileName",
        "rlnMicrographBinning",
        "rlnOpticsStigmaX",
        "rlnOpticsStigmaY",
        "rlnAmplitudeCorrelationMaskedMaps",
    }
)

#: Labels kept as text even when every value looks like a number (e.g. micrograph "1").
STRING_COLUMNS: tuple[str, ...] = (
    "rlnImageName",
    "rlnImageOriginalName",
    "rlnMicrographName",
    "rlnMicrographMovieName",
    "rlnMicrographMetadata",
    "rlnOpticsGroupName",
    "rlnGroupName",
    "rlnOddZernike",
    "rlnEvenZernike",
    "rlnMtfFileName",
    "rlnCtfImage",
    "rlnReferenceImage",
    "rlnCtfPowerSpectrum",
    "rlnTomoName",
    "rlnTomoParticleName",
)

#: Internal columns (never written to STAR files).
STACK_PATH = "_stack_path"  # absolute resolved path of the image stack (str)
STACK_INDEX = "_stack_index"  # 0-based image index in that stack (int64)
SOURCE_ROW = "_source_row"  # 0-based data row in the file the particle was read from (int64)
CS_UID = "_cs_uid"  # CryoSPARC uid (uint64), .cs input only


def is_internal(column: str) -> bool:
    """True for cryoclass' internal ``_``-prefixed columns."""
    return column.startswith("_")


def normalize_dtypes(table: pd.DataFrame) -> None:
    """Cast the canonical columns present in ``table`` to float64 / int64 / str in place."""
    for col in FLOAT_COLUMNS:
        if col in table.columns:
            table[col] = table[col].astype(np.float64)
    for col in INT_COLUMNS:
        if col in table.columns:
            table[col] = table[col].astype(np.int64)
    for col in (STACK_INDEX, SOURCE_ROW):
        if col in table.columns:
            table[col] = table[col].astype(np.int64)
    for col in STRING_COLUMNS + (STACK_PATH,):
        if col in table.columns:
            table[col] = table[col].astype(str)


#: The CTF parameters the engine takes (name with unit) and their canonical columns.
CTF_COLUMNS: dict[str, str] = {
    "defocus_u_A": "rlnDefocusU",
    "defocus_v_A": "rlnDefocusV",
    "astig_angle_deg": "rlnDefocusAngle",
    "voltage_kV": "rlnVoltage",
    "cs_mm": "rlnSphericalAberration",
    "amp_contrast": "rlnAmplitudeContrast",
    "phase_shift_deg": "rlnPhaseShift",
    "bfactor_A2": "rlnCtfBfactor",
}
#: Values of CTF parameters a table may leave out (the others are NaN when missing).
CTF_DEFAULTS: dict[str, float] = {"phase_shift_deg": 0.0, "bfactor_A2": 0.0}


def ctf_parameters(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The CTF parameters of table rows in physical units: name (see CTF_COLUMNS) -> (n,)
    float64 (Å, degrees, kV, mm, fraction, Å^2)."""
    out = {}
    for name, col in CTF_COLUMNS.items():
        if col in rows.columns:
            out[name] = np.array(rows[col], dtype=np.float64)
        else:
            out[name] = np.full(len(rows), CTF_DEFAULTS.get(name, np.nan))
    return out
