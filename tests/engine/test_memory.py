"""Freed heap memory goes back to the OS (glibc malloc_trim), so a long full pass does not grow
the process (benchmarks/batch_memory.py measures whole jobs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cryoclass.engine import memory

# In a fresh process (this test process's heap state depends on the tests before it): 100+ MB in
# 64 kB blocks (heap, not mmap), each followed by a small live one that pins it in the heap.
SCENARIO = """
import numpy as np
from cryoclass.engine import memory
big, pins = [], []
for _ in range(2000):
    big.append(np.ones(8192)); pins.append(np.ones(4))
held = memory.resident_bytes()
del big
before = memory.resident_bytes()
if {trim}:
    memory.release_free_memory(force=True)
print(held, before, memory.resident_bytes())
"""


def _run(trim: bool) -> tuple[int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO.format(trim=trim)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    held, before, after = map(int, out.split())
    return held, before, after


@pytest.mark.skipif(memory._libc is None, reason="needs glibc (Linux)")
def test_trim_returns_fragmented_heap_memory():
    held, before, after = _run(trim=False)
    assert held > 100 << 20 and after > held - (50 << 20)  # freed, yet still resident
    held, before, after = _run(trim=True)
    assert before - after > 50 << 20, (held, before, after)  # given back
