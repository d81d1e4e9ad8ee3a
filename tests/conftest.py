"""Shared fixtures: where the real data sets live, and float64 by default."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def real_data_dir():
    """The folder holding mnist/, frey/ and binarized_mnist/: $MINIVAE_DATA, else ../shared/data."""
    env = os.environ.get("MINIVAE_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir():
    d = real_data_dir()
    if not (d / "mnist").is_dir():
        pytest.skip(f"real data not found at {d} (set MINIVAE_DATA to the folder holding mnist/, frey/, binarized_mnist/)")
    return d
