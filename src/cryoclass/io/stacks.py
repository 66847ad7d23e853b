"""MRC image stacks: lazy reading of just the images asked for, and atomic writing.

A stack is an MRC file holding ``n`` square images of ``D x D`` pixels; a single 2D
image (``nz == 1``) is a stack of 1. Supported MRC modes: 0 (int8), 1 (int16),
2 (float32), 6 (uint16), 12 (float16). Images always come out as float32.

Two caches, both invalidated when the file on disk changes (size, mtime or inode):

* validated headers (:func:`stack_info`, up to :data:`MAX_STACK_INFOS` entries, no open
  files). :func:`read_images` uses them to read just the requested images with
  positioned reads, so random access over thousands of per-micrograph stacks needs no
  open file handles and no re-parsing of headers;
* memory maps handed out by :func:`open_stack` (an LRU of :data:`MAX_OPEN_STACKS`
  ``mrcfile.mmap`` handles), so callers wanting array access cannot exhaust file handles.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import mrcfile
import numpy as np

from .atomic import atomic_path
from .errors import InputError, OutputError

log = logging.getLogger(__name__)

#: How many stacks :func:`open_stack` keeps open (memory-mapped) at once.
MAX_OPEN_STACKS = 64
#: How many validated stack headers are cached (a few hundred bytes each).
MAX_STACK_INFOS = 65536

#: Bytes per pixel of the supported MRC modes.
MODE_ITEMSIZE: dict[int, int] = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}
_MODE_NAMES = {
    0: "int8",
    1: "int16",
    2: "float32",
    3: "complex int16",
    4: "complex float32",
    6: "uint16",
    12: "float16",
    101: "4-bit packed",
}
_SUPPORTED = ", ".join(f"{m} ({_MODE_NAMES[m]})" for m in MODE_ITEMSIZE)

_HEADER_BYTES = 1024


@dataclass(frozen=True)
class StackInfo:
    """A validated stack header: ``n`` images of ``box`` x ``box`` px, ``dtype`` (with byte
    order) of the pixels, and ``offset`` (bytes) of the first image."""

    n: int
    box: int
    mode: int
    dtype: np.dtype
    offset: int

    @property
    def image_bytes(self) -> int:
        return self.box * self.box * self.dtype.itemsize


_Stamp = tuple[int, int, int]
_lock = threading.Lock()
_cache: OrderedDict[str, tuple[_Stamp, mrcfile.mrcmemmap.MrcMemmap, np.ndarray]] = OrderedDict()
_infos: OrderedDict[str, tuple[_Stamp, StackInfo]] = OrderedDict()


def _close_quietly(mrc: mrcfile.mrcmemmap.MrcMemmap) -> None:
    try:
        mrc.close()
    except Exception:  # pragma: no cover - closing a read-only map should not fail
        pass


def clear_stack_cache() -> None:
    """Forget cached headers and close every cached memory map (arrays handed out stay valid)."""
    with _lock:
        _infos.clear()
        while _cache:
            _, (_, mrc, _) = _cache.popitem(last=False)
            _close_quietly(mrc)


def _check_header(path: Path) -> StackInfo:
    """Validate the header against the file (mode, sizes, square images)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                header = mrc.header
                if header is None:
                    raise InputError("not an MRC file (header could not be read)", file=path)
                nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
                mode, nsymbt = int(header.mode), int(header.nsymbt)
                byteorder = header.mode.dtype.byteorder
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"cannot read MRC header ({err})", file=path) from None

    if mode not in MODE_ITEMSIZE:
        name = _MODE_NAMES.get(mode, "unknown")
        raise InputError(
            f"unsupported MRC mode {mode} ({name}); supported modes: {_SUPPORTED}", file=path
        )
    if nx <= 0 or ny <= 0 or nz <= 0 or nsymbt < 0:
        raise InputError(
            f"invalid MRC header: nx={nx}, ny={ny}, nz={nz}, nsymbt={nsymbt}", file=path
        )
    itemsize = MODE_ITEMSIZE[mode]
    image_bytes = nx * ny * itemsize
    expected = _HEADER_BYTES + nsymbt + nz * image_bytes
    actual = path.stat().st_size
    if actual < expected:
        complete = max(0, (actual - _HEADER_BYTES - nsymbt) // image_bytes)
        raise InputError(
            f"truncated MRC file: header declares {nz} images of {nx}x{ny} px (mode {mode}), "
            f"{expected} bytes, but the file has {actual} bytes ({complete} complete images; "
            "damaged, or still being written)",
            file=path,
        )
    if nx != ny:
        raise InputError(
            f"non-square images ({nx}x{ny} px); particle images must be square", file=path
        )
    dtype = mrcfile.utils.dtype_from_mode(mode).newbyteorder(byteorder)
    return StackInfo(n=nz, box=nx, mode=mode, dtype=dtype, offset=_HEADER_BYTES + nsymbt)


def _stat(path: str | PathLike[str]) -> _Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError("image stack not found", file=path) from None
    except OSError as err:
        raise InputError(f"cannot access image stack ({err.strerror or err})", file=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError("image stack is not a regular file", file=path)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def stack_info(path: str | PathLike[str]) -> StackInfo:
    """Validated header of an MRC stack (cached until the file changes).

    Raises :class:`InputError` for a missing file, an unsupported mode, a truncated
    file or non-square images.
    """
    stamp = _stat(path)
    key = os.fspath(path)
    with _lock:
        hit = _infos.get(key)
        if hit is not None and hit[0] == stamp:
            _infos.move_to_end(key)
            return hit[1]
    info = _check_header(Path(path))
    with _lock:
        _infos[key] = (stamp, info)
        _infos.move_to_end(key)
        while len(_infos) > MAX_STACK_INFOS:
            _infos.popitem(last=False)
    return info


def _open_uncached(path: Path) -> tuple[mrcfile.mrcmemmap.MrcMemmap, np.ndarray]:
    info = _check_header(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "file is N bytes larger than expected"
        try:
            mrc = mrcfile.mmap(path, mode="r", permissive=False)
        except ValueError as strict_err:
            # Old RELION/EMAN stacks lack the "MAP " ID and machine stamp. The header was
            # validated above (mode, sizes), so a permissive open is safe here.
            try:
                mrc = mrcfile.mmap(path, mode="r", permissive=True)
            except (OSError, ValueError) as err:
                raise InputError(f"cannot open MRC file ({err})", file=path) from None
            if mrc.data is None:
                _close_quietly(mrc)
                raise InputError(f"cannot open MRC file ({strict_err})", file=path) from None
            log.debug("%s: opened permissively (%s)", path, strict_err)
        except OSError as err:
            raise InputError(f"cannot open MRC file ({err.strerror or err})", file=path) from None
    data = mrc.data.reshape(info.n, info.box, info.box)
    return mrc, data


def open_stack(path: str | PathLike[str]) -> np.ndarray:
    """Memory-map an MRC stack; return a read-only array of shape ``(n, D, D)``.

    The array has the file's dtype (int8/int16/float32/uint16/float16); nothing is
    read until it is indexed. Raises :class:`InputError` for a missing file, an
    unsupported mode, a truncated file or non-square images.
    """
    stamp = _stat(path)
    p = Path(path)
    key = str(p.resolve())
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            if hit[0] == stamp:
                _cache.move_to_end(key)
                return hit[2]
            del _cache[key]
            _close_quietly(hit[1])
        mrc, data = _open_uncached(p)
        _cache[key] = (stamp, mrc, data)
        while len(_cache) > MAX_OPEN_STACKS:
            _, (_, old, _) = _cache.popitem(last=False)
            _close_quietly(old)
        return data


def stack_shape(path: str | PathLike[str]) -> tuple[int, int, int]:
    """Return ``(n, D, D)``: the number of images and their size in pixels."""
    info = stack_info(path)
    return info.n, info.box, info.box


def stack_pixel_size_A(path: str | PathLike[str]) -> float:
    """Pixel size in Å from the MRC header (voxel size x); 0.0 when the header leaves it unset.

    Many stacks store 0 or 1 here; prefer the pixel size from the metadata.
    """
    stack_info(path)  # validates the file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                return float(mrc.voxel_size.x)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read MRC header ({err})", file=path) from None


def _read_runs(path: str | PathLike[str], info: StackInfo, wanted: np.ndarray) -> np.ndarray:
    """Read images ``wanted`` (sorted, unique) in the file's dtype, one read per contiguous run."""
    out = np.empty((wanted.size, info.box, info.box), dtype=info.dtype)
    flat = out.reshape(-1).view(np.uint8).data
    ib = info.image_bytes
    if wanted.size == 1:
        runs: list[tuple[int, int]] = [(0, 1)]
    else:
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        runs = list(zip([0, *breaks.tolist()], [*breaks.tolist(), wanted.size], strict=True))
    with open(path, "rb", buffering=0) as fh:
        for a, b in runs:
            fh.seek(info.offset + int(wanted[a]) * ib)
            view, done = flat[a * ib : b * ib], 0
            while done < len(view):
                got = fh.readinto(view[done:])
                if not got:
                    raise InputError(
                        f"truncated MRC file: image {int(wanted[a]) + done // ib} could not be read",
                        file=path,
                    )
                done += got
    return out


def read_images(path: str | PathLike[str], indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Read images ``indices`` (0-based) of a stack as float32, shape ``(len(indices), D, D)``.

    Only those images are read (positioned reads, one per run of consecutive
    indices, no file handle kept open); the order of ``indices`` is kept and repeats
    are allowed.
    """
    info = stack_info(path)
    idx = np.asarray(indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"image indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    bad = np.flatnonzero((idx < 0) | (idx >= info.n))
    if bad.size:
        raise InputError(
            f"image index {int(idx[bad[0]])} (0-based) out of range, the stack holds {info.n} images",
            file=path,
        )
    if idx.size == 0:
        return np.empty((0, info.box, info.box), dtype=np.float32)
    in_order = idx.size == 1 or bool(np.all(idx[1:] > idx[:-1]))
    wanted, inverse = (idx, None) if in_order else np.unique(idx, return_inverse=True)
    try:
        data = _read_runs(path, info, wanted)
    except OSError as err:
        raise InputError(f"cannot read images ({err.strerror or err})", file=path) from None
    data = data.astype(np.float32, copy=False)
    return data if inverse is None else data[inverse.reshape(-1)]


def write_stack(
    path: str | PathLike[str],
    images: np.ndarray,
    pixel_size_A: float,
    dtype: type[np.floating] | np.dtype = np.float32,
) -> None:
    """Write images ``(n, D, D)`` (or one ``(D, D)`` image) as an MRC image stack.

    ``dtype`` float32 gives MRC mode 2, float16 mode 12. The header gets voxel size =
    ``pixel_size_A`` (Å), space group 0 (image stack), and min/max/mean/rms of the
    data. The file is written to a temp file in the same folder and then moved into
    place, so readers never see a partial file.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"write_stack dtype must be float32 or float16, not {dt}")
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"images must have shape (n, D, D) with n >= 1, got {arr.shape}")
    if not (np.isfinite(pixel_size_A) and pixel_size_A > 0):
        raise ValueError(f"pixel_size_A must be a positive number of Å, got {pixel_size_A}")
    arr = np.ascontiguousarray(arr, dtype=dt)
    target = Path(path)
    with atomic_path(target) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with mrcfile.new(tmp, overwrite=True) as mrc:
                    mrc.set_data(arr)
                    mrc.set_image_stack()
                    mrc.voxel_size = float(pixel_size_A)
                    mrc.update_header_from_data()
                    mrc.update_header_stats()
        except OSError as err:
            raise OutputError.from_os_error(err, target) from None
