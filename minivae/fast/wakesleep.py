"""The fast twin of the readable wake-sleep step: the AEVB twin's kernels and products, two phases.

:class:`FastWakeSleep` computes what :class:`minivae.baselines.wakesleep.WakeSleep` computes for the
stock model, phase by phase in the same order, each block of :meth:`FastWakeSleep.__call__` standing
in for one readable function:

- ``wake_loss_and_grads``: the fast AEVB step's forward pass (:mod:`minivae.fast.forward`: the
  encoder on x, z = mu + sigma * eps, the decoder, log p(x|z) and its gradient, which is the wake
  phase's since both weigh each log p(x|z) by -1/(M L)), then the decoder's half of its backward
  pass (:func:`minivae.fast.step._backward_decoder`), without the gradient into z (z is data here);
- ``dream``: the same calls on ``rng`` (z, then the decoder's sample: the same draws, the same dtype),
  the decoder's layers as the wake phase runs them, into its buffers (:func:`_dream`). A Bernoulli
  pixel of the dream is ``u < y`` with the readable step's uniform draw u and a probability y the
  kernels compute to within a rounding of the readable one, so the two dreams differ only where u
  falls within that rounding of y (about 1e-16 per pixel in float64, 1e-7 in float32): the same
  footing as the parameters themselves, which differ by rounding after one step;
- ``sleep_loss_and_grads``: the encoder on the dream (its products skipping the dream's zeros when
  they are most of it, as for MNIST), log q(z|x) and its partials by the readable estimator functions
  on (M, J) arrays, then the encoder's half of the fast backward pass
  (:func:`minivae.fast.step._backward_encoder`), without the gradient into x;
- the two ``opt.step`` calls: :func:`minivae.fast.step.fast_update`, only if the loss is finite.

Both gradients are taken at the step's starting parameters, as the readable step takes them. The
step runs on the calling thread (BLAS with its own threads), and refuses
(:class:`FastPathUnavailable`, with the reason) what
:func:`minivae.fast.eligibility.why_not_wake_sleep` does not recognise as the library's unchanged code.
"""

from __future__ import annotations

import numpy as np

from .. import estimator as est
from ..baselines import wakesleep as readable
from ..steps import StepResult
from . import kernels
from .eligibility import FastPathUnavailable, why_not_wake_sleep
from .step import _Run, _backward_decoder, _backward_encoder, _forward, _mean, blas_threads, fast_update

__all__ = ["FastWakeSleep"]


def _dream(run, rng):
    """:func:`minivae.baselines.wakesleep.dream` for ``len(run.x)`` points: z ~ N(0, I), then x ~ p(x|z)
    with the readable decoder's calls on ``rng``, the decoder's forward pass in the wake phase's
    buffers (free again: its backward pass is done). Returns z (M, J) and x (M, D)."""
    model, ws = run.model, run.ws
    dec, M = model.decoder, len(run.x)
    z = rng.standard_normal((M, model.J), dtype=model.dtype)           # (M, J), as dream
    inp = z
    for k, (lin, act) in enumerate(ws.dec_layers):
        np.matmul(inp, lin.params["W"], out=ws.dec_a[k][:M])             # (M, H)
        kernels.bias_act(ws.dec_a[k][:M], lin.params["b"], act, ws.dec_h[k][:M])
        inp = ws.dec_h[k][:M]
    if dec.kind == "bernoulli":                 # BernoulliDecoder.sample: x = [u < sigmoid(logits)], u ~ U(0, 1)
        logits, y = ws.out_a[:M], ws.out_da[:M]
        np.matmul(inp, dec.logits.params["W"], out=logits)               # (M, D)
        kernels.bias_act(logits, dec.logits.params["b"], kernels.ACT_CODES["sigmoid"], y)
        return z, (rng.random(y.shape) < y).astype(model.dtype)
    mean, log_var = ws.out_da[:M], ws.out_a2[:M]  # GaussianDecoder.forward, then its own sample
    np.matmul(inp, dec.mean_layer.params["W"], out=ws.out_a[:M])        # (M, D)
    kernels.bias_act(ws.out_a[:M], dec.mean_layer.params["b"],
                     kernels.ACT_CODES["sigmoid" if dec.sigmoid_mean else "identity"], mean)
    np.matmul(inp, dec.log_var.params["W"], out=log_var)                # (M, D)
    log_var += dec.log_var.params["b"]
    return z, dec.sample((mean, log_var), rng)


