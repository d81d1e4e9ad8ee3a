"""A second thread for the fast step: two halves of the work at once, BLAS on one thread in each.

On two cores, OpenBLAS's own threads split each matrix product in two, but
everything between the products (bias and activation, the likelihood, the
updates, Python) runs on one core while the other waits. The two-thread step
(:func:`minivae.fast.step.fast_loss_and_grads` with a :class:`Pair`) splits
the work instead: the whole forward pass by halves of the minibatch (each
thread from x to the bound for its datapoints, one hand-off); each big layer's
backward by halves of its weight's rows (its input units): each thread takes
their columns of the gradient reaching the layer's input and their rows of the
weight gradient; then the weight's update runs on the worker while the step
goes on with the smaller layers below; the first layer (the last product) has
each thread update its own rows. Each thread calls BLAS on one thread, and only
the serial kernels (a threaded Numba kernel must not start beside another).

Every number is computed as on one thread, by the same kernels on the same
rows: only a bias gradient adds its two halves' column sums in another order.

The second thread is made once per process (again after a fork). Between
tasks each side spins, then sleeps on a lock (below); a task's exception is
raised again in the step's thread.
"""

from __future__ import annotations

import os
import threading
import time
from _thread import allocate_lock

import numpy as np

from ..run.threads import _cpu_times
from .kernels import JIT_ENABLED

__all__ = ["Pair", "process_pair"]

# Hand-offs. Waking a thread asleep on a lock took 30-80 us on the 2-core virtual machines measured
# (the core it slept on has to be woken too), several times a step. So each side first waits by
# spinning, without the GIL, on a word the other side writes (GO: the round given to the worker;
# DONE: the last round it finished); only then does it sleep on a lock. The worker writes DONE from
# inside its spinning wait, after letting go of the GIL, so the step's thread, seeing it, takes the GIL
# at once. Spinning pays only on cores nobody else wants: while other processes keep more than
# OTHERS_MAX cores busy (read from /proc/stat every QUIET_EVERY seconds), neither side spins (measured
# with one competing busy loop on 2 cores: a forced two-thread step took 1.95x the one-thread time
# spinning). Without the JIT (NUMBA_DISABLE_JIT=1) nothing spins: the locks alone.
GO, DONE, STARTED = 0, 1, 2
STEP_SPIN_S = 5e-3       # the step's thread spins up to about 5 ms, then sleeps until the worker is done
WORKER_SPIN_S = 2e-3     # the worker spins about 2 ms between tasks, then sleeps until the next start
QUIET_EVERY = 0.1        # seconds between two readings of the other processes' load
OTHERS_MAX = 0.3         # cores other processes may keep busy for the pair to spin

if JIT_ENABLED:
    import platform

    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    _PAUSE = {"x86_64": "llvm.x86.sse2.pause", "AMD64": "llvm.x86.sse2.pause"}.get(platform.machine())

    @intrinsic
    def _pause(typingctx):
        """The CPU's spin-wait hint (x86 PAUSE; nothing elsewhere): a spinning thread leaves the
        core's other hardware thread (or the host's, for a virtual core) its execution units."""
        def codegen(context, builder, signature, args):
            if _PAUSE is not None:
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), _PAUSE)
                builder.call(fn, [])
            return context.get_dummy_value()
        return types.none(), codegen

    @intrinsic
    def _load_acquire(typingctx, flags, i):
        """flags[i] (an int64 array), read as an atomic load: every write before the other thread's
        store of it is seen after (and the load is not hoisted out of a loop)."""
        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
            return builder.load_atomic(ptr, "acquire", 8)
        return types.int64(flags, i), codegen

    @intrinsic
    def _store_release(typingctx, flags, i, value):
        """flags[i] = value as an atomic store: every write before it is seen by a load_acquire after."""
        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
            builder.store_atomic(args[2], ptr, "release", 8)
            return context.get_dummy_value()
        return types.none(flags, i, value), codegen

    @njit(cache=True)
    def _store(flags, i, value):
        """flags[i] = value, holding the GIL."""
        _store_release(flags, i, value)

    @njit(cache=True, nogil=True)
    def _wait_while(flags, i, old, spins):
        """Without the GIL: spin until flags[i] != old, at most ``spins`` times; return whether it changed."""
        for _ in range(spins):
            if _load_acquire(flags, i) != old:
                return True
            _pause()
        return False

    @njit(cache=True, nogil=True)
    def _store_then_wait_while(flags, i, value, j, old, spins):
        """Without the GIL: flags[i] = value, then :func:`_wait_while` on flags[j]."""
        _store_release(flags, i, value)
        return _wait_while(flags, j, old, spins)

    @njit(cache=True, nogil=True)
    def mark_started(flags):
        """flags[STARTED] = flags[GO]: called first by a compiled task, once it runs without the GIL."""
        _store_release(flags, STARTED, _load_acquire(flags, GO))
