"""The two-thread step's compiled calls (:mod:`minivae.fast.blas`, :mod:`minivae.fast.fused`,
:mod:`minivae.fast.forward`): NumPy's own ``?gemm`` gives np.matmul's numbers bit for bit, the
compiled forward and backward passes give the numbers of the same functions run as Python bit for
bit, both threads make them, and the hand-off that waits for the worker's mark never waits for good."""

import threading

import numpy as np
import pytest

from minivae.fast import blas, forward, fused
from minivae.fast import kernels
from minivae.fast import step as step_module
from minivae.fast.pair import Pair, process_pair
from minivae.fast.step import FastAEVB
from minivae.gradcheck import relative_error
from minivae.optim import Adagrad
from minivae.steps import AEVB
from test_pair import _Where, _batches, _model, _run

needs_blas = pytest.mark.skipif(not blas.available(np.float64), reason="NumPy's BLAS is not reachable here "
                                "(no JIT, or not an OpenBLAS threadpoolctl can find): the step makes no compiled calls")


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_into_is_np_matmul_bit_for_bit_on_the_views_the_step_uses(dtype):
    rng = np.random.default_rng(0)
    address, ilp64 = blas.ADDRESS[np.dtype(dtype)]
    W = rng.standard_normal((50, 78)).astype(dtype)          # (input units, output units)
    d = rng.standard_normal((10, 78)).astype(dtype)
    h = rng.standard_normal((10, 50)).astype(dtype)
    cases = [(h[0:5], W, (5, 78)),                           # a half of the rows
             (d, W[0:25].T, (10, 25)),                       # dx's columns: a transposed slice
             (h[:, 25:50].T, d, (25, 78)),                   # gW's rows: a transposed column slice
             (d[5:10], W[25:50].T, (5, 25))]
    for a, b, shape in cases:
        want, got = np.empty(shape, dtype), np.full(shape, np.nan, dtype)
        np.matmul(a, b, out=want)
        assert blas.gemm_into(address, ilp64, a, b, got)
        assert np.array_equal(want, got)
    want, got = np.zeros((10, 50), dtype), np.zeros((10, 50), dtype)   # into columns of a wider array
    np.matmul(d, W[0:25].T, out=want[:, 0:25])
    assert blas.gemm_into(address, ilp64, d, W[0:25].T, got[:, 0:25])
    assert np.array_equal(want, got)


@needs_blas
def test_gemm_into_refuses_what_np_matmul_would_not_give_to_gemm_and_writes_nothing():
    address, ilp64 = blas.ADDRESS[np.dtype(np.float64)]
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 8)), rng.standard_normal((8, 5))
    refused = [(a[:1], b, np.full((1, 5), 7.0)),                  # one row: np.matmul's gemv
               (a, b[:, :1], np.full((6, 1), 7.0)),               # one column
               (a[:, ::2], b[::2], np.full((6, 5), 7.0)),         # strides BLAS cannot take
               (a, b, np.full((6, 5), 7.0)[:, ::-1])]             # an output running backwards
    for x, y, out in refused:
        assert not blas.gemm_into(address, ilp64, x, y, out)
        assert np.all(out == 7.0)


@needs_blas
@pytest.mark.parametrize("sparse", [True, False])
def test_the_compiled_calls_run_on_both_threads_and_give_the_python_calls_numbers_bit_for_bit(monkeypatch, sparse):
    """Every layer split (PAIR_MIN_WORK = 0), L = 2: parameters and bounds after three steps equal,
    bit for bit, those of the same step running the same functions as Python (fused.intact() False),
    and the readable step's to 1e-12 (float64)."""
    monkeypatch.setattr(step_module, "PAIR_MIN_WORK", 0)
    spies = {"forward_rows": _Where(forward.forward_rows), "backward_rows": _Where(fused.backward_rows)}
    monkeypatch.setattr(forward, "forward_rows", spies["forward_rows"])
    monkeypatch.setattr(fused, "backward_rows", spies["backward_rows"])
    batches = _batches()
    compiled, from_python, readable = _model(), _model(), _model()
    a = _run(FastAEVB(compiled, Adagrad(0.05), "B", 2, weight_decay=1e-3, sparse_input=sparse, two_threads=True),
             batches)
    here, worker = threading.get_ident(), process_pair()._thread.ident
    for name, spy in spies.items():
        assert {here, worker} <= set(spy.threads), name
    monkeypatch.setattr(fused, "intact", lambda: False)
    b = _run(FastAEVB(from_python, Adagrad(0.05), "B", 2, weight_decay=1e-3, sparse_input=sparse, two_threads=True),
             batches)
    c = _run(AEVB(readable, Adagrad(0.05), "B", 2, weight_decay=1e-3), batches)
    for ea, eb, ec in zip(a, b, c):
        assert np.array_equal(ea, eb)
        assert relative_error(ea, ec) <= 1e-12
    for k in compiled.params:
        assert np.array_equal(compiled.params[k], from_python.params[k]), k
        assert relative_error(compiled.params[k], readable.params[k]) <= 1e-12, k


def test_a_replaced_kernel_is_what_the_two_thread_step_runs(monkeypatch):
    """A kernel replaced in minivae.fast.kernels (here by a spy) takes the step off the compiled calls,
    which would run the original: the replacement is called, on both threads."""
    monkeypatch.setattr(step_module, "PAIR_MIN_WORK", 0)
    spy = _Where(kernels._bernoulli_rows)
    monkeypatch.setattr(kernels, "_bernoulli_rows", spy)
    assert not fused.intact()
    _run(FastAEVB(_model(), Adagrad(0.05), two_threads=True), _batches(1))
    assert {threading.get_ident(), process_pair()._thread.ident} <= set(spy.threads)


def test_a_marked_start_whose_task_never_marks_still_runs_it_and_returns():
    """start(marked=True) spins for the worker's mark at most its budget: a task that does not mark
    (or a worker asleep on its lock) costs that wait once, never a hang, and the task runs."""
    pair = Pair()
    pair._quiet = lambda: True                             # spinning, as on a quiet machine
    done = []
    for _ in range(3):
        pair.start((done.append, (1,)), marked=True)
        pair.join()
    pair._asleep = True                                    # as if the worker slept: the plain start
    pair.start((done.append, (2,)), marked=True)
    pair.join()
    assert done == [1, 1, 1, 2]
