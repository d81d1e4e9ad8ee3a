"""How many threads a run uses: chosen from the cores actually free, at run time.

A training step of the paper's MNIST model is a dozen mid-sized matrix
products. OpenBLAS's threads wait for work by spinning; when another job
holds one of the cores, the thread that shares it is descheduled in the middle
of a product and the whole product waits for it. Measured on a 2-core machine
with one other CPU-bound process: 2 BLAS threads gave a float32 step of tens
of milliseconds instead of 3-4 (see ``docs/performance.md``). So a run takes
only the cores nobody else is using:

- the cores this process may run on (``os.sched_getaffinity``);
- minus the cores other processes keep busy now: the busy share of the
  machine's cores over a short window of ``/proc/stat`` (0.2 s, while this
  process sleeps), a core counting as busy once a third of it is in use (the
  one-minute load average stands in where ``/proc/stat`` does not exist; it
  is not used otherwise, since it still counts a job that ended a minute ago);
- at least 1.

:func:`configure` applies the count to the BLAS library behind NumPy (with
threadpoolctl) and to Numba's kernels. ``minivae train --threads N`` and
``minivae evaluate --threads N`` override the choice; so do the usual
environment variables (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``), which are left alone when set.
"""

from __future__ import annotations

import math
import os
import time

from ..utils import check_scalar

__all__ = ["usable_cores", "busy_cores", "choose_threads", "configure", "choose_threading_layer", "THREAD_ENV_VARS"]

#: Environment variables by which a user already chose the BLAS thread count.
THREAD_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_times():
    """(busy, total) jiffies summed over all cores, from /proc/stat; None where it does not exist."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:  # pragma: no cover - not Linux
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)      # idle + iowait
    total = sum(values[:8])                                      # guest time is already in user
    return total - idle, total


def busy_cores(window=0.2):
    """How many cores other processes keep busy now (a float), or None if it cannot be told.

    The busy share of the machine's cores over ``window`` seconds of
    ``/proc/stat`` (this process sleeps meanwhile, so all of it is other work);
    where that file does not exist, the one-minute load average.
    """
    before = _cpu_times()
    if before is not None and window > 0:
        time.sleep(window)
        after = _cpu_times()
        d_busy, d_total = after[0] - before[0], after[1] - before[1]
        if d_total > 0:
            return (os.cpu_count() or 1) * d_busy / d_total
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not POSIX
        return None


def choose_threads(requested=None, window=0.2):
    """The thread count for this run: ``requested`` if given, else the free cores (at least 1).

    Parameters
    ----------
    requested : int or None
        An explicit count (``--threads``); must be at least 1.
    window : float
        Seconds over which the busy cores are measured.

    Returns
    -------
    int
    """
    if requested is not None:
        return check_scalar(requested, "the thread count", int, min_val=1)
    cores = usable_cores()
    busy = busy_cores(window)
    if busy is None:
        return 1
    # a core counts as busy once a third of it is in use
    return max(1, min(cores, math.floor(cores - busy + 1 / 3)))


def choose_threading_layer(numba):
    """Numba's "workqueue" threading layer, unless ``NUMBA_THREADING_LAYER`` chose one: the OpenMP
    layer's idle threads spin and fight OpenBLAS's threads for the cores (a parallel kernel's launch
    took 4-8 ms instead of 1.4 us on a busy machine). It takes effect if no parallel kernel has run
    yet; the fast kernels call it when they are imported, :func:`configure` before it starts Numba's
    threads."""
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        numba.config.THREADING_LAYER = "workqueue"


def configure(requested=None, window=0.2):
    """Choose the thread count and apply it to BLAS (threadpoolctl) and Numba.

    Without ``requested``, a count the user set by environment variable is
    kept for BLAS (and ``NUMBA_NUM_THREADS`` for Numba).

    Returns
    -------
    dict with ``threads`` (the count chosen), ``blas`` and ``numba`` (the
    counts in force afterwards; ``numba`` is None when Numba is not installed)
    and ``source`` ("--threads", "environment" or "free cores").
    """
    import numpy  # noqa: F401 - loads the BLAS library threadpoolctl is to find
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    user_env = [v for v in THREAD_ENV_VARS if os.environ.get(v)]
    if requested is None and user_env:
        source = "environment"
        n = choose_threads(int(os.environ[user_env[0]])) if os.environ[user_env[0]].isdigit() else None
    else:
        source = "--threads" if requested is not None else "free cores"
        n = choose_threads(requested, window)
    if n is not None:
        controller.limit(limits=n, user_api="blas")
    blas = [info["num_threads"] for info in controller.select(user_api="blas").info()]
    numba_threads = None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        numba = None
    if numba is not None:
        choose_threading_layer(numba)                    # before set_num_threads starts the threads
        if n is not None and not (requested is None and os.environ.get("NUMBA_NUM_THREADS")):
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        numba_threads = numba.get_num_threads()
    return {"threads": n if n is not None else (min(blas) if blas else 1), "blas": min(blas) if blas else None,
            "numba": numba_threads, "source": source}
