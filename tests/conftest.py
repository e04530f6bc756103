"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run the suite single-threaded: its tensors are tiny, and on a 2-core machine intra-op threads only
    contend (tiny convnets train ~10x faster on one thread there)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