def _encoder_forward(run):
    """``GaussianEncoder.forward`` of the run's input into ``ws.heads`` = [mu | log_var] (M, 2J): each
    hidden layer's product (the first skipping x's zeros when ``run.sparse``), bias and activation in
    one kernel, then both heads in one product with ``[W_mu | W_lv]``."""
    ws, enc, J = run.ws, run.model.encoder, run.model.J
    inp = run.x
    for k, (lin, act) in enumerate(ws.enc_layers):
        if k == 0 and run.sparse:
            kernels.sparse_matmul(*run.index[0], lin.params["W"], ws.enc_a[0])                # (M, H)
        else:
            np.matmul(inp, lin.params["W"], out=ws.enc_a[k])                       # (M, H)
        kernels.bias_act(ws.enc_a[k], lin.params["b"], act, ws.enc_h[k])
        inp = ws.enc_h[k]
    np.matmul(inp, ws.W_heads, out=ws.heads)                                        # (M, 2J)
    ws.heads[:, :J] += enc.mu.params["b"]
    ws.heads[:, J:] += enc.log_var.params["b"]


class FastWakeSleep(readable.WakeSleep):
    """:class:`minivae.baselines.wakesleep.WakeSleep` for the stock model, on the fast path (same
    arguments, same numbers, the same draws from ``rng``).

    ``sparse_input``: True lets the products with a mostly-zero input (x in the wake phase, the dream
    in the sleep phase) skip its zeros; False keeps them dense; None (the default) chooses True when
    NumPy's BLAS runs on one thread at the first step, as :meth:`FastAEVB.takes_sparse_products
    <minivae.fast.step.FastAEVB.takes_sparse_products>` does, for the same measured reason.

    Raises
    ------
    FastPathUnavailable
        With the reason, for anything :func:`minivae.fast.eligibility.why_not_wake_sleep` refuses.
    """

    code_path = "fast (fused Numba kernels)"

    def __init__(self, model, opt_theta, opt_phi, weight_decay=0.0, L=1, sparse_input=None):
        super().__init__(model, opt_theta, opt_phi, weight_decay, L)
        reason = why_not_wake_sleep(model, opt_theta, opt_phi)
        if reason is not None:
            raise FastPathUnavailable(reason)
        self.sparse_input = None if sparse_input is None else bool(sparse_input)   # None: chosen at the first step
        self._workspaces = {}
        self._views = {}                       # flat views of (parameter, gradient, optimiser state) arrays

    def takes_sparse_products(self):
        """Whether the products with a mostly-zero input skip its zeros; with ``sparse_input=None``,
        decided (and kept) at the first call: True if BLAS runs on one thread then."""
        if self.sparse_input is None:
            self.sparse_input = blas_threads() == 1
        return self.sparse_input

    def evaluator(self):
        """The fused twin of the recorded bound: :func:`minivae.fast.evaluate.fast_dataset_elbo`."""
        from .evaluate import fast_dataset_elbo
        return fast_dataset_elbo

    def __call__(self, x, idx, rng):
        """The readable step's wake phase, dream, sleep phase and two updates, in that order."""
        model, sparse = self.model, self.takes_sparse_products()
        M = len(x)
        eps = model.sample_eps(M, self.L, rng)                          # (L, M, J), as the readable step

        # wake_loss_and_grads: -[log p(x|z) + log p(z)] and theta's gradient, z = mu + sigma * eps held as data
        run = _Run(model, x, eps, "B", self._workspaces, sparse, None, indexed=False)   # x: in one product
        ws = run.ws
        _forward(run)                                                   # ws.ll: log p(x|z) (L*M,); ws.out_da
        wake = -float(_mean(ws.ll + est.log_standard_normal(ws.z)))     # (L*M,) rows, sample-major
        _backward_decoder(run, None)                                    # the decoder's grads; no dz

        # dream: z ~ p(z), x ~ p(x|z), from theta before this step's update
        z, x_dream = _dream(run, rng)                                   # (M, J), (M, D)

        # sleep_loss_and_grads: -log q(z|x) on the dream and phi's gradient
        run.read(x_dream, sparse)
        _encoder_forward(run)                                           # ws.heads = [mu | log_var]
        J = model.J
        mu, log_var = ws.heads[:, :J], ws.heads[:, J:]                  # (M, J) each
        sleep = -float(np.mean(est.log_diag_gaussian(z[None], mu, log_var)))
        _, dmu_q, dlog_var_q = est.log_diag_gaussian_grad(z[None], mu, log_var)   # (1, M, J) each, partials
        np.divide(dmu_q[0], -M, out=ws.dheads[:, :J])                   # d loss / d mu
        np.divide(dlog_var_q[0], -M, out=ws.dheads[:, J:])              # d loss / d log_var
        np.sum(ws.dheads[:, :J], axis=0, out=model.encoder.mu.grads["b"])
        np.sum(ws.dheads[:, J:], axis=0, out=model.encoder.log_var.grads["b"])
        _backward_encoder(run)                                          # the encoder's grads; no dx

        loss = wake + sleep
        if np.isfinite(loss):
            fast_update(self.opt_theta, model.theta, model.decoder.grads, self.weight_decay, self._views)
            fast_update(self.opt_phi, model.phi, model.encoder.grads, self.weight_decay, self._views)
        return StepResult(loss, None)
