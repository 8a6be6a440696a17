"""Shared pytest set-up: one torch thread for the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread for the whole suite: the tests run tiny networks, where one thread is
    fastest, and on the 2-core CI machine two threads spin against each other (measured: the
    diffusion tests took 13 s on one thread and 3 min 41 s on two under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
