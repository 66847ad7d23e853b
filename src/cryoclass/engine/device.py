"""CPU / CUDA choice, and what the hardware does fast."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' fails clearly without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(name)


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bfloat16(device: torch.device) -> bool:
    """True where bfloat16 matrix products run faster than float32: CUDA GPUs with bf16 support,
    CPUs with AMX-BF16 or AVX512-BF16 units."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def gemm_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Matrix-product input dtype for a precision setting ('auto', 'float32', 'bfloat16')."""
    if precision == "bfloat16" or (precision == "auto" and fast_bfloat16(device)):
        return torch.bfloat16
    return torch.float32
