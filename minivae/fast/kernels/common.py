"""What every kernel module shares: Numba (or its stand-in), the compile options, the activation
codes, and how big arrays are split over threads.

Threads: a Numba thread launch costs 20-50 us here, and for the paper's MNIST step one thread per
kernel (with OpenBLAS's two for the products) was measured faster over a whole step than two. So
kernels run serially below ``PARALLEL_MIN_SIZE`` elements (``PARALLEL_MIN_SIZE_FLAT`` for the
arithmetic-only, memory-bound ones), adding rows in order as ``a.sum(axis=0)`` does; larger arrays
are split into a fixed number of row chunks, each with its own partial column sum, so results never
depend on the thread count. Numba's "workqueue" layer is the default (``NUMBA_THREADING_LAYER``
overrides it): the OpenMP layer's idle threads spin and fight OpenBLAS's for the cores (a launch
took 4-8 ms instead of 1.4 us on a busy machine). The workqueue layer does not let two Python
threads run parallel kernels at the same time.

Numba's cache (``cache=True``) is refreshed when the file that defines a kernel changes, not when
a function it calls from another file does: after editing one of these modules, delete the
``__pycache__/*.nbi`` and ``*.nbc`` files of ``minivae/fast`` (or set ``NUMBA_CACHE_DIR`` to a new
folder) before timing or testing.
"""

from __future__ import annotations

from ...run.threads import choose_threading_layer

try:  # numba is a dependency; without it the kernels still run, as (slow) Python
    import numba
    from numba import njit, prange
    _DISABLE_JIT = bool(numba.config.DISABLE_JIT)
    choose_threading_layer(numba)  # workqueue unless NUMBA_THREADING_LAYER says otherwise (see above)
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None
    _DISABLE_JIT = True
    prange = range

    def njit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f

__all__ = ["JIT_ENABLED", "ACT_CODES", "PARALLEL_MIN_SIZE", "PARALLEL_MIN_SIZE_FLAT"]

#: False when Numba is missing or NUMBA_DISABLE_JIT is set: the kernels then run as Python.
JIT_ENABLED = not _DISABLE_JIT

# cache: compiled code is kept on disk; error_model="numpy": a / 0 gives inf
# instead of raising, which is also what lets LLVM vectorise loops with a division.
_OPTS = dict(cache=True, error_model="numpy", nogil=True)

IDENTITY, TANH, SIGMOID, RELU, SOFTPLUS = 0, 1, 2, 3, 4
#: The activations' codes, as the kernels take them (``act``).
ACT_CODES = {"identity": IDENTITY, "tanh": TANH, "sigmoid": SIGMOID, "relu": RELU, "softplus": SOFTPLUS}
ACT_NAMES = {code: name for name, code in ACT_CODES.items()}

_CHUNKS = 8         # row chunks (and blocks of flat arrays): a fixed number, so results
_MAX_BLOCKS = _CHUNKS  # do not depend on the thread count
#: Elements from which the kernels with exp / tanh / log1p (1-5 ns per element) use threads.
PARALLEL_MIN_SIZE = 262144
#: Elements from which the arithmetic-only kernels (0.2-1 ns per element, memory-bound) use threads.
PARALLEL_MIN_SIZE_FLAT = 4194304


@njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "nsz"})
def _sum(v):
    """Sum of a 1-D array, in any order (vectorised); used only where no terms cancel."""
    s = 0.0
    for i in range(v.shape[0]):
        s += v[i]
    return s


@njit(**_OPTS)
def _chunk(c, n_chunks, n):
    """Bounds [lo, hi) of chunk c of n_chunks over range(n)."""
    return c * n // n_chunks, (c + 1) * n // n_chunks


@njit(**_OPTS)
def _n_chunks(n):
    return max(1, min(_CHUNKS, n))


@njit(**_OPTS)
def _column_sums(part, out):
    """out = part.sum(axis=0), chunk after chunk."""
    for j in range(out.shape[0]):
        out[j] = part[0, j]
    for c in range(1, part.shape[0]):
        pc = part[c]
        for j in range(out.shape[0]):
            out[j] += pc[j]
