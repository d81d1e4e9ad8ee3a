"""Hidden layers: the bias add fused with the activation, and back (the activation's derivative
fused with the bias gradient). Twins: the readable layers of :mod:`minivae.layers`.
"""

from __future__ import annotations

import numpy as np

from ...layers import ACTIVATIONS
from .common import (_OPTS, ACT_NAMES, PARALLEL_MIN_SIZE, PARALLEL_MIN_SIZE_FLAT, RELU, SIGMOID, SOFTPLUS, TANH,
                     _chunk, _column_sums, _n_chunks, njit, prange)
from .elementary import _sigmoid, _softplus, _tanh

__all__ = ["bias_act", "bias_act_backward"]

@njit(**_OPTS)
def _bias_act_rows(a, b, act, h, r0, r1):
    """Rows [r0, r1) of :func:`bias_act`; the branch on ``act`` sits outside the vectorised loops."""
    n = a.shape[1]
    zero, one = a.dtype.type(0.0), a.dtype.type(1.0)   # constants in a's dtype keep float32 math float32
    for i in range(r0, r1):
        ai, hi_ = a[i], h[i]
        if act == TANH:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = _tanh(v)
        elif act == SIGMOID:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = _sigmoid(v, one)
        elif act == RELU:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = max(v, zero)
        elif act == SOFTPLUS:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = _softplus(v, zero)
        else:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = v


@njit(parallel=True, **_OPTS)
def bias_act(a, b, act, h):
    """Bias add fused with the activation: ``a += b`` (the pre-activation), ``h = act(a)``.

    Parameters
    ----------
    a : (R, C) array, the product ``x @ W``; overwritten with ``x @ W + b``.
    b : (C,) bias.
    act : int, one of ``ACT_CODES``.
    h : (R, C) array, written; must not be ``a``.
    """
    R = a.shape[0]
    nc = _n_chunks(R)
    if a.size < PARALLEL_MIN_SIZE:
        _bias_act_rows(a, b, act, h, 0, R)
    else:
        for c in prange(nc):
            r0, r1 = _chunk(c, nc, R)
            _bias_act_rows(a, b, act, h, r0, r1)


def bias_act_numpy(a, b, act, h):
    a += b
    h[...] = ACTIVATIONS[ACT_NAMES[act]]().forward(a)      # the readable layer's own forward


@njit(**_OPTS)
def _act_backward_rows(dh, a, h, act, da, part, r0, r1):
    """Rows [r0, r1) of :func:`bias_act_backward`; their column sums of da go to part."""
    n = dh.shape[1]
    zero, one = dh.dtype.type(0.0), dh.dtype.type(1.0)
    for j in range(n):
        part[j] = zero
    for i in range(r0, r1):
        dhi, ai, hi_, dai = dh[i], a[i], h[i], da[i]
        if act == TANH:
            for j in range(n):
                g = dhi[j] * (one - hi_[j] * hi_[j])
                dai[j] = g
                part[j] += g
        elif act == SIGMOID:
            for j in range(n):
                g = dhi[j] * hi_[j] * (one - hi_[j])
                dai[j] = g
                part[j] += g
        elif act == RELU:
            for j in range(n):
                g = dhi[j] * (one if ai[j] > zero else zero)
                dai[j] = g
                part[j] += g
        elif act == SOFTPLUS:
            for j in range(n):
                g = dhi[j] * _sigmoid(ai[j], one)
                dai[j] = g
                part[j] += g
        else:
            for j in range(n):
                g = dhi[j]
                dai[j] = g
                part[j] += g


@njit(parallel=True, **_OPTS)
def bias_act_backward(dh, a, h, act, da, db):
    """Activation derivative fused with the bias gradient.

    Parameters
    ----------
    dh : (R, C) gradient reaching the activation's output h.
    a, h : (R, C) pre-activation and activation from :func:`bias_act`.
    act : int, one of ``ACT_CODES``.
    da : (R, C) written: gradient reaching the pre-activation; must not be ``dh``.
    db : (C,) written: ``da.sum(axis=0)``, the bias gradient.
    """
    R = dh.shape[0]
    if dh.size < PARALLEL_MIN_SIZE_FLAT:                  # rows in order: db as da.sum(axis=0) adds them
        _act_backward_rows(dh, a, h, act, da, db, 0, R)
    else:
        nc = _n_chunks(R)
        part = np.empty((nc, dh.shape[1]), dtype=dh.dtype)
        for c in prange(nc):
            r0, r1 = _chunk(c, nc, R)
            _act_backward_rows(dh, a, h, act, da, part[c], r0, r1)
        _column_sums(part, db)


def bias_act_backward_numpy(dh, a, h, act, da, db):
    layer = ACTIVATIONS[ACT_NAMES[act]]()
    layer.forward(a)                                        # the readable layer's forward and backward
    da[...] = layer.backward(dh)
    db[...] = da.sum(axis=0)


TWINS = {bias_act: bias_act_numpy, bias_act_backward: bias_act_backward_numpy}
