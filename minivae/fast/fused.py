"""Runs of the two-thread step's work in one compiled call, without the GIL.

Each function here is a sequence the step (:mod:`minivae.fast.step`) would
otherwise make as several calls from Python: the same kernels of
:mod:`minivae.fast.kernels` on the same rows, and the same BLAS products as
``np.matmul`` (:func:`minivae.fast.blas.gemm_into`), so the numbers are the
same bit for bit (tested). What changes is that a thread running one takes the
GIL once, not once per product: on the two-thread step the worker no longer
waits for the GIL between the kernels of its half.

The two that make products return False, having written nothing the step would not write again, when
a product cannot go to BLAS as ``np.matmul`` would send it (a half of one
row, say); the step then runs the same rows from Python.
"""

from __future__ import annotations

from . import kernels as K
from .blas import gemm_into
from .kernels.common import njit
from .pair import mark_started

__all__ = ["bernoulli_forward_rows", "backward_rows", "adagrad_part", "intact"]

_PARTS = ("sparse_matmul_rows", "sparse_matmul_t_rows", "_bias_act_rows", "_reparameterize_kl_rows",
          "_bernoulli_rows", "_elbo_rows", "adagrad_part")
_ORIGINAL = tuple(getattr(K, name) for name in _PARTS)


def intact():
    """Whether the kernels these calls are made of are still those of :mod:`minivae.fast.kernels`.
    A compiled call runs the kernels it was compiled with; if one was replaced (a test's spy, a
    reader's experiment), the step makes its calls from Python instead, so the replacement runs."""
    return all(getattr(K, name) is f for name, f in zip(_PARTS, _ORIGINAL))


@njit(cache=True, nogil=True, error_model="numpy")
def bernoulli_forward_rows(flags, address, ilp64, sparse, x, W1, b1, act1, a1, h1, W_heads, heads, b_mu, b_lv, eps,
                           estimator_a, z, kl, log_ratio, Wd, bd, actd, ad, hd, Wo, bo, w, ll, out_a, out_da, part,
                           elbo, m0, m1):
    """The forward pass of datapoints [m0, m1) of an MLP VAE with one hidden layer on each side and a
    Bernoulli decoder, from x to the bound: what the step's ``forward_rows`` does for those rows
    (the first layer's product over x's nonzero entries if ``sparse``; then bias and activation,
    the heads, z and the KL, the decoder on rows l M + m for every sample l, the likelihood and
    its gradient, whose column sums are added to ``part`` after zeroing it; the bound)."""
    mark_started(flags)
    L, M = eps.shape[0], eps.shape[1]
    if m1 - m0 < 2:
        return False
    if sparse:
        K.sparse_matmul_rows(x, W1, a1, m0, m1)
    elif not gemm_into(address, ilp64, x[m0:m1], W1, a1[m0:m1]):
        return False
    K._bias_act_rows(a1, b1, act1, h1, m0, m1)
    if not gemm_into(address, ilp64, h1[m0:m1], W_heads, heads[m0:m1]):
        return False
    K._reparameterize_kl_rows(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio, m0, m1)
    part[:] = 0.0
    for l in range(L):                           # rows l M + m of the decoder: sample l of datapoint m
        r0, r1 = l * M + m0, l * M + m1
        if not gemm_into(address, ilp64, z[r0:r1], Wd, ad[r0:r1]):
            return False
        K._bias_act_rows(ad, bd, actd, hd, r0, r1)
        if not gemm_into(address, ilp64, hd[r0:r1], Wo, out_a[r0:r1]):
            return False
        K._bernoulli_rows(out_a, bo, x, w, ll, out_da, part, r0, r1)
    K._elbo_rows(ll, kl, log_ratio, estimator_a, elbo, m0, m1)
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def backward_rows(flags, address, ilp64, W, h_in, d_out, dx, with_dx, gW, sparse, r0, r1):
    """Rows [r0, r1) of W (input units), as the step's ``_backward_rows`` computes them: their columns
    of ``dx = d_out W^T`` (if ``with_dx``), then their rows of ``gW = h_in^T d_out`` (over the
    nonzero entries of a mostly-zero h_in if ``sparse``)."""
    mark_started(flags)
    if with_dx and not gemm_into(address, ilp64, d_out, W[r0:r1].T, dx[:, r0:r1]):
        return False
    if sparse:
        K.sparse_matmul_t_rows(h_in, d_out, gW, r0, r1)
        return True
    return gemm_into(address, ilp64, h_in[:, r0:r1].T, d_out, gW[r0:r1])


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_part(flags, p, g, G, lr, eps, decay, lo, hi):
    """:func:`minivae.fast.kernels.adagrad_part`, marking the worker's start first."""
    mark_started(flags)
    K.adagrad_part(p, g, G, lr, eps, decay, lo, hi)