else:
    def _store(flags, i, value):
        flags[i] = value

    def _wait_while(flags, i, old, spins):
        return flags[i] != old

    def _store_then_wait_while(flags, i, value, j, old, spins):
        flags[i] = value
        return flags[j] != old

    def mark_started(flags):
        flags[STARTED] = flags[GO]


def _spins_per_second(flags, n=1 << 14):
    """How many turns of the spinning wait take a second here (one PAUSE each on x86: about 25 ns)."""
    _wait_while(flags, 0, flags[0], 1)                     # compiled (or loaded) before it is timed
    t = time.perf_counter()
    _wait_while(flags, 0, flags[0], n)
    return n / max(time.perf_counter() - t, 1e-9)


class _Quiet:
    """Whether other processes leave this machine's cores idle: the busy cores of /proc/stat minus
    this process's own CPU time, over the last QUIET_EVERY seconds (False until the first two
    readings; True where /proc/stat cannot be read)."""

    def __init__(self):
        times = _cpu_times()
        self.at, self.quiet = time.monotonic(), times is None
        self.reading = None if times is None else (*times, time.process_time())

    def __call__(self):
        now = time.monotonic()
        if now - self.at >= QUIET_EVERY:
            times, own = _cpu_times(), time.process_time()
            if times is not None and self.reading is not None and times[1] > self.reading[1]:
                busy = (os.cpu_count() or 1) * (times[0] - self.reading[0]) / (times[1] - self.reading[1])
                self.quiet = busy - (own - self.reading[2]) / (now - self.at) <= OTHERS_MAX
            self.at, self.reading = now, None if times is None else (*times, own)
        return self.quiet


