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
