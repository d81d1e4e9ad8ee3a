r"""The variational bound from the EM view, in closed form on the linear-Gaussian model.

For any distribution q(z) over the latent variables of one datapoint x,

.. math::

    \log p_\theta(x) = \mathcal L(\theta, q; x) + D_{KL}\big(q(z)\,\|\,p_\theta(z|x)\big),
    \qquad
    \mathcal L(\theta, q; x) = \mathbb E_{q}[\log p_\theta(x|z)] - D_{KL}\big(q(z)\,\|\,p(z)\big),

the paper's eq. 1 and 2 (Section 2.2). EM maximises the bound by coordinate
ascent: the E-step sets q to the exact posterior p(z|x), closing the gap, the
M-step maximises E_q[log p(x|z)] over theta with q fixed; neither step can
lower log p(x). On the linear-Gaussian model of :mod:`minivae.teaching.linear_gaussian`
(p(x|z) = N(z A + c, s2 I)) every term is a closed form, so the identity holds
to rounding and one EM iteration can be done exactly. With a neural-network
decoder the posterior p(z|x) = p(x|z) p(z) / integral p(x|z) p(z) dz has no
closed form: AEVB replaces the E-step by a recognition model q_phi(z|x) trained
jointly with theta (notebook 05).

Shapes: x is (N, D); the moments of q, ``mu`` and ``log_var``, are (N, J);
per-datapoint results are (N,).
"""

from __future__ import annotations

import numpy as np

from ..estimator import LOG_2PI, kl_standard_normal
from .linear_gaussian import LinearGaussian, kl_diag_gaussians

__all__ = ["expected_log_likelihood", "elbo", "posterior_gap", "m_step"]


def expected_log_likelihood(lg: LinearGaussian, x, mu, log_var):
    r"""E_q[log N(x; z A + c, s2 I)] for q = N(mu, diag exp(log_var)), exactly.

    .. math::

        \mathbb E_q[\log p(x|z)] = -\frac D2 \log(2\pi s^2)
            - \frac{1}{2 s^2}\Big(\lVert x - c - \mu A\rVert^2 + \sum_j \sigma_j^2 \lVert A_j\rVert^2\Big),

    with :math:`A_j` the j-th row of A.

    Returns
    -------
    ndarray, shape (N,)
    """
    D = lg.A.shape[1]
    r = np.asarray(x, dtype=np.float64) - lg.c - mu @ lg.A                 # (N, D)
    spread = np.exp(log_var) @ np.sum(lg.A * lg.A, axis=1)                 # (N,)
    return -0.5 * D * (LOG_2PI + np.log(lg.s2)) - 0.5 * (np.sum(r * r, axis=1) + spread) / lg.s2


def elbo(lg: LinearGaussian, x, mu, log_var):
    """The lower bound L(theta, q; x) in closed form: E_q[log p(x|z)] - KL(q || p(z)), (N,)."""
    return expected_log_likelihood(lg, x, mu, log_var) - kl_standard_normal(mu, log_var)


def posterior_gap(lg: LinearGaussian, x, mu, log_var):
    """Both directions of the KL between q and the exact posterior, (N,) each.

    The posterior p(z|x) is diagonal only while the rows of A are orthogonal
    (as :func:`minivae.teaching.linear_gaussian.linear_gaussian` builds them).

    Returns
    -------
    kl_q_post : KL(q || p(z|x)), the gap log p(x) - L
    kl_post_q : KL(p(z|x) || q), which is not the gap
    """
    post_mu, post_log_var = lg.posterior(x)
    return (kl_diag_gaussians(mu, log_var, post_mu, post_log_var),
            kl_diag_gaussians(post_mu, post_log_var, mu, log_var))


def m_step(lg: LinearGaussian, x, mu, log_var):
    r"""The M-step of EM for the decoder: A, c, s2 maximising sum_i E_q[log p(x_i|z)].

    With :math:`\tilde z = [z, 1]` and :math:`\tilde W = [A; c]` of shape (J + 1, D),
    p(x|z) = N(z~ W~, s2 I), so the maximiser is a least-squares solution in
    the moments of q:

    .. math::

        \tilde W = \Big(\sum_i \mathbb E_q[\tilde z_i^\top \tilde z_i]\Big)^{-1} \sum_i \mathbb E_q[\tilde z_i]^\top x_i,
        \qquad
        s^2 = \frac{1}{N D} \sum_i \mathbb E_q \lVert x_i - \tilde z_i \tilde W\rVert^2.

    Returns
    -------
    LinearGaussian
        A new model with the updated A, c and s2 (its ``model`` attribute is
        the old VAE: after the M-step the rows of A need not be orthogonal, so
        the posterior is in general no longer diagonal; ``log_px`` stays exact).
    """
    x = np.asarray(x, dtype=np.float64)
    N, J = mu.shape
    m = np.hstack([mu, np.ones((N, 1))])                                   # (N, J + 1), E[z~]
    second = m.T @ m                                                       # (J + 1, J + 1)
    second[:J, :J] += np.diag(np.exp(log_var).sum(axis=0))                 # + sum_i Cov(z_i)
    W = np.linalg.solve(second, m.T @ x)                                   # (J + 1, D)
    r = x - m @ W                                                          # (N, D)
    spread = np.exp(log_var) @ np.sum(W[:J] * W[:J], axis=1)               # (N,)
    s2 = float((np.sum(r * r) + spread.sum()) / (N * x.shape[1]))
    return LinearGaussian(lg.model, W[:J].copy(), W[J].copy(), s2)
