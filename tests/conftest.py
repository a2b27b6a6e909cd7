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


@pytest.fixture(autouse=True, scope="session")
def _eager_update() -> Iterator[None]:
    """The agents' update runs eagerly unless a test asks for ``compile=True``: a compilation takes
    10-60 s per graph on CI's CPUs. tests/test_update.py holds the compiled update equal to the eager
    one, and runs the compiled default end to end. Session scope: module-scoped fixtures build
    agents too."""
    from agents import GaussianSAC, GumbelSAC, HybridSAC

    with pytest.MonkeyPatch.context() as mp:
        for cls in (GumbelSAC, GaussianSAC, HybridSAC):
            mp.setitem(cls.defaults, "compile", False)
        yield
