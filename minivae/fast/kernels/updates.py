"""The optimisers' updates, in place, one pass per array. Twins: the updates of :mod:`minivae.optim`.

Each update first adds ``decay * p`` to the gradient (weight decay: with decay = 1/N, the gradient
of the N(0, I) parameter prior's -(1/N) log p(theta), :func:`minivae.optim.decayed_gradient`) in the
same pass, so the prior costs no pass of its own. Scalars arrive as Python floats and are rounded
to the arrays' dtype here, as NumPy rounds a Python float meeting a float32 array.

``sgd_part``, ``adagrad_part`` and ``adam_part`` are the same three updates for elements [lo, hi)
only, on the calling thread (never Numba's threads): the two-thread step
(:mod:`minivae.fast.pair`) runs them beside other work, where a threaded kernel must not start.
"""

from __future__ import annotations

import numpy as np

from ...optim import adagrad_update, adam_update, decayed_gradient, sgd_update
from .common import _MAX_BLOCKS, _OPTS, PARALLEL_MIN_SIZE_FLAT, njit, prange

__all__ = ["sgd_step", "adagrad_step", "adam_step", "sgd_part", "adagrad_part", "adam_part"]

@njit(**_OPTS)
def _sgd_range(p, g, lr, decay):
    for i in range(p.shape[0]):
        p[i] -= lr * (g[i] + decay * p[i])


@njit(parallel=True, **_OPTS)
def sgd_step(p, g, lr, decay):
    """``p -= lr * (g + decay * p)`` in place. p, g: 1-D contiguous of one dtype."""
    n = p.shape[0]
    f = p.dtype.type
    lr_, decay_ = f(lr), f(decay)
    if n < PARALLEL_MIN_SIZE_FLAT:
        _sgd_range(p, g, lr_, decay_)
    else:
        for c in prange(_MAX_BLOCKS):
            lo, hi = c * n // _MAX_BLOCKS, (c + 1) * n // _MAX_BLOCKS
            _sgd_range(p[lo:hi], g[lo:hi], lr_, decay_)


def sgd_step_numpy(p, g, lr, decay):
    sgd_update(p, decayed_gradient(g, p, decay), lr)


@njit(**_OPTS)
def _adagrad_range(p, g, G, lr, eps, decay):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] + decay * pi
        Gi = G[i] + gi * gi
        G[i] = Gi
        p[i] = pi - lr * gi / (np.sqrt(Gi) + eps)


@njit(parallel=True, **_OPTS)
def adagrad_step(p, g, G, lr, eps, decay):
    """Adagrad in one pass: ``g' = g + decay * p; G += g'^2; p -= lr * g' / (sqrt(G) + eps)``.

    p, g, G: 1-D contiguous arrays of one dtype; g is read only.
    """
    n = p.shape[0]
    f = p.dtype.type
    lr_, eps_, decay_ = f(lr), f(eps), f(decay)
    if n < PARALLEL_MIN_SIZE_FLAT:
        _adagrad_range(p, g, G, lr_, eps_, decay_)
    else:
        for c in prange(_MAX_BLOCKS):
            lo, hi = c * n // _MAX_BLOCKS, (c + 1) * n // _MAX_BLOCKS
            _adagrad_range(p[lo:hi], g[lo:hi], G[lo:hi], lr_, eps_, decay_)


def adagrad_step_numpy(p, g, G, lr, eps, decay):
    adagrad_update(p, decayed_gradient(g, p, decay), G, lr, eps)


@njit(**_OPTS)
def _adam_range(p, g, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2, c1, c2, eps, decay):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] + decay * pi
        mi = m[i] * beta1 + one_minus_beta1 * gi
        vi = v[i] * beta2 + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)


@njit(parallel=True, **_OPTS)
def adam_step(p, g, m, v, t, lr, beta1, beta2, eps, decay):
    """Adam in one pass, as :func:`minivae.optim.adam_update` writes it, at update number t.

    ``g' = g + decay * p``; ``m = beta1 m + (1 - beta1) g'``; ``v = beta2 v + (1 - beta2) g'^2``;
    ``p -= lr * (m / c1) / (sqrt(v / c2) + eps)`` with c1 = 1 - beta1^t, c2 = 1 - beta2^t
    (computed in float64, then rounded to the arrays' dtype, as NumPy does).
    """
    n = p.shape[0]
    f = p.dtype.type
    args = (f(lr), f(beta1), f(beta2), f(1.0 - beta1), f(1.0 - beta2), f(1.0 - beta1 ** t), f(1.0 - beta2 ** t),
            f(eps), f(decay))
    if n < PARALLEL_MIN_SIZE_FLAT:
        _adam_range(p, g, m, v, *args)
    else:
        for c in prange(_MAX_BLOCKS):
            lo, hi = c * n // _MAX_BLOCKS, (c + 1) * n // _MAX_BLOCKS
            _adam_range(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], *args)


def adam_step_numpy(p, g, m, v, t, lr, beta1, beta2, eps, decay):
    adam_update(p, decayed_gradient(g, p, decay), m, v, t, lr, beta1, beta2, eps)


# --- the same, for elements [lo, hi) on the calling thread (see the module docstring) ----------------

@njit(**_OPTS)
def sgd_part(p, g, lr, decay, lo, hi):
    """Elements [lo, hi) of :func:`sgd_step`, on the calling thread."""
    f = p.dtype.type
    _sgd_range(p[lo:hi], g[lo:hi], f(lr), f(decay))


def sgd_part_numpy(p, g, lr, decay, lo, hi):
    sgd_step_numpy(p[lo:hi], g[lo:hi], lr, decay)


@njit(**_OPTS)
def adagrad_part(p, g, G, lr, eps, decay, lo, hi):
    """Elements [lo, hi) of :func:`adagrad_step`, on the calling thread."""
    f = p.dtype.type
    _adagrad_range(p[lo:hi], g[lo:hi], G[lo:hi], f(lr), f(eps), f(decay))


def adagrad_part_numpy(p, g, G, lr, eps, decay, lo, hi):
    adagrad_step_numpy(p[lo:hi], g[lo:hi], G[lo:hi], lr, eps, decay)


@njit(**_OPTS)
def adam_part(p, g, m, v, t, lr, beta1, beta2, eps, decay, lo, hi):
    """Elements [lo, hi) of :func:`adam_step`, on the calling thread."""
    f = p.dtype.type
    _adam_range(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], f(lr), f(beta1), f(beta2), f(1.0 - beta1), f(1.0 - beta2),
                f(1.0 - beta1 ** t), f(1.0 - beta2 ** t), f(eps), f(decay))


def adam_part_numpy(p, g, m, v, t, lr, beta1, beta2, eps, decay, lo, hi):
    adam_step_numpy(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], t, lr, beta1, beta2, eps, decay)


TWINS = {sgd_step: sgd_step_numpy, adagrad_step: adagrad_step_numpy, adam_step: adam_step_numpy,
         sgd_part: sgd_part_numpy, adagrad_part: adagrad_part_numpy, adam_part: adam_part_numpy}
