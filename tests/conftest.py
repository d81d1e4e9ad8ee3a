"""Shared fixtures: where the real data sets live, float64 by default, and Ctrl-C as a terminal delivers it."""

import os
import signal
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


@pytest.fixture
def ctrl_c_raises():
    """SIGINT handled as in an interactive Python session: it raises KeyboardInterrupt.

    A suite started in the background (``cmd &`` in a script, nohup, some CI runners) inherits SIGINT
    ignored; Python then keeps it ignored, and neither SIGINT nor ``_thread.interrupt_main()`` raises
    anything. Tests of what Ctrl-C does set the handling they test, and put back what was there."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
