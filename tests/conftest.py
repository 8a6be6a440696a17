"""Shared pytest set-up: the `slow` marker runs only with --runslow (by hand or on a GPU)."""

import os

import pytest

# CI=true selects the smoke profile everywhere (notebooks and slow paths).
SMOKE = os.environ.get("CI") == "true"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread for the whole suite: the tests run tiny networks, where one thread is
    fastest, and on the 2-core CI machine two threads spin against each other (measured: the
    diffusion tests took 13 s on one thread and 3 min 41 s on two under load)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
