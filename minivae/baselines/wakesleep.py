"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal 1995), the baseline of Figures 2 and 3.

The paper compares AEVB with wake-sleep "with the same encoder (also called
recognition model)" (Section 5). The model is the same :class:`minivae.model.VAE`:
an encoder q_phi(z|x) and a decoder p_theta(x|z) with the prior p(z) = N(0, I).
Only the training differs. Each step has two phases, each moving one
parameter group with its own optimiser:

Wake phase (theta, the generative model)
    For a minibatch of real x, draw z ~ q_phi(z|x) as z = mu + sigma * eps and
    treat z as if it were observed data: theta steps *up*
    log p_theta(x|z) + log p(z). No gradient flows through z into phi: the
    encoder only proposes the "missing" latent values. log p(z) = log N(z; 0, I)
    has no theta in it, so it adds to the wake loss but not to its gradient
    (it is kept in the loss so that the loss is -log p(x, z) itself).
Sleep phase (phi, the recognition model)
    Dream from the generative model: z ~ p(z), x ~ p_theta(x|z) (binary draws
    for the Bernoulli decoder, Gaussian draws for the Gaussian one). phi
    steps *up* log q_phi(z|x) on the dream, i.e. the encoder learns to invert
    the generative model on its own fantasies. This minimises
    E_{p(x)} KL(p(z|x) || q(z|x)) over the model's own p(x), the "wrong" KL
    compared with the ELBO's KL(q || p(z|x)) on the data.

Neither phase optimises the ELBO, so the step reports no bound
(``StepResult.elbo is None``); :func:`minivae.train.fit` records the ELBO of a
wake-sleep model with the same estimator (B) as AEVB's, and the curves of
Figure 2 stand on the same footing.

Sign and scale as in :mod:`minivae.estimator`: each phase *minimises* its loss
per datapoint (averaged over the minibatch and the L samples, summed over
pixels and latent units, in nats),

    wake loss  = -(1/(M L)) sum_{i,l} [log p(x_i|z_il) + log p(z_il)],  z_il = mu_i + sigma_i * eps_il
    sleep loss = -(1/M) sum_i log q(z_i|x_i),   z_i ~ N(0, I), x_i ~ p(x|z_i)

