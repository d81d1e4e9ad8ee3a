"""A second thread for the fast step: two halves of the work at once, BLAS on one thread in each.

On two cores, OpenBLAS's own threads split each matrix product in two, but
everything between the products (bias and activation, the likelihood, the
updates, Python) runs on one core while the other waits. The two-thread step
(:func:`minivae.fast.step.fast_loss_and_grads` with a :class:`Pair`) splits
the work instead: the big forward products and the kernels after them by
halves of the minibatch's rows; each big layer's backward by halves of its
weight's rows (its input units): each thread takes their columns of the
gradient reaching the layer's input and their rows of the weight gradient;
then the weight's update runs on the worker while the step goes on with the
smaller layers below; the first layer (the last product) has each thread
update its own rows. Each thread calls BLAS on one thread, and only the
serial kernels (a threaded Numba kernel must not start beside another).

Every number is computed as on one thread, by the same kernels on the same
rows: only a bias gradient adds its two halves' column sums in another order.

The second thread is made once per process (again after a fork) and waits on
a lock between tasks; a task's exception is raised again in the step's thread.
"""

from __future__ import annotations

import os
import threading
from _thread import allocate_lock

__all__ = ["Pair", "process_pair"]


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
        self._go = allocate_lock()           # released to give the worker its tasks
        self._go.acquire()
        self._done = threading.Event()       # set by the worker when they are done (an Event: see join)
        self._tasks, self._error, self._pending = (), None, False
        self.in_use = allocate_lock()        # held by the step using the pair
        self._thread = threading.Thread(target=self._serve, name="minivae-fast-pair", daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            self._go.acquire()
            try:
                for f, args in self._tasks:
                    f(*args)
            except BaseException as err:  # noqa: BLE001 - raised again by join, in the step's thread
                self._error = err
            finally:
                self._tasks = ()
                self._done.set()

    def start(self, *tasks):
        """Run the ``(function, args)`` tasks in order on the worker; return at once."""
        if self._pending:
            raise RuntimeError("the pair's worker is still busy: join() it first.")
        self._tasks, self._pending = tasks, True
        self._go.release()

    def join(self):
        """Wait for the tasks given by :meth:`start` (if any); raise the first exception they raised.

        An interrupt (Ctrl-C) while waiting is raised only once the worker has finished: it
        writes arrays the caller owns, so the caller must not go on while it runs.
        """
        if not self._pending:
            return
        interrupted = None
        while not self._done.is_set():       # the Event's state, not a lock's: an interrupt raised just
            try:                             # after the wait returned cannot make this wait twice
                self._done.wait()
            except KeyboardInterrupt as err:
                interrupted = err
        self._done.clear()
        self._pending = False
        error, self._error = self._error, None
        if interrupted is not None:
            raise interrupted
        if error is not None:
            raise error

    def rows(self, f, args, R, split):
        """``f(*args, r0, r1, half)`` over rows [0, R): two halves at once if ``split`` and R >= 2.

        Returns whether the rows were split.
        """
        if not (split and R >= 2):
            f(*args, 0, R, 0)
            return False
        h = R // 2
        self.join()
        self.start((f, args + (h, R, 1)))
        try:
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
