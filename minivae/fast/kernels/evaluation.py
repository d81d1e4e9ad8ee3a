"""Forward only: the evaluation's log-likelihoods and log-mean-exp.

The recorded bound and the importance-sampled log p(x) (:mod:`minivae.fast.evaluate`) need no
gradient: these kernels compute log p(x|z) alone, for a block of decoder rows at a time (so a
block's activations stay in cache between its product and its kernel), and add up the importance
weights chunk by chunk. Twins: :mod:`minivae.estimator`'s log-likelihoods and
:func:`minivae.evaluate.logmeanexp`.
"""

from __future__ import annotations

import math

import numpy as np

from ... import estimator as est
from ...evaluate import logmeanexp
from ...layers import ACTIVATIONS
from .common import _OPTS, PARALLEL_MIN_SIZE, _chunk, _n_chunks, _sum, njit, prange
from .elementary import _exp, _sigmoid, exp_
from .heads import _bernoulli_terms

__all__ = ["bernoulli_ll", "gaussian_ll", "log_mean_exp_accumulate"]

@njit(**_OPTS)
def _bernoulli_ll_rows(a, b, x, r0, ll, i0, i1):
    D = a.shape[1]
    M = x.shape[0]
    terms, ts, es = np.empty(D, dtype=a.dtype), np.empty(D, dtype=a.dtype), np.empty(D, dtype=a.dtype)
    for i in range(i0, i1):
        _bernoulli_terms(a[i], b, x[(r0 + i) % M], ts, es, terms)
        ll[i] = _sum(terms)                      # accumulated in float64


@njit(parallel=True, **_OPTS)
def bernoulli_ll(a, b, x, r0, ll):
    """Bernoulli log p(x|z) from the logits, forward only (Appendix C.1).

    ``ll[i] = sum_d x[m,d] t[i,d] - softplus(t[i,d])`` with t = a + b and
    m = (r0 + i) % M: the block's rows are rows r0, r0 + 1, ... of the
    sample-major (L*M, D) decoder output.

    Parameters
    ----------
    a : (R, D) the product ``h @ W`` for R rows. Read only.
    b : (D,) bias.
    x : (M, D) data.
    r0 : int, the first row's index in the whole (L*M) output.
    ll : (R,) written.
    """
    R = a.shape[0]
    if a.size < PARALLEL_MIN_SIZE:
        _bernoulli_ll_rows(a, b, x, r0, ll, 0, R)
    else:
        nc = _n_chunks(R)
        for c in prange(nc):
            i0, i1 = _chunk(c, nc, R)
            _bernoulli_ll_rows(a, b, x, r0, ll, i0, i1)


def bernoulli_ll_numpy(a, b, x, r0, ll):
    M = x.shape[0]
    rows = (r0 + np.arange(a.shape[0])) % M
    ll[...] = est.bernoulli_log_likelihood(x[rows], a + b)


@njit(**_OPTS)
def _gaussian_ll_rows(am, bm, alv, blv, x, sigmoid_mean, r0, ll, i0, i1):
    D = am.shape[1]
    M = x.shape[0]
    one = am.dtype.type(1.0)
    log_2pi = am.dtype.type(est.LOG_2PI)
    terms = np.empty(D, dtype=am.dtype)
    for i in range(i0, i1):
        ami, alvi, xi = am[i], alv[i], x[(r0 + i) % M]
        for j in range(D):
            pre = ami[j] + bm[j]
            mean = _sigmoid(pre, one) if sigmoid_mean else pre
            lv = alvi[j] + blv[j]
            diff = xi[j] - mean
            terms[j] = log_2pi + lv + diff * diff * _exp(-lv)
        ll[i] = -0.5 * _sum(terms)


@njit(parallel=True, **_OPTS)
def gaussian_ll(am, bm, alv, blv, x, sigmoid_mean, r0, ll):
    """Gaussian log p(x|z), forward only (Appendix C.2), for rows r0, r0 + 1, ... (see :func:`bernoulli_ll`).

    mean = sigmoid(am + bm) if ``sigmoid_mean`` else am + bm; log_var = alv + blv;
    ``ll[i] = -1/2 sum_d (log 2 pi + log_var + (x - mean)^2 exp(-log_var))``.

    Parameters
    ----------
    am, alv : (R, D) products ``h @ W_mean``, ``h @ W_lv``. Read only.
    bm, blv : (D,) biases.
    x : (M, D) data.
    sigmoid_mean : bool
    r0 : int
    ll : (R,) written.
    """
    R = am.shape[0]
    if am.size < PARALLEL_MIN_SIZE:
        _gaussian_ll_rows(am, bm, alv, blv, x, sigmoid_mean, r0, ll, 0, R)
    else:
        nc = _n_chunks(R)
        for c in prange(nc):
            i0, i1 = _chunk(c, nc, R)
            _gaussian_ll_rows(am, bm, alv, blv, x, sigmoid_mean, r0, ll, i0, i1)


def gaussian_ll_numpy(am, bm, alv, blv, x, sigmoid_mean, r0, ll):
    M = x.shape[0]
    rows = (r0 + np.arange(am.shape[0])) % M
    squash = ACTIVATIONS["sigmoid"]() if sigmoid_mean else ACTIVATIONS["identity"]()   # the readable layer
    ll[...] = est.gaussian_log_likelihood(x[rows], squash.forward(am + bm), alv + blv)


@njit(**_OPTS)
def _logaddexp(a, b):
    """log(exp(a) + exp(b)) as np.logaddexp computes it (-inf and equal arguments included)."""
    if a == b:
        return a + math.log(2.0)
    d = a - b
    if d > 0:
        return a + math.log1p(exp_(-d))
    if d <= 0:
        return b + math.log1p(exp_(d))
    return d                                      # NaN


@njit(**_OPTS)
def log_mean_exp_accumulate(log_w, total):
    """``total = logaddexp(total, logmeanexp(log_w, axis=0) + log k)``: a running log sum_k w_k.

    The importance-sampled log p(x) adds up the weights of K samples chunk by
    chunk (:func:`minivae.evaluate.log_likelihood`); this is one chunk's share,
    in float64 whatever the weights' dtype, shifted by each column's maximum
    as :func:`minivae.evaluate.logmeanexp` is.

    Parameters
    ----------
    log_w : (k, M) log importance weights of k samples. Read only.
    total : (M,) float64, updated in place (-inf before the first chunk).
    """
    k, M = log_w.shape
    top = np.full(M, -math.inf)
    for r in range(k):
        row = log_w[r]
        for m in range(M):
            top[m] = max(top[m], np.float64(row[m]))
    for m in range(M):
        if not abs(top[m]) < math.inf:
            top[m] = 0.0                           # as logmeanexp: no shift for an infinite maximum
    s = np.zeros(M)
    for r in range(k):
        row = log_w[r]
        for m in range(M):
            s[m] += exp_(np.float64(row[m]) - top[m])
    for m in range(M):
        lme = top[m] + math.log(s[m] / k) if s[m] > 0 else -math.inf
        total[m] = _logaddexp(total[m], lme + math.log(k))


def log_mean_exp_accumulate_numpy(log_w, total):
    total[...] = np.logaddexp(total, logmeanexp(log_w, axis=0) + np.log(log_w.shape[0]))


TWINS = {bernoulli_ll: bernoulli_ll_numpy, gaussian_ll: gaussian_ll_numpy,
         log_mean_exp_accumulate: log_mean_exp_accumulate_numpy}
