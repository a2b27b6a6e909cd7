"""Shared test setup."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread, and CI's 2 cores are shared with other jobs
    (on a loaded 2-core machine the default 2 threads made one update ~40x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
