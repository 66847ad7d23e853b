"""The particle data model: a metadata table plus lazily loaded images."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .canonical import canonicalize
from .columns import SOURCE_ROW, STACK_INDEX, STACK_PATH, ctf_parameters
from .cs import read_cs_table
from .errors import InputError
from .problems import RowProblems
from .stacks import read_images, stack_shape
from .star import read_star
from .validate import unusable_images

IndexLike = Sequence[int] | np.ndarray

#: Upper bound on the bytes of float32 images :meth:`ParticleSet.scan_images` holds at once.
SCAN_BATCH_BYTES = 256 * 1024**2


@dataclass
class Reject:
    """A particle left out, and why. ``row`` is the 0-based data row in ``source`` (-1: a whole
    file); ``time``: when it was set aside (UTC, ISO 8601; '' if not recorded)."""

    source: str
    row: int
    image_name: str
    reason: str
    time: str = ""


@dataclass(eq=False)
class ParticleSet:
    """Particles: one table row each (canonical RELION 3.1 columns) + images read on demand.

    ``table`` holds rlnImageName, rlnDefocusU/V (Å), rlnDefocusAngle (deg),
    rlnPhaseShift (deg), rlnCtfBfactor (Å²), rlnOpticsGroup, rlnVoltage (kV),
    rlnSphericalAberration (mm), rlnAmplitudeContrast, rlnImagePixelSize (Å),
    rlnImageSize (px; 0 = unknown, stacks not opened), any other columns of the file,
    and the internal ``_stack_path`` (absolute), ``_stack_index`` (0-based) and
    ``_source_row`` (0-based data row in ``source``).
    """

    # Images never change once a row exists (files on disk), so the engine may keep them
    # prepared in memory between iterations (engine/prepared_cache.py).
    images_immutable = True

    table: pd.DataFrame
    optics: pd.DataFrame | None = None
    source: Path | None = None
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"ParticleSet({len(self)} particles from {self.source}, {len(self.rejects)} rejects)"

    # ------------------------------------------------------------------ optics

    def _groups(self) -> pd.Series:
        t = self.table
        return t["rlnOpticsGroup"] if "rlnOpticsGroup" in t.columns else pd.Series(1, index=t.index)

    def _per_group(self, col: str) -> pd.Series:
        return self.table[col].groupby(self._groups(), sort=True).unique()

    @property
    def box(self) -> int:
        """Image size D in pixels; :class:`InputError` if optics groups disagree (mixed box sizes)."""
        if not len(self):
            raise InputError("no particles, so no box size", file=self.source)
        values: dict[int, int] = {}
        for g, vals in self._per_group("rlnImageSize").items():
            for v in vals:
                v = int(v)
                if v <= 0:  # unknown: ask the stack of the group's first particle
                    pos = int(np.flatnonzero((self._groups() == g).to_numpy())[0])
                    try:
                        v = stack_shape(self.table[STACK_PATH].iloc[pos])[1]
                    except InputError as err:
                        row, name = self._where(pos)
                        raise InputError(
                            f"box size unknown (no rlnImageSize) and image {name}: {err}",
                            file=self.source,
                            row=row,
                        ) from None
                values.setdefault(v, int(g))
        if len(values) > 1:
            (a, ga), (b, gb) = list(values.items())[:2]
            raise InputError(
                f"mixed box sizes: optics group {ga} has {a} px images, optics group {gb} has {b} px",
                file=self.source,
            )
        return next(iter(values))

    @property
    def pixel_size_A(self) -> float:
        """Pixel size in Å; :class:`InputError` if optics groups disagree."""
        if not len(self):
            raise InputError("no particles, so no pixel size", file=self.source)
        values: dict[float, int] = {}
        for g, vals in self._per_group("rlnImagePixelSize").items():
            for v in vals:
                if not any(np.isclose(v, u, rtol=1e-5, atol=0) for u in values):
                    values[float(v)] = int(g)
        if len(values) > 1:
            (a, ga), (b, gb) = list(values.items())[:2]
            raise InputError(
                f"mixed pixel sizes: optics group {ga} has {a:g} Å, optics group {gb} has {b:g} Å",
                file=self.source,
            )
        return next(iter(values))

    # ------------------------------------------------------------------ images

    def _positions(self, idx: IndexLike) -> np.ndarray:
        pos = np.asarray(idx)
        if pos.dtype == bool:
            pos = np.flatnonzero(pos)
        pos = pos.astype(np.int64, copy=False).reshape(-1)
        n = len(self)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"particle index out of range for {n} particles")
        return np.where(pos < 0, pos + n, pos)

    def _where(self, pos: int) -> tuple[int, str]:
        """(0-based data row in the source file, rlnImageName) of particle ``pos``."""
        t = self.table
        row = int(t[SOURCE_ROW].iloc[pos]) if SOURCE_ROW in t.columns else pos
        return row, str(t["rlnImageName"].iloc[pos]) if "rlnImageName" in t.columns else ""

    def ctf_params(self, idx: IndexLike) -> dict[str, np.ndarray]:
        """CTF parameters of particles ``idx`` in physical units (``columns.ctf_parameters``:
        name -> (len(idx),) float64)."""
        return ctf_parameters(self.table.iloc[self._positions(idx)])

    def images(self, idx: IndexLike) -> np.ndarray:
        """Load images of particles ``idx`` (positions in ``table``): float32 ``(len(idx), D, D)``.

        Only those images are read (grouped by stack file, one positioned read per run
        of consecutive images); the output follows the order of ``idx``.
        """
        pos = self._positions(idx)
        paths = self.table[STACK_PATH].take(pos).to_numpy()
        index = self.table[STACK_INDEX].to_numpy(np.int64)[pos]
        out: np.ndarray | None = None
        first_box = (0, "")
        codes, uniques = pd.factorize(paths)
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(uniques)))))
        for k, stack in enumerate(uniques):
            sel = order[bounds[k] : bounds[k + 1]]
            try:
                imgs = read_images(stack, index[sel])
            except InputError as err:
                row, name = self._where(int(pos[sel[0]]))
                raise InputError(f"image {name}: {err}", file=self.source, row=row) from None
            if out is None:
                out = np.empty((len(pos),) + imgs.shape[1:], dtype=np.float32)
                first_box = (imgs.shape[1], str(stack))
            elif imgs.shape[1:] != out.shape[1:]:
                row, _ = self._where(int(pos[sel[0]]))
                raise InputError(
                    f"mixed box sizes: stack {first_box[1]} holds {first_box[0]} px images, "
                    f"stack {stack} holds {imgs.shape[1]} px",
                    file=self.source,
                    row=row,
                )
            out[sel] = imgs
        if out is None:
            d = self.box if len(self) else 0
            out = np.empty((0, d, d), dtype=np.float32)
        return out

    def iter_batches(
        self, batch_size: int, indices: IndexLike | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(idx, images)`` batches (``images`` float32 ``(len(idx), D, D)``) in order."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        pos = np.arange(len(self)) if indices is None else self._positions(indices)
        for start in range(0, len(pos), batch_size):
            chunk = pos[start : start + batch_size]
            yield chunk, self.images(chunk)

    def subset(self, idx: IndexLike) -> ParticleSet:
        """A new set with particles ``idx`` (positions or a boolean mask); rejects are kept."""
        pos = self._positions(idx)
        table = self.table.iloc[pos].reset_index(drop=True)
        return ParticleSet(
            table=table, optics=self.optics, source=self.source, rejects=list(self.rejects)
        )

    def fingerprint(self) -> str:
        """sha256 of the particles (absolute stack path, index, source row, in order) and of the
        number set aside: a resumed job must see the same ones, however the particle file's path
        is spelled."""
        t = self.table
        h = hashlib.sha256()
        h.update(f"{len(t)}|{len(self.rejects)}".encode())
        for col in (STACK_PATH, STACK_INDEX, SOURCE_ROW):
            if col in t.columns:
                h.update("\n".join(map(str, t[col].tolist())).encode())
        return h.hexdigest()

    def scan_images(
        self, batch_size: int = 1024, progress: Callable[[int, int], None] | None = None
    ) -> ParticleSet:
        """Read every image once (bounded memory) and drop unusable particles into ``rejects``.

        A particle is rejected when its image has NaN/Inf pixels or is constant (std 0).
        Returns the set without them; ``rejects`` lists each one with file and index.
        ``progress(done, total)`` is called after each batch.
        """
        n = len(self)
        if n == 0:
            return self.subset(np.arange(0))
        d = self.box
        batch = max(1, min(batch_size, SCAN_BATCH_BYTES // (4 * d * d)))
        keep = np.ones(n, dtype=bool)
        new: list[Reject] = []
        source = str(self.source) if self.source is not None else ""
        for idx, imgs in self.iter_batches(batch):
            for j, what in unusable_images(imgs):
                pos = int(idx[j])
                row, name = self._where(pos)
                stack = self.table[STACK_PATH].iloc[pos]
                image = int(self.table[STACK_INDEX].iloc[pos])
                reason = f"image {image} (0-based) of stack {stack} {what}"
                new.append(Reject(source=source, row=row, image_name=name, reason=reason))
                keep[pos] = False
            if progress is not None:
                progress(int(idx[-1]) + 1, n)
        out = self.subset(keep)
        out.rejects = list(self.rejects) + new
        return out


def read_particles(
    path: str | PathLike[str],
    project_dir: str | PathLike[str] | None = None,
    *,
    check_images: bool = True,
    defaults: Mapping[str, float | int | str] | None = None,
    on_bad: Literal["raise", "reject"] = "raise",
) -> ParticleSet:
    """Read a RELION .star (3.0, 3.1, 4, 5) or CryoSPARC .cs particle file.

    Relative image paths are resolved against ``project_dir`` (if given), then the
    metadata file's folder (for .cs also its parent, the CryoSPARC project folder),
    then the current directory; the first that exists wins.

    ``check_images`` (default) opens every stack header: the stack must exist, be a
    valid, complete, square MRC stack holding the referenced image, and all stacks must
    share one box size. Pass ``False`` for metadata-only use; images are then checked only
    when loaded. ``defaults`` fills columns the file lacks, e.g.
    ``{"rlnAmplitudeContrast": 0.1}``. Every particle's CTF values must be plausible
    (``validate.CTF_LIMITS``).

    Whole-file problems (unreadable or empty file, missing required column, mixed box
    sizes) raise :class:`InputError` naming the file and the problem. Per-particle problems
    (bad image name or index, missing/corrupt/truncated stack, non-numeric or absurd CTF
    value, duplicate) raise too with ``on_bad="raise"`` (naming the 0-based data row);
    with ``on_bad="reject"`` those particles are left out and listed in ``rejects`` with
    the reason, and the rest is returned; then a particle whose image is listed twice is
    set aside too (the first copy is kept).
    """
    if on_bad not in ("raise", "reject"):
        raise ValueError(f"on_bad must be 'raise' or 'reject', not {on_bad!r}")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".star", ".cs"):
        raise InputError(
            f"unsupported particle file type {p.suffix!r} (expected .star or .cs)", file=p
        )
    check_readable(p)
    folder = p.resolve().parent
    bases = [Path(project_dir).resolve()] if project_dir is not None else []
    optics = None
    if suffix == ".star":
        content = read_star(p)
        bases += [folder, Path.cwd()]
        raw, optics, relion30, cs_indices = (
            content.particles,
            content.optics,
            content.relion30,
            False,
        )
    else:
        raw = read_cs_table(p)
        bases += [folder, folder.parent, Path.cwd()]
        relion30, cs_indices = False, True
    if not len(raw):
        raise InputError("no particles: the particle table has no rows (empty input)", file=p)
    problems = RowProblems(p, len(raw), collect=on_bad == "reject")
    table = canonicalize(
        p,
        raw,
        bases=bases,
        relion30=relion30,
        check_images=check_images,
        defaults=defaults,
        cs_indices=cs_indices,
        problems=problems if on_bad == "reject" else None,
        check_values=True,
    )
    rejects = [_reject(p, raw, pos, problems.reasons[pos]) for pos in problems.bad]
    return ParticleSet(table=table, optics=optics, source=p, rejects=rejects)


def _reject(source: Path, raw: pd.DataFrame, pos: int, reason: str) -> Reject:
    name = str(raw["rlnImageName"].iloc[pos]) if "rlnImageName" in raw.columns else ""
    return Reject(source=str(source), row=int(pos), image_name=name, reason=reason)


def check_readable(path: Path) -> None:
    """:class:`InputError` unless ``path`` is a non-empty regular file that can be opened."""
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("is a folder, not a particle file", file=path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror or err})", file=path) from None
    if not head:
        raise InputError("empty file (0 bytes; still being written?)", file=path)
