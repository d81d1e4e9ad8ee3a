"""The SGVB estimators of AEVB and every piece they are made of, with gradients.

Equation numbers refer to arXiv:1312.6114v10 (see ``docs/paper-map.md``):
eq. 6 is estimator A, eq. 7 estimator B, eq. 8 the minibatch form, eq. 10 the
Gaussian-encoder estimator of Section 3.

Sign and scale, stated once for the whole package: the model *minimises*

    loss = -ELBO per datapoint
         = -(1/M) sum_i L(theta, phi; x_i),

each L(theta, phi; x_i) summed over the D pixels and the J latent units, in
nats. The paper's minibatch estimator (eq. 8) is (N/M) sum_i L(...; x_i),
i.e. N times ``-loss``: the same objective up to a constant factor. Logs and
figures report the ELBO itself (a negative number of nats per datapoint), as
the paper's figures do.

Shapes: M datapoints, D pixels, J latent units, L samples per datapoint.
``mu``, ``log_var``, ``sigma`` are (M, J); ``eps`` and ``z`` are (L, M, J);
per-sample log-densities are (L, M); per-datapoint bounds are (M,).

Every ``*_grad`` / ``*_backward`` function returns the gradient of the
quantity its twin returns (not of the loss): the model applies the sign.
"""

from __future__ import annotations

import numpy as np

from .layers import sigmoid, softplus

__all__ = [
    "reparameterize", "reparameterize_backward",
    "kl_standard_normal", "kl_standard_normal_grad",
    "bernoulli_log_likelihood", "bernoulli_log_likelihood_grad",
    "gaussian_log_likelihood", "gaussian_log_likelihood_grad",
    "log_standard_normal", "log_standard_normal_grad",
    "log_diag_gaussian", "log_diag_gaussian_grad",
    "estimator_a", "estimator_a_backward",
    "estimator_b", "estimator_b_backward",
    "log_parameter_prior", "log_parameter_prior_grad",
    "LOG_2PI", "ESTIMATORS", "check_estimator",
]

LOG_2PI = float(np.log(2.0 * np.pi))

#: The SGVB estimators of Section 2.3, by name: A (eq. 6, generic) and B (eq. 7, analytic KL).
ESTIMATORS = ("A", "B")


