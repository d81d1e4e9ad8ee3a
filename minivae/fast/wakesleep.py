"""The fast twin of the readable wake-sleep step: the AEVB twin's kernels and products, two phases.

:class:`FastWakeSleep` computes what :class:`minivae.baselines.wakesleep.WakeSleep` computes for the
stock model, phase by phase in the same order, each block of :meth:`FastWakeSleep.__call__` standing
in for one readable function:

- ``wake_loss_and_grads``: the fast AEVB step's forward pass (:mod:`minivae.fast.forward`: the
  encoder on x, z = mu + sigma * eps, the decoder, log p(x|z) and its gradient, which is the wake
  phase's since both weigh each log p(x|z) by -1/(M L)), then the decoder's half of its backward
  pass (:func:`minivae.fast.step._backward_decoder`), without the gradient into z (z is data here);
- ``dream``: the readable function itself, looked up when the step runs (so an edit to it reaches
  both steps alike), so the draws from ``rng`` are the readable step's, and each binary pixel compares
  the same uniform number with the same probability (one a rounding away could flip a pixel);
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


def _encoder_forward(run):
    """``GaussianEncoder.forward`` of the run's input into ``ws.heads`` = [mu | log_var] (M, 2J): each
    hidden layer's product (the first skipping x's zeros when ``run.sparse``), bias and activation in
    one kernel, then both heads in one product with ``[W_mu | W_lv]``."""
    ws, enc, J = run.ws, run.model.encoder, run.model.J
    inp = run.x
    for k, (lin, act) in enumerate(ws.enc_layers):
        if k == 0 and run.sparse:
            kernels.sparse_matmul(*run.index[0], lin.params["W"], ws.enc_a[0])   # (M, H)
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
        run = _Run(model, x, eps, "B", self._workspaces, sparse, None)
        ws = run.ws
        _forward(run)                                                   # ws.ll: log p(x|z) (L*M,); ws.out_da
        wake = -float(_mean(ws.ll + est.log_standard_normal(ws.z)))     # (L*M,) rows, sample-major
        _backward_decoder(run, None)                                    # the decoder's grads; no dz

        # dream: z ~ p(z), x ~ p(x|z), from theta before this step's update (the readable function)
        z, x_dream = readable.dream(model, M, rng)                      # (M, J), (M, D)

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
            fast_update(self.opt_theta, model.theta, model.decoder.grads, self.weight_decay)
            fast_update(self.opt_phi, model.phi, model.encoder.grads, self.weight_decay)
        return StepResult(loss, None)
