"""Thread counts chosen at run time (minivae.run.threads): from the free cores, --threads overriding."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minivae.run import threads


@pytest.mark.parametrize("busy,cores,expected", [
    (0.0, 2, 2), (0.3, 2, 2), (0.4, 2, 1), (1.0, 2, 1), (1.9, 2, 1), (9.0, 2, 1),   # a core is busy from 1/3 on
    (0.0, 8, 8), (2.2, 8, 6), (0.0, 1, 1),
])
def test_the_free_cores_are_taken(monkeypatch, busy, cores, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda window: busy)
    assert threads.choose_threads() == expected


def test_without_any_measure_one_thread(monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda window: None)
    assert threads.choose_threads() == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_a_bad_thread_count_gets_one_clear_error(bad):
    with pytest.raises(ValueError, match="thread count must be a positive integer"):
        threads.choose_threads(bad)


def test_an_explicit_count_wins(monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda window: 100.0)
    assert threads.choose_threads(3) == 3


def test_a_busy_loop_is_seen():
    """One other process spinning on a core: at least about one core is measured busy."""
    spinner = subprocess.Popen([sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert spinner.stdout.readline() == "spinning\n"            # it spins from this line on
        busy = threads.busy_cores(window=0.3)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and busy >= 0.8


def test_configure_applies_the_count_to_blas_and_numba(monkeypatch):
    from threadpoolctl import threadpool_info
    for var in threads.THREAD_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    before = {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
    import numba
    numba_before = numba.get_num_threads()
    try:
        chosen = threads.configure(1)
        assert chosen["threads"] == chosen["blas"] == 1 and chosen["source"] == "--threads"
        assert all(info["num_threads"] == 1 for info in threadpool_info() if info["user_api"] == "blas")
        assert chosen["numba"] == numba.get_num_threads() == 1
        a = np.random.default_rng(0).random((200, 200))
        np.testing.assert_allclose(a @ a.T, (a @ a.T).T, rtol=1e-12)     # BLAS still works
    finally:
        from threadpoolctl import threadpool_limits
        threadpool_limits(max(before.values()), user_api="blas")
        numba.set_num_threads(numba_before)


def test_a_user_environment_variable_is_kept(monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits
    import numba
    before = max(info["num_threads"] for info in threadpool_info())
    numba_before = numba.get_num_threads()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "busy_cores", lambda window: 0.0)     # all cores free: the variable still wins
    try:
        chosen = threads.configure()
        assert chosen["source"] == "environment" and chosen["threads"] == chosen["blas"] == 1
    finally:
        threadpool_limits(before, user_api="blas")
        numba.set_num_threads(numba_before)


@pytest.mark.parametrize("layer, expected", [(None, "workqueue"), ("default", "default")])
def test_configure_picks_numba_s_threading_layer_without_loading_the_fast_path(layer, expected):
    """configure() chooses Numba's workqueue layer before Numba starts its threads (the user's
    NUMBA_THREADING_LAYER wins), and does it without importing minivae.fast: a readable module."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    code = ("import sys, numba, minivae.run.threads as t; t.configure(1); "
            "print(numba.config.THREADING_LAYER, sorted(m for m in sys.modules if m.startswith('minivae.fast')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split(None, 1) == [expected, "[]\n"]