def check_estimator(name):
    """Return ``name`` if it is one of :data:`ESTIMATORS`, else raise one clear ValueError."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {name!r}.")
    return name


# --- reparameterisation (Section 2.4; the Gaussian case of eq. 10) ----------

def reparameterize(mu, log_var, eps):
    r"""z = mu + sigma * eps with sigma = exp(log_var / 2).

    .. math::

        z^{(l)} = \mu + \sigma \odot \epsilon^{(l)}, \qquad \sigma = \exp\big(\tfrac12 \log\sigma^2\big),
        \qquad \epsilon^{(l)} \sim \mathcal N(0, I).

    ``log_var`` is the log of the *variance* sigma^2 (Appendix C.2 writes
    log sigma^2), so the standard deviation is exp(log_var / 2), not
    exp(log_var).

    Parameters
    ----------
    mu, log_var : ndarray, shape (M, J)
    eps : ndarray, shape (L, M, J)
        Pre-drawn N(0, I) noise; the same array must reach the backward pass.

    Returns
    -------
    z : ndarray, shape (L, M, J)
    """
    sigma = np.exp(0.5 * log_var)   # (M, J)
    return mu + sigma * eps         # (L, M, J)


def reparameterize_backward(dz, log_var, eps):
    r"""Gradients of z = mu + exp(log_var / 2) * eps, given dz.

    dz/dmu = 1 and dz/dlog_var = eps * sigma / 2; the L samples each
    contribute, so the sums over the sample axis are written out:

    .. math::

        \texttt{dmu} = \sum_{l=1}^{L} \texttt{dz}_l, \qquad
        \texttt{dlog\_var} = \tfrac12\, \sigma \odot \sum_{l=1}^{L} \texttt{dz}_l \odot \epsilon_l.

    Parameters
    ----------
    dz : ndarray, shape (L, M, J)
    log_var : ndarray, shape (M, J)
    eps : ndarray, shape (L, M, J)
        The noise used in the forward pass (not a fresh draw).

    Returns
    -------
    dmu, dlog_var : ndarray, shape (M, J)
    """
    sigma = np.exp(0.5 * log_var)                    # (M, J)
    dmu = dz.sum(axis=0)                             # (M, J)
    dlog_var = 0.5 * sigma * (dz * eps).sum(axis=0)  # (M, J)
    return dmu, dlog_var


# --- analytic KL to the prior (Appendix B) ---------------------------------

def kl_standard_normal(mu, log_var):
    r"""KL(N(mu, diag sigma^2) || N(0, I)) per datapoint, Appendix B.

    .. math::

        -D_{KL}\big(q_\phi(z|x)\,\|\,p(z)\big) = \frac12 \sum_{j=1}^{J}
        \big(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\big).

    Returns
    -------
    kl : ndarray, shape (M,), non-negative.
    """
    return -0.5 * np.sum(1.0 + log_var - mu * mu - np.exp(log_var), axis=-1)


def kl_standard_normal_grad(mu, log_var):
    r"""Gradient of :func:`kl_standard_normal` for each datapoint.

    .. math::

        \frac{\partial D_{KL}}{\partial \mu_j} = \mu_j, \qquad
        \frac{\partial D_{KL}}{\partial \log\sigma_j^2} = \tfrac12 \big(\sigma_j^2 - 1\big).

    Returns
    -------
    dmu : ndarray (M, J), equal to mu
    dlog_var : ndarray (M, J), equal to (sigma^2 - 1) / 2
    """
    return mu.copy(), 0.5 * (np.exp(log_var) - 1.0)


# --- decoder likelihoods (Appendix C.1, C.2) ---------------------------------

def bernoulli_log_likelihood(x, logits):
    r"""log p(x|z) for the Bernoulli decoder, Appendix C.1, from the logits.

    With y = sigmoid(logits), sum_k x_k log y_k + (1 - x_k) log(1 - y_k)
    equals sum_k x_k * logits_k - softplus(logits_k), which is exact and finite
    for every logit (no clipping of y):

    .. math::

        \log p_\theta(x|z) = \sum_{k=1}^{D} x_k \log y_k + (1 - x_k) \log(1 - y_k)
        = \sum_{k=1}^{D} x_k \ell_k - \log\big(1 + e^{\ell_k}\big), \qquad y = \operatorname{sigmoid}(\ell).

    Parameters
    ----------
    x : ndarray, shape (M, D), values in [0, 1]
    logits : ndarray, shape (L, M, D) or (M, D)

    Returns
    -------
    ndarray, shape (L, M) or (M,)
    """
    return np.sum(x * logits - softplus(logits), axis=-1)


def bernoulli_log_likelihood_grad(x, logits):
    r"""d log p(x|z) / d logits = x - sigmoid(logits), same shape as ``logits``.

    .. math::

        \frac{\partial \log p_\theta(x|z)}{\partial \ell_k} = x_k - \operatorname{sigmoid}(\ell_k).
    """
    return x - sigmoid(logits)


def gaussian_log_likelihood(x, mean, log_var):
    r"""log N(x; mean, diag exp(log_var)) summed over D, Appendix C.2.

    .. math::

        \log p_\theta(x|z) = -\frac12 \sum_{k=1}^{D} \Big(\log 2\pi + \log\sigma_k^2
        + \frac{(x_k - m_k)^2}{\sigma_k^2}\Big).

    Parameters
    ----------
    x : ndarray, shape (M, D)
    mean, log_var : ndarray, shape (L, M, D) or (M, D)

    Returns
    -------
    ndarray, shape (L, M) or (M,)
    """
    diff = x - mean
    return -0.5 * np.sum(LOG_2PI + log_var + diff * diff * np.exp(-log_var), axis=-1)


def gaussian_log_likelihood_grad(x, mean, log_var):
    r"""Gradients of :func:`gaussian_log_likelihood` with respect to mean and log_var.

    .. math::

        \frac{\partial}{\partial m_k} = \frac{x_k - m_k}{\sigma_k^2}, \qquad
        \frac{\partial}{\partial \log\sigma_k^2} = \frac12 \Big(\frac{(x_k - m_k)^2}{\sigma_k^2} - 1\Big).

    Returns
    -------
    dmean : (x - mean) / sigma^2
    dlog_var : ((x - mean)^2 / sigma^2 - 1) / 2
    """
    prec = np.exp(-log_var)
    diff = x - mean
    return diff * prec, 0.5 * (diff * diff * prec - 1.0)


# --- densities of z, for estimator A (Section 2.3, eq. 6) -------------------

def log_standard_normal(z):
    """log p(z) = log N(z; 0, I), summed over J. z: (..., J) -> (...)."""
    return -0.5 * np.sum(LOG_2PI + z * z, axis=-1)


def log_standard_normal_grad(z):
    """d log p(z) / dz = -z."""
    return -z


def log_diag_gaussian(z, mu, log_var):
    """log q(z|x) = log N(z; mu, diag exp(log_var)), summed over J.

    z: (L, M, J); mu, log_var: (M, J) -> (L, M).
    """
    diff = z - mu
    return -0.5 * np.sum(LOG_2PI + log_var + diff * diff * np.exp(-log_var), axis=-1)


def log_diag_gaussian_grad(z, mu, log_var):
    """Partial derivatives of log q(z|x) with respect to z, mu and log_var.

    These are *partial* derivatives, z held fixed; the total derivative through
    z = mu + sigma * eps is what the chain rule in the model adds up. (Done by
    hand, d/dmu cancels to 0 and d/dlog_var to -1/2: the "path" and "score"
    parts of the gradient of log q.)

    Returns
    -------
    dz : (L, M, J), equal to -(z - mu) / sigma^2
    dmu : (L, M, J), equal to (z - mu) / sigma^2
    dlog_var : (L, M, J), equal to ((z - mu)^2 / sigma^2 - 1) / 2
    """
    prec = np.exp(-log_var)
    diff = z - mu
    return -diff * prec, diff * prec, 0.5 * (diff * diff * prec - 1.0)


# --- the two SGVB estimators ------------------------------------------------

def estimator_a(log_px_z, z, mu, log_var):
    r"""SGVB estimator A (generic), eq. 6, per datapoint.

    .. math::

        \widetilde{\mathcal L}^A(\theta, \phi; x) = \frac1L \sum_{l=1}^{L}
        \Big[\log p_\theta(x|z^{(l)}) + \log p(z^{(l)}) - \log q_\phi(z^{(l)}|x)\Big].

    Parameters
    ----------
    log_px_z : ndarray, shape (L, M)
    z : ndarray, shape (L, M, J)
    mu, log_var : ndarray, shape (M, J)

    Returns
    -------
    ndarray, shape (M,)
    """
    return np.mean(log_px_z + log_standard_normal(z) - log_diag_gaussian(z, mu, log_var), axis=0)


def estimator_a_backward(dout, z, mu, log_var):
    """Gradients of :func:`estimator_a` given dout = dObjective / dL^A, shape (M,).

    Returns
    -------
    dlog_px_z : (L, M)
        What reaches the decoder's log-likelihood.
    dz : (L, M, J)
        The part of the gradient reaching z through log p(z) and log q(z|x)
        (the decoder adds its own part).
    dmu, dlog_var : (M, J)
        The part reaching (mu, log_var) directly through log q(z|x).
    """
    L = z.shape[0]
    w = dout / L                                            # (M,)
    dlog_px_z = np.broadcast_to(w, z.shape[:2]).copy()      # (L, M)
    dz_q, dmu_q, dlog_var_q = log_diag_gaussian_grad(z, mu, log_var)
    wz = w[None, :, None]                                   # (1, M, 1)
    dz = wz * (log_standard_normal_grad(z) - dz_q)          # (L, M, J)
    dmu = -(wz * dmu_q).sum(axis=0)                         # (M, J)
    dlog_var = -(wz * dlog_var_q).sum(axis=0)               # (M, J)
    return dlog_px_z, dz, dmu, dlog_var


def estimator_b(log_px_z, mu, log_var):
    r"""SGVB estimator B (analytic KL), eq. 7, per datapoint.

    .. math::

        \widetilde{\mathcal L}^B(\theta, \phi; x) = -D_{KL}\big(q_\phi(z|x)\,\|\,p(z)\big)
        + \frac1L \sum_{l=1}^{L} \log p_\theta(x|z^{(l)}).

    Parameters
    ----------
    log_px_z : ndarray, shape (L, M)
    mu, log_var : ndarray, shape (M, J)

    Returns
    -------
    ndarray, shape (M,)
    """
    return -kl_standard_normal(mu, log_var) + np.mean(log_px_z, axis=0)


def estimator_b_backward(dout, L, mu, log_var):
    """Gradients of :func:`estimator_b` given dout = dObjective / dL^B, shape (M,).

    Returns
    -------
    dlog_px_z : (L, M)
    dmu, dlog_var : (M, J)
        The part reaching (mu, log_var) through -KL.
    """
    dlog_px_z = np.broadcast_to(dout / L, (L, dout.shape[0])).copy()  # (L, M)
    dmu_kl, dlog_var_kl = kl_standard_normal_grad(mu, log_var)
    return dlog_px_z, -dout[:, None] * dmu_kl, -dout[:, None] * dlog_var_kl


# --- the parameter prior (Section 5: MAP on the parameters) -----------------

def log_parameter_prior(params):
    r"""log N(theta; 0, I) summed over every parameter array, without the constant.

    The paper adds a small weight decay "corresponding to a prior
    p(theta) = N(0, I)". Per datapoint it enters the loss as
    -(1/N) log p(theta): see :meth:`minivae.model.VAE.loss_and_grads`.
    The additive constant -(P/2) log 2 pi is left out; it has no gradient:

    .. math::

        \log p(\theta) = -\frac12 \sum_i \theta_i^2 + \text{const}, \qquad
        \frac{\partial \log p(\theta)}{\partial \theta} = -\theta.
    """
    return -0.5 * sum(float(np.sum(p * p)) for p in params.values())


def log_parameter_prior_grad(params):
    """d log p(theta) / d theta = -theta, per parameter name."""
    return {name: -p for name, p in params.items()}
