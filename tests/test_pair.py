"""The two-thread fast step (:mod:`minivae.fast.pair`): both threads work, the numbers are the
readable step's, and nothing is left running or half-written when something goes wrong.

The agreement over every decoder, estimator, depth and optimiser is in ``tests/test_fast.py``
(its ``threads`` fixture); here: that the work is really shared, with what BLAS runs on, and
the second thread's errors, interrupts, forks and a second caller.
"""

import _thread
import os
import threading
import time

import numpy as np
import pytest

from minivae.fast import kernels
from minivae.fast import step as step_module
from minivae.fast.pair import Pair, process_pair
from minivae.fast.step import FastAEVB, blas_threads
from minivae.gradcheck import relative_error
from minivae.model import VAE
from minivae.optim import Adagrad
from minivae.steps import AEVB


HANG_GUARD_S = 120   # only turns a hang into a failure; no passing test comes near it


def _model(decoder="bernoulli", H=(20,), seed=0):
    return VAE(D=30, H=H, J=4, decoder=decoder, init="glorot", random_state=seed)


def _batches(n=3, M=16, D=30, density=0.15, seed=5):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.random((M, D)) * (rng.random((M, D)) < density)
        x[1], x[:, 2] = 0, 0                                    # an empty row and an empty column
        out.append(x)
    return out


def _run(step, batches, seed=1):
    rng = np.random.default_rng(seed)
    return [step(x, None, rng).elbo.copy() for x in batches]


class _Where:
    """Wraps a function and records the thread of each call."""

    def __init__(self, f):
        self.f, self.threads = f, []

    def __call__(self, *args):
        self.threads.append(threading.get_ident())
        return self.f(*args)


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_both_threads_compute_each_split_and_the_step_is_the_readable_one(monkeypatch, decoder):
    """Every layer split (PAIR_MIN_WORK = 0): each thread runs the forward pass of its half of the
    minibatch (x's sparse product, z and the head, for both samples), and each layer's backward rows
    (x's sparse weight gradient among them), with no index of x; parameters after three steps as the
    readable step's, to 1e-12 (float64)."""
    monkeypatch.setattr(step_module, "PAIR_MIN_WORK", 0)
    head = "_bernoulli_rows" if decoder == "bernoulli" else "_gaussian_rows"
    spies = {name: _Where(getattr(kernels, name)) for name in ("sparse_matmul_rows", "_reparameterize_kl_rows",
                                                               head, "sparse_matmul_t_rows", "sparse_index")}
    for name, spy in spies.items():
        monkeypatch.setattr(kernels, name, spy)
    spies["_backward_rows"] = _Where(step_module._backward_rows)
    monkeypatch.setattr(step_module, "_backward_rows", spies["_backward_rows"])
    index = spies.pop("sparse_index")
    batches = _batches()
    readable, fast = _model(decoder), _model(decoder)
    a = _run(AEVB(readable, Adagrad(0.05), "B", 2, weight_decay=1e-3), batches)
    b = _run(FastAEVB(fast, Adagrad(0.05), "B", 2, weight_decay=1e-3, two_threads=True), batches)
    here, worker = threading.get_ident(), process_pair()._thread.ident
    for name, spy in spies.items():
        assert {here, worker} <= set(spy.threads), name
    assert index.threads == []                                   # the one-thread step's index of x
    for ea, eb in zip(a, b):
        assert relative_error(ea, eb) <= 1e-12
    for k in readable.params:
        assert relative_error(readable.params[k], fast.params[k]) <= 1e-12, k


def test_blas_runs_on_one_thread_inside_the_step_and_as_before_after_it(monkeypatch):
    from threadpoolctl import threadpool_limits

    seen = []
    inner = step_module._backward_rows

    def spy(*args):
        seen.append(blas_threads())
        return inner(*args)

    monkeypatch.setattr(step_module, "_backward_rows", spy)
    monkeypatch.setattr(step_module, "PAIR_MIN_WORK", 0)
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        _run(FastAEVB(_model(), Adagrad(0.05), two_threads=True), _batches(1))
        assert blas_threads() == before
    assert seen and set(seen) == {1}


def test_an_error_on_the_worker_is_raised_here_and_the_pair_still_works():
    pair = Pair()

    def fail():
        raise ValueError("from the worker")

    pair.start((fail, ()))
    with pytest.raises(ValueError, match="from the worker"):
        pair.join()
    out = []
    pair.start((out.append, (1,)), (out.append, (2,)))
    pair.join()
    assert out == [1, 2]
    with pytest.raises(RuntimeError, match="still busy"):
        pair.start((out.append, (3,)))                           # not joined yet: refused, whether or not
        pair.start((out.append, (4,)))                           # the worker has finished it
    pair.join()
    assert out == [1, 2, 3]


def test_an_error_in_this_threads_half_still_waits_for_the_worker():
    """The worker's half starts only once this thread's half has failed, so rows() can return only
    by waiting for it."""
    pair = Pair()
    failed, done = threading.Event(), []

    def half(r0, r1, h):
        if h == 0:
            failed.set()
            raise ValueError("here")
        assert failed.wait(HANG_GUARD_S)
        done.append((r0, r1))

    with pytest.raises(ValueError, match="here"):
        pair.rows(half, (), 10, True)
    assert done == [(5, 10)]                                     # the worker's half had finished


