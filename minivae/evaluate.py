"""Honest evaluation: the test-set lower bound and an importance-sampled log p(x).

The importance-sampled estimate (Burda et al., 2015; Rezende et al., 2014)
uses the encoder as proposal:

    log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x).

By Jensen's inequality its expectation lies between the ELBO and log p(x), and
it tends to log p(x) as K grows; the paper's Appendix D HMC estimator is
reliable only for small J, this one works for any J. It is computed in chunks
of samples and datapoints with a running log-sum-exp, so memory stays bounded
whatever K is.
"""

from __future__ import annotations

import numpy as np

from .train import dataset_elbo
from .utils import as_generator

__all__ = ["dataset_elbo", "log_likelihood", "logmeanexp"]


def logmeanexp(a, axis=0):
    """log(mean(exp(a))) along ``axis``, without overflow or underflow."""
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):            # every term -inf: log(0) = -inf is the answer
        out = m + np.log(np.mean(np.exp(a - m), axis=axis, keepdims=True))
    return np.squeeze(out, axis=axis)


def log_likelihood(model, x, K=5000, rng=None, batch_size=100, chunk=500, progress=False):
    """Importance-sampled log p(x) per datapoint, with K samples from q(z|x).

    Parameters
    ----------
    model : VAE
    x : ndarray (N, D)
    K : int
        Importance samples per datapoint (5000 for reporting, as in Burda et al.).
    rng : None, int or Generator
    batch_size : int
        Datapoints processed together.
    chunk : int
        Samples drawn at once; memory ~ chunk * batch_size * D floats.
    progress : bool
        Show a progress bar over datapoints.

    Returns
    -------
    ndarray (N,), float64: the estimate of log p(x_i) in nats, one per datapoint.
    Report its mean, with its standard error ``std / sqrt(N)``.
    """
    if K < 1:
        raise ValueError(f"K must be at least 1; got {K}.")
    rng = as_generator(rng)
    x = model.check_x(x)
    out = np.empty(len(x))
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, unit="batch", desc=f"log p(x), K={K}")
    for start in starts:
        xb = x[start:start + batch_size]
        total = np.full(len(xb), -np.inf)               # running log sum_k w_k
        for k0 in range(0, K, chunk):
            k = min(chunk, K - k0)
            log_w = model.log_importance_weights(xb, model.sample_eps(len(xb), k, rng))   # (k, m)
            total = np.logaddexp(total, logmeanexp(log_w, axis=0) + np.log(k))
        out[start:start + len(xb)] = total - np.log(K)
    return out
