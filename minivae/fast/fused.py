"""The two-thread step's work in one compiled call each, without the GIL.

On the two-thread step (:mod:`minivae.fast.pair`) each thread runs its half of the forward pass
(:func:`minivae.fast.forward.forward_rows`) and of each big layer's backward
(:func:`backward_rows`) as one compiled call: the same kernels of :mod:`minivae.fast.kernels` on
the same rows, and the same BLAS products as ``np.matmul`` (:func:`minivae.fast.blas.matmul_into`),
so the numbers are those of the same function run as Python, bit for bit (tested). What changes
is that a thread running one takes the GIL once, not once per product: the worker no longer waits
for the GIL between the kernels of its half.

The step makes these calls (``compiled`` in :mod:`minivae.fast.step`) when NumPy's BLAS is
reachable for the dtype (:func:`minivae.fast.blas.available`) and the kernels are the originals
(:func:`intact`); the forward pass compiled only for the paper's shape (one hidden layer on each
side, a Bernoulli decoder: :func:`compiled_forward`). A call returns False, having written nothing
the step would not write again, when a product cannot go to BLAS as ``np.matmul`` would send it (a
half of one row, say); the step then runs the same rows as Python.
"""

from __future__ import annotations

from . import kernels
from .blas import matmul_into
from .kernels.common import njit
from .pair import mark_started

__all__ = ["backward_rows", "backward_rows_python", "adagrad_part", "intact", "compiled_forward"]

_PARTS = ("sparse_matmul_rows", "sparse_matmul_t_rows", "_bias_act_rows", "_reparameterize_kl_rows",
          "_bernoulli_rows", "_elbo_rows", "adagrad_part")
_ORIGINAL = tuple(getattr(kernels, name) for name in _PARTS)


def intact():
    """Whether the kernels these calls are made of are still those of :mod:`minivae.fast.kernels`.
    A compiled call runs the kernels it was compiled with; if one was replaced (a test's spy, a
    reader's experiment), the step makes its calls from Python instead, so the replacement runs."""
    return all(getattr(kernels, name) is f for name, f in zip(_PARTS, _ORIGINAL))


def compiled_forward(enc_layers, dec_layers, decoder_kind):
    """Whether the forward pass is compiled for this shape: one hidden layer on each side and a
    Bernoulli decoder, the paper's MNIST model (other shapes run it as Python)."""
    return len(enc_layers) == 1 and len(dec_layers) == 1 and decoder_kind == "bernoulli"


@njit(cache=True, nogil=True, error_model="numpy")
def backward_rows(flags, blas, W, h_in, d_out, dx, with_dx, gW, sparse, r0, r1):
    """Rows [r0, r1) of W (input units): their columns of ``dx = d_out W^T`` (if ``with_dx``; else
    ``dx`` is not written), then their rows of ``gW = h_in^T d_out`` (over the nonzero entries of a
    mostly-zero h_in if ``sparse``). ``flags``: marked first (the worker's compiled half), None as
    Python; ``blas``: as for :func:`minivae.fast.forward.forward_rows`. Returns False if a compiled
    product could not be made."""
    if flags is not None:
        mark_started(flags)
    if with_dx and not matmul_into(blas, d_out, W[r0:r1].T, dx[:, r0:r1]):
        return False
    if sparse:
        kernels.sparse_matmul_t_rows(h_in, d_out, gW, r0, r1)
        return True
    return matmul_into(blas, h_in[:, r0:r1].T, d_out, gW[r0:r1])


#: :func:`backward_rows` as Python (the function itself, without the JIT).
backward_rows_python = getattr(backward_rows, "py_func", backward_rows)


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_part(flags, p, g, G, lr, eps, decay, lo, hi):
    """:func:`minivae.fast.kernels.adagrad_part`, marking the worker's start first."""
    mark_started(flags)
    kernels.adagrad_part(p, g, G, lr, eps, decay, lo, hi)