class Pair:
    """One worker thread, given tasks by one step at a time.

    ``start(*tasks)`` hands it ``(function, args)`` pairs to run in order and
    returns at once; ``join()`` waits for them and raises what they raised.
    ``rows(f, args, R, split)`` runs ``f(*args, r0, r1, half)`` over
    ``range(R)``: with ``split``, rows [R//2, R) on the worker (half 1) and
    [0, R//2) on the calling thread (half 0), after the worker's earlier
    tasks; else all rows here (half 0), beside them.
    """

    def __init__(self):
        self._flags = np.zeros(3, np.int64)   # [GO, DONE, STARTED]: rounds (GO by the step, the others by the worker)
        self._quiet, self._spins = _Quiet(), (0, 0)   # self.spinning() once the machine is quiet
        self._rate = _spins_per_second(self._flags)
        self._go = allocate_lock()           # released when the worker may be asleep on it
        self._go.acquire()
        self._done = allocate_lock()         # released by the worker once a round, taken by join()
        self._done.acquire()
        self._tasks, self._error = (), None
        self._asleep = False                 # the worker sleeps on _go (or is about to)
        self._seen = 0                       # the last round the worker took up
        self._joined = 0                     # the last round join() saw finished
        self.flags = self._flags             # what a compiled task passes to mark_started
        self.in_use = allocate_lock()        # held by the step using the pair
        self._thread = threading.Thread(target=self._serve, name="minivae-fast-pair", daemon=True)
        self._thread.start()

    def _serve(self):
        flags, seen = self._flags, 0
        while True:
            _store_then_wait_while(flags, DONE, seen, GO, seen, self._spins[1])   # round `seen` is done
            while flags[GO] == seen:         # (a lock released for an earlier round: look again)
                self._asleep = True
                self._go.acquire()
            self._asleep = False
            seen = self._seen = int(flags[GO])
            try:
                for f, args in self._tasks:
                    f(*args)
            except BaseException as err:  # noqa: BLE001 - raised again by join, in the step's thread
                self._error = err
            finally:
                self._tasks = ()
                flags[STARTED] = seen        # (marked or not): the next marked start waits for a new mark
                self._done.release()         # held since the last join (which takes each release)

    def spinning(self):
        """The turns each side spins before it sleeps (the step's thread, the worker), from
        STEP_SPIN_S and WORKER_SPIN_S as they are now."""
        return int(STEP_SPIN_S * self._rate), int(WORKER_SPIN_S * self._rate)

    def start(self, *tasks, marked=False):
        """Run the ``(function, args)`` tasks in order on the worker; return at once.

        ``marked``: the first task calls :func:`mark_started` (with ``self.flags``) as soon as it runs
        without the GIL; then this thread gives the round without holding the GIL, and spins until
        the worker has started, so that neither side waits for the GIL the other holds.

        The round is given by one store (of GO): before it nothing was given, after it
        :meth:`join` waits for the round, even if an interrupt (Ctrl-C) cuts this method short.
        Call it inside the ``try`` whose ``finally`` joins.
        """
        flags = self._flags
        if flags[GO] != self._joined:
            raise RuntimeError("the pair's worker is still busy: join() it first.")
        self._tasks = tasks
        self._spins = self.spinning() if self._quiet() else (0, 0)
        go = int(flags[GO]) + 1
        if marked and self._spins[0] and not self._asleep:
            if _store_then_wait_while(flags, GO, go, STARTED, go - 1, self._spins[0]):
                return
        else:
            _store(flags, GO, go)
        self._wake()

    def _wake(self):
        """Release the lock the worker may sleep on (a spare release costs it one more look at GO)."""
        if self._go.locked():                # (only this thread releases it)
            self._go.release()

    def join(self):
        """Wait for the tasks given by :meth:`start` (if any); raise the first exception they raised.

        An interrupt (Ctrl-C) while waiting is raised only once the worker has finished: it
        writes arrays the caller owns, so the caller must not go on while it runs. What is
        pending is read from the round last given (GO, one store) and the last one joined, so an
        interrupt at any point, in :meth:`start` or here, cannot make this wait twice, too little,
        or forever.
        """
        interrupted = None
        while True:
            try:
                self._wait()
                break
            except KeyboardInterrupt as err:
                interrupted = err
        error, self._error = self._error, None
        if interrupted is not None:
            raise interrupted
        if error is not None:
            raise error

    def _wait(self):
        """Return once the worker has finished the last round given (at once if it was joined)."""
        flags, spins = self._flags, self._spins[0]
        go = int(flags[GO])
        if go == self._joined:
            return
        while flags[DONE] != go:
            if spins and _wait_while(flags, DONE, go - 1, spins):
                break
            spins = 0                        # (spun once without seeing it: sleep from now on)
            if self._seen != go:             # given but maybe not woken (start cut short by an interrupt)
                self._wake()
            if self._done.acquire(timeout=0.05):      # the worker releases it once a round, then
                _wait_while(flags, DONE, go - 1, 1 << 20)  # writes DONE without the GIL: at once
        self._done.acquire(blocking=False)   # this round's release, unless taken above: held again
        self._joined = go

    def rows(self, f, args, R, split, marked=False):
        """``f(*args, r0, r1, half)`` over rows [0, R): two halves at once if ``split`` and R >= 2.

        ``marked``: the worker's half calls :func:`mark_started` (see :meth:`start`).
        Returns whether the rows were split.
        """
        if not (split and R >= 2):
            f(*args, 0, R, 0)
            return False
        h = R // 2
        self.join()
        try:
            self.start((f, args + (h, R, 1)), marked=marked)
            f(*args, 0, h, 0)
        finally:
            self.join()
        return True


_PROCESS = {"pid": None, "pair": None}
_MAKING = threading.Lock()


def process_pair():
    """This process's :class:`Pair` (made at the first call, and again in a forked child)."""
    with _MAKING:
        if _PROCESS["pid"] != os.getpid():
            _PROCESS["pair"], _PROCESS["pid"] = Pair(), os.getpid()
        return _PROCESS["pair"]