Both gradients are taken at the parameters the step starts from (the dream
comes from the decoder before this step's wake update), so a non-finite loss in
either phase leaves every parameter unchanged.
"""

from __future__ import annotations

import numpy as np

from .. import estimator as est
from ..optim import Optimizer
from ..steps import StepResult, TrainingStep
from ..utils import check_scalar

__all__ = ["wake_loss_and_grads", "sleep_loss_and_grads", "dream", "WakeSleep"]


def wake_loss_and_grads(model, x, eps):
    """Wake phase: -[log p(x|z) + log p(z)] per datapoint, z from the encoder held as data.

    Parameters
    ----------
    model : minivae.model.VAE
    x : ndarray, shape (M, D)
        Real data.
    eps : ndarray, shape (L, M, J)
        Pre-drawn N(0, I) noise: z = mu + sigma * eps, the encoder's sample.

    Returns
    -------
    loss : float
        -(1/(M L)) sum_{i,l} [log p(x_i|z_il) + log p(z_il)], nats per datapoint.

    Fills ``model.decoder.grads`` (theta) with the gradient of ``loss``; the
    encoder's gradients are not touched: z is treated as observed, so nothing
    reaches phi. log p(z) has no theta, so only log p(x|z) has a gradient.
    """
    x = model.check_x(x)
    eps = model.check_eps(eps, len(x))
    L, M, J = eps.shape
    mu, log_var = model.encoder.forward(x)                       # (M, J) each
    z = est.reparameterize(mu, log_var, eps)                     # (L, M, J), from here on: data
    out = model.decoder.forward(z.reshape(L * M, J))             # (L*M, D) each
    out = tuple(o.reshape(L, M, model.D) for o in out)           # (L, M, D) each
    log_px_z = model.decoder.log_likelihood(x, out)              # (L, M)
    log_pz = est.log_standard_normal(z)                          # (L, M), no theta in it
    loss = -float(np.mean(log_px_z + log_pz))

    dlog_px_z = np.full((L, M), -1.0 / (L * M), dtype=model.dtype)          # d loss / d log p(x_i|z_il)
    dout = model.decoder.log_likelihood_grad(x, out, dlog_px_z)             # (L, M, D) each
    model.decoder.backward(tuple(d.reshape(L * M, model.D) for d in dout))  # fills theta's grads; dz unused
    return loss


def dream(model, M, rng):
    """The sleep phase's fantasy: z ~ p(z) = N(0, I), then x ~ p_theta(x|z).

    Returns
    -------
    z : ndarray (M, J)
    x : ndarray (M, D)
        Binary draws for the Bernoulli decoder, Gaussian draws (mean plus
        sigma times noise) for the Gaussian decoder, in the model's dtype.
    """
    z = rng.standard_normal((M, model.J), dtype=model.dtype)    # (M, J)
    x = model.decoder.sample(model.decoder.forward(z), rng)     # (M, D)
    return z, x.astype(model.dtype, copy=False)


def sleep_loss_and_grads(model, z, x_dream):
    """Sleep phase: -log q(z|x) per datapoint on a dream (z, x) from the generative model.

    Parameters
    ----------
    model : minivae.model.VAE
    z : ndarray, shape (M, J)
        The dreamed latent values (from p(z)).
    x_dream : ndarray, shape (M, D)
        The dreamed data (from p(x|z)).

    Returns
    -------
    loss : float
        -(1/M) sum_i log N(z_i; mu(x_i), diag sigma^2(x_i)), nats per datapoint.

    Fills ``model.encoder.grads`` (phi) with the gradient of ``loss``; z and x
    are data here, so only the partial derivatives of log q with respect to
    (mu, log_var) reach the encoder (:func:`minivae.estimator.log_diag_gaussian_grad`).
    The decoder's gradients are not touched.
    """
    x_dream = np.asarray(x_dream, dtype=model.dtype)
    z = np.asarray(z, dtype=model.dtype)
    if x_dream.ndim != 2 or x_dream.shape[1] != model.D or z.shape != (len(x_dream), model.J):
        raise ValueError(f"the dream must be z of shape (M, J) = (M, {model.J}) and x of shape (M, D) = "
                         f"(M, {model.D}) with the same M; got z {z.shape} and x {x_dream.shape}.")
    M = len(x_dream)
    z = z[None]                                                      # (1, M, J): the shape log q expects
    mu, log_var = model.encoder.forward(x_dream)                     # (M, J) each
    log_q = est.log_diag_gaussian(z, mu, log_var)                    # (1, M)
    loss = -float(np.mean(log_q))

    _, dmu_q, dlog_var_q = est.log_diag_gaussian_grad(z, mu, log_var)   # (1, M, J) each, partials
    dmu = -dmu_q[0] / M                                                 # (M, J): d loss / d mu
    dlog_var = -dlog_var_q[0] / M                                       # (M, J)
    model.encoder.backward(dmu, dlog_var)
    return loss


class WakeSleep(TrainingStep):
    """One wake-sleep step: a wake update of theta on the minibatch, a sleep update of phi on a dream.

    Parameters
    ----------
    model : minivae.model.VAE
    opt_theta, opt_phi : minivae.optim.Optimizer
        Two distinct optimisers: one updates only ``model.theta`` (the
        decoder), the other only ``model.phi`` (the encoder). The paper used
        Adagrad "for all algorithms"; the command line gives both the same lr.
    weight_decay : float
        Passed to both optimisers: 1/N applies the N(0, I) parameter prior
        (the paper's weight decay) to theta and phi alike, as for AEVB.
    L : int
        Encoder samples z per datapoint in the wake phase (the paper: 1).

    Notes
    -----
    Per call, from ``rng`` in this order: eps (L, M, J) for the wake phase,
    then the dream's z (M, J) and its x. The sleep phase dreams M points, as
    many as the minibatch. The returned loss is the sum of the two phases'
    losses (wake + sleep, nats per datapoint): not a bound, only the number
    whose finiteness the loop checks.
    """

    name = "wake-sleep"

    def __init__(self, model, opt_theta, opt_phi, weight_decay=0.0, L=1):
        super().__init__(model)
        for label, opt in (("opt_theta", opt_theta), ("opt_phi", opt_phi)):
            if not isinstance(opt, Optimizer):
                raise TypeError(f"{label} must be a minivae.optim.Optimizer, not {type(opt).__name__}.")
        if opt_theta is opt_phi:
            raise ValueError("wake-sleep needs two optimiser objects, one for theta and one for phi; "
                             "pass two instances (e.g. Adagrad(lr), Adagrad(lr)).")
        check_scalar(L, "L (samples per datapoint)", int, min_val=1)
        self.opt_theta, self.opt_phi = opt_theta, opt_phi
        self.weight_decay = float(weight_decay)
        self.L = int(L)

    def __call__(self, x, idx, rng):
        model = self.model
        eps = model.sample_eps(len(x), self.L, rng)                    # (L, M, J)
        wake = wake_loss_and_grads(model, x, eps)                      # fills the decoder's grads
        z, x_dream = dream(model, len(x), rng)                         # from theta before this step's update
        sleep = sleep_loss_and_grads(model, z, x_dream)                # fills the encoder's grads
        loss = wake + sleep
        if np.isfinite(loss):
            self.opt_theta.step(model.theta, model.decoder.grads, weight_decay=self.weight_decay)
            self.opt_phi.step(model.phi, model.encoder.grads, weight_decay=self.weight_decay)
        return StepResult(loss, None)

    def optimizers(self):
        return {"theta": self.opt_theta, "phi": self.opt_phi}

    def describe(self):
        return {**super().describe(), "L": self.L, "weight_decay": self.weight_decay}
