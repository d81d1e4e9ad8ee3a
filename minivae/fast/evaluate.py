"""The fast twin of evaluation: the recorded bound and the importance-sampled log p(x).

:func:`fast_dataset_elbo` is :func:`minivae.train.dataset_elbo` and
:func:`fast_log_likelihood` is :func:`minivae.evaluate.log_likelihood`: same
arguments, same results (float64 to about 1e-15 relative), and the *same
draws* from ``rng``, in the same order, so a run's history and its evaluation
do not depend on which path computed them. Forward only, no gradients:

- the encoder runs once per batch of datapoints (the readable
  ``log_importance_weights`` recomputes it for each chunk of samples; the
  numbers are the same), its heads in one product ``h @ [W_mu | W_lv]``;
- z = mu + sigma * eps and the KL (estimator B) or log p(z) - log q(z|x)
  (estimator A and the importance weights) in one kernel
  (:func:`minivae.fast.kernels.reparameterize_kl`);
- the decoder in blocks of rows, each block's product followed at once by
  its kernel (bias + activation, then log p(x|z) from the logits:
  :func:`~minivae.fast.kernels.bernoulli_ll`, :func:`~minivae.fast.kernels.gaussian_ll`),
  so the block's activations are still in cache and no (K, M, D) array is
  ever made;
- the running log-sum-exp over chunks of samples in one kernel
  (:func:`~minivae.fast.kernels.log_mean_exp_accumulate`).

Both run only for a model the fast path accepts
(:func:`minivae.fast.why_not` is None, and the readable evaluation functions
are those the twins were verified against); otherwise, or with Numba's JIT
off, they return what the readable functions return, by calling them.
"""

from __future__ import annotations

import numpy as np

from .. import evaluate as readable_evaluate
from .. import train as readable_train
from ..estimator import check_estimator
from ..utils import as_generator
from .eligibility import layer_pairs, why_not_evaluate

__all__ = ["fast_dataset_elbo", "fast_log_likelihood", "BLOCK_ROWS"]

#: Decoder rows per block: a block's hidden activations and logits (a few hundred kB) stay in L2/L3.
BLOCK_ROWS = 256


def _usable(model):
    from . import jit_enabled
    return jit_enabled() and why_not_evaluate(model) is None


class _Forward:
    """Buffers and the fused forward pass for one model; reused across batches and chunks."""

    def __init__(self, model):
        self.model = model
        self.enc_layers = layer_pairs(model.encoder.trunk)
        self.dec_layers = layer_pairs(model.decoder.trunk)
        enc, J = model.encoder, model.J
        self.W_heads = np.concatenate([enc.mu.params["W"], enc.log_var.params["W"]], axis=1)   # (H, 2J)
        self.b_mu, self.b_lv = enc.mu.params["b"], enc.log_var.params["b"]
        self.J = J
        self._buffers = {}

    def _buf(self, name, *shape):
        key = (name, shape)
        b = self._buffers.get(key)
        if b is None:
            b = self._buffers[key] = np.empty(shape, dtype=self.model.dtype)
        return b

    def encode(self, x):
        """The raw heads product ``h @ [W_mu | W_lv]`` (M, 2J), biases not yet added."""
        from . import kernels
        inp = x
        for k, (lin, act) in enumerate(self.enc_layers):
            a = self._buf(f"enc_a{k}", len(x), lin.params["W"].shape[1])
            h = self._buf(f"enc_h{k}", len(x), lin.params["W"].shape[1])
            np.matmul(inp, lin.params["W"], out=a)                      # (M, H)
            kernels.bias_act(a, lin.params["b"], act, h)
            inp = h
        heads = np.empty((len(x), 2 * self.J), dtype=self.model.dtype)
        np.matmul(inp, self.W_heads, out=heads)                         # (M, 2J)
        return heads

    def reparameterize(self, heads_raw, eps, estimator_a):
        """z (L*M, J), and the KL (M,) or log p(z) - log q(z|x) (L*M,), from the heads and eps (L, M, J)."""
        from . import kernels
        L, M, J = eps.shape
        heads = heads_raw.copy()                                        # the kernel adds the biases in place
        z = np.empty((L * M, J), dtype=self.model.dtype)
        kl = np.empty(M, dtype=self.model.dtype)
        log_ratio = np.empty(L * M, dtype=self.model.dtype)
        kernels.reparameterize_kl(heads, self.b_mu, self.b_lv, eps, estimator_a, z, kl, log_ratio)
        return z, kl, log_ratio

    def log_px_z(self, x, z):
        """log p(x|z) for the L*M rows of z (sample-major), decoded block by block: (L*M,)."""
        from . import kernels
        dec = self.model.decoder
        R = len(z)
        ll = np.empty(R, dtype=self.model.dtype)
        for r0 in range(0, R, BLOCK_ROWS):
            r1 = min(R, r0 + BLOCK_ROWS)
            n = r1 - r0
            inp = z[r0:r1]
            for k, (lin, act) in enumerate(self.dec_layers):
                width = lin.params["W"].shape[1]
                a = self._buf(f"dec_a{k}", BLOCK_ROWS, width)[:n]
                h = self._buf(f"dec_h{k}", BLOCK_ROWS, width)[:n]
                np.matmul(inp, lin.params["W"], out=a)                  # (n, H)
                kernels.bias_act(a, lin.params["b"], act, h)
                inp = h
            if dec.kind == "bernoulli":
                out = self._buf("out_a", BLOCK_ROWS, self.model.D)[:n]
                np.matmul(inp, dec.logits.params["W"], out=out)         # (n, D) logits, bias not yet added
                kernels.bernoulli_ll(out, dec.logits.params["b"], x, r0, ll[r0:r1])
            else:
                out_m = self._buf("out_a", BLOCK_ROWS, self.model.D)[:n]
                out_v = self._buf("out_a2", BLOCK_ROWS, self.model.D)[:n]
                np.matmul(inp, dec.mean_layer.params["W"], out=out_m)
                np.matmul(inp, dec.log_var.params["W"], out=out_v)
                kernels.gaussian_ll(out_m, dec.mean_layer.params["b"], out_v, dec.log_var.params["b"], x,
                                    dec.sigmoid_mean, r0, ll[r0:r1])
        return ll


