"""Fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> Iterator[None]:
    """One torch thread for the whole session: the small tensors here run faster so on a shared
    machine, and the Dask tests need the E-steps to run with the workers' thread count to give
    the same bits (set before any session fixture starts a cluster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