class _Sleeps:
    """Stands in for the pair's ``_done`` lock and counts the times the step's thread sleeps on it
    (join's wait), so that a test knows the step's thread is inside join()."""

    def __init__(self, lock):
        self.lock, self.main, self.calls = lock, threading.get_ident(), 0
        self.changed = threading.Condition()

    def acquire(self, blocking=True, timeout=-1):
        if threading.get_ident() == self.main and timeout >= 0:
            with self.changed:
                self.calls += 1
                self.changed.notify_all()
        return self.lock.acquire(blocking, timeout)

    def release(self):
        self.lock.release()

    def wait_for(self, n):
        with self.changed:
            return self.changed.wait_for(lambda: self.calls >= n, HANG_GUARD_S)


def test_an_interrupt_while_waiting_is_raised_once_the_worker_is_done(ctrl_c_raises):
    """Ctrl-C during a step: the worker writes arrays the step owns, so join() returns (raising
    KeyboardInterrupt) only after the worker's task ended; nothing goes on writing afterwards.

    No timing: the worker interrupts the main thread once that thread sleeps inside join(), then
    finishes only after the main thread went to sleep there twice more (so it has met the
    interrupt, which Python raises between two such calls, and went on waiting)."""
    pair = Pair()
    sleeps = pair._done = _Sleeps(pair._done)
    finished = []

    def task():
        assert sleeps.wait_for(1)
        _thread.interrupt_main()                                 # what Ctrl-C does
        assert sleeps.wait_for(sleeps.calls + 2)
        finished.append(True)

    pair.start((task, ()))
    with pytest.raises(KeyboardInterrupt):
        pair.join()
    assert finished == [True]
    pair.start((finished.append, (False,)))
    pair.join()
    assert finished == [True, False]


def test_an_interrupt_just_after_the_round_is_given_still_runs_it_and_join_waits():
    """Ctrl-C a moment early: inside start(), after the round was given but before the sleeping
    worker was woken. The caller's ``finally: join()`` wakes it and waits for it; the pair goes on."""
    pair = Pair()
    while not pair._asleep:                                      # the worker goes to sleep on its lock
        time.sleep(1e-3)
    wake, out, outcome = pair._wake, [], []

    def interrupted_wake():
        pair._wake = wake
        raise KeyboardInterrupt                                  # as if Ctrl-C arrived here

    def step():                                                  # (no signal involved: any thread will do)
        try:
            try:
                pair.start((out.append, (1,)))
            finally:
                pair.join()
        except KeyboardInterrupt:
            outcome.append("interrupted")

    pair._wake = interrupted_wake
    caller = threading.Thread(target=step, daemon=True)
    caller.start()
    caller.join(HANG_GUARD_S)
    assert not caller.is_alive(), "join() never returned: the worker was not woken"
    assert outcome == ["interrupted"] and out == [1]
    pair.start((out.append, (2,)))
    pair.join()
    assert out == [1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_gets_a_worker_of_its_own():
    parent = process_pair()
    pid = os.fork()
    if pid == 0:                                                 # the child: its own pair, which works
        try:
            child = process_pair()
            out = []
            child.start((out.append, (7,)))
            child.join()
            os._exit(0 if (child is not parent and out == [7]) else 1)
        except BaseException:  # noqa: BLE001 - any failure is the exit status
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert process_pair() is parent


def test_two_callers_at_once_both_get_the_right_numbers(monkeypatch):
    """Two Python threads stepping two models at once: one has the pair, the other runs alone
    (``Pair.in_use``); both end as the readable step ends."""
    monkeypatch.setattr(step_module, "PAIR_MIN_WORK", 0)
    batches = _batches(6)
    expected = {}
    for seed in (0, 1):
        model = _model(seed=seed)
        _run(AEVB(model, Adagrad(0.05)), batches)
        expected[seed] = model.params
    models = {seed: _model(seed=seed) for seed in (0, 1)}
    errors = []

    def train(seed):
        try:
            _run(FastAEVB(models[seed], Adagrad(0.05), two_threads=True), batches)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    callers = [threading.Thread(target=train, args=(seed,)) for seed in (0, 1)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert not errors
    for seed in (0, 1):
        for k in expected[seed]:
            assert relative_error(models[seed].params[k], expected[seed][k]) <= 1e-12, k


def test_neither_thread_spins_while_other_processes_keep_a_core_busy(monkeypatch):
    """The hand-offs spin only on a quiet machine: with /proc/stat saying the machine's 2 cores are
    busy while this process used half of one, both spin budgets are 0 (the locks alone), and the pair
    still works; on an idle machine they spin."""
    import types

    from minivae.fast import pair as pair_module

    clock = {"now": 0.0, "cpu": 0.0, "busy": 0, "total": 0}

    def tick(key, by):
        clock[key] += by
        return clock[key]

    fake_time = types.SimpleNamespace(monotonic=lambda: tick("now", 1.0), process_time=lambda: tick("cpu", 0.5),
                                      perf_counter=time.perf_counter)
    monkeypatch.setattr(pair_module, "time", fake_time)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(pair_module, "_cpu_times", lambda: (tick("busy", 200), tick("total", 200)))  # 2 busy
    pair, out = Pair(), []
    for k in range(3):
        pair.start((out.append, (k,)))
        pair.join()
        assert pair._spins == (0, 0)
    assert out == [0, 1, 2]
    monkeypatch.setattr(pair_module, "_cpu_times", lambda: (tick("busy", 50), tick("total", 200)))  # half a core
    pair = Pair()
    pair.start((out.append, (3,)))
    pair.join()
    assert pair._spins == pair.spinning() and min(pair.spinning()) > 0 and out[-1] == 3