def fast_dataset_elbo(model, x, rng, L=1, estimator="B", batch_size=1000):
    """:func:`minivae.train.dataset_elbo` on the fast path: the same draws from ``rng``, the same number.

    Returns
    -------
    float, the lower bound per datapoint averaged over ``x``, in nats.
    """
    if not _usable(model):
        return readable_train.dataset_elbo(model, x, rng, L=L, estimator=estimator, batch_size=batch_size)
    check_estimator(estimator)
    rng = as_generator(rng)
    fwd = _Forward(model)
    total = 0.0
    for start in range(0, len(x), batch_size):
        eps = model.sample_eps(len(x[start:start + batch_size]), L, rng)   # (L, M, J), drawn as the readable one
        xb = np.ascontiguousarray(model.check_x(x[start:start + batch_size]))
        eps = model.check_eps(eps, len(xb))
        z, kl, log_ratio = fwd.reparameterize(fwd.encode(xb), eps, estimator == "A")
        ll = fwd.log_px_z(xb, z).reshape(L, len(xb))                        # (L, M)
        if estimator == "A":
            elbo = np.mean(ll + log_ratio.reshape(L, len(xb)), axis=0)     # (M,)
        else:
            elbo = -kl + np.mean(ll, axis=0)                                # (M,)
        total += float(np.sum(elbo, dtype=np.float64))
    return total / len(x)


def fast_log_likelihood(model, x, K=5000, rng=None, batch_size=100, chunk=500, progress=False):
    """:func:`minivae.evaluate.log_likelihood` on the fast path: the same draws from ``rng``, the same estimates.

    Returns
    -------
    ndarray (N,), float64: the importance-sampled estimate of log p(x_i), in nats.
    """
    if not _usable(model):
        return readable_evaluate.log_likelihood(model, x, K=K, rng=rng, batch_size=batch_size, chunk=chunk,
                                                progress=progress)
    from . import kernels
    if K < 1:
        raise ValueError(f"K must be at least 1; got {K}.")
    rng = as_generator(rng)
    x = model.check_x(x)
    fwd = _Forward(model)
    out = np.empty(len(x))
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, unit="batch", desc=f"log p(x), K={K} (fast)")
    for start in starts:
        xb = np.ascontiguousarray(x[start:start + batch_size])
        heads = fwd.encode(xb)                                   # (m, 2J): the encoder once per batch
        total = np.full(len(xb), -np.inf)                        # running log sum_k w_k
        for k0 in range(0, K, chunk):
            k = min(chunk, K - k0)
            eps = model.check_eps(model.sample_eps(len(xb), k, rng), len(xb))   # (k, m, J), as the readable one
            z, _, log_ratio = fwd.reparameterize(heads, eps, True)              # log p(z) - log q(z|x)
            log_w = (fwd.log_px_z(xb, z) + log_ratio).reshape(k, len(xb))       # (k, m)
            kernels.log_mean_exp_accumulate(log_w, total)
        out[start:start + len(xb)] = total - np.log(K)
    return out
