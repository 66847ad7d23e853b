"""Run these tests single-threaded.

On a small shared machine (2 cores, other jobs running) torch's OpenMP threads spin-wait and these
many small tensor operations then run several times slower with 2 threads than with 1 (set
OMP_WAIT_POLICY=PASSIVE to avoid that machine-wide). The previous setting is restored afterwards.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
