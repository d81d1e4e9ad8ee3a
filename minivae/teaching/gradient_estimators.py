r"""Two unbiased estimators of the gradient of an expectation, E_q[f(z)], on one objective.

Section 2.2 of the paper explains why it needs the reparameterisation trick:
the usual Monte-Carlo gradient estimator (the score function, or REINFORCE,
estimator) "exhibits very high variance". For q_phi(z) = N(mu, diag sigma^2)
and phi = (mu, log_var):

.. math::

    \nabla_\phi \mathbb E_{q_\phi(z)}[f(z)]
        = \mathbb E_{q_\phi(z)}\big[f(z)\, \nabla_\phi \log q_\phi(z)\big]
        \quad\text{(score function)}
        = \mathbb E_{\epsilon \sim \mathcal N(0, I)}\big[\nabla_\phi f(\mu + \sigma \odot \epsilon)\big]
        \quad\text{(reparameterised, Section 2.4)}.

Both are averages of L samples; :func:`score_function_gradient` uses only the
values f(z), :func:`reparameterized_gradient` the derivative df/dz. Both are
built from the estimator module's pieces: the score is the partial derivative
of ``log_diag_gaussian`` (``log_diag_gaussian_grad``), the path derivative is
``reparameterize_backward``. :class:`QuadraticObjective` is an objective whose
expectation and gradient are known in closed form, so a notebook can compare
both estimators with the truth (notebook 06).

Shapes: ``mu``, ``log_var`` are (M, J) (M independent problems, or M copies of
one); ``eps`` and ``z`` are (L, M, J); ``f`` maps (L, M, J) -> (L, M).
"""

from __future__ import annotations

import numpy as np

from .. import estimator as est

__all__ = ["score_function_gradient", "reparameterized_gradient", "QuadraticObjective"]


def score_function_gradient(f, mu, log_var, eps, baseline=0.0):
    r"""The score-function (REINFORCE) estimate of the gradient of E_q[f(z)].

    .. math::

        \hat g = \frac1L \sum_{l=1}^{L} \big(f(z_l) - b\big)\, \nabla_\phi \log q_\phi(z_l),
        \qquad z_l = \mu + \sigma \odot \epsilon_l,

    with the score :math:`\partial \log q / \partial \mu = (z - \mu) / \sigma^2`,
    :math:`\partial \log q / \partial \log\sigma^2 = ((z - \mu)^2 / \sigma^2 - 1) / 2`
    (the partial derivatives of :func:`minivae.estimator.log_diag_gaussian`,
    z held fixed). The score has mean zero, so any constant baseline b keeps
    the estimate unbiased (and can lower its variance).

    Parameters
    ----------
    f : callable, (L, M, J) -> (L, M)
        Only its values are used.
    mu, log_var : ndarray, shape (M, J)
    eps : ndarray, shape (L, M, J)
        N(0, I) noise; z is drawn as mu + sigma * eps.
    baseline : float or ndarray broadcastable to (L, M)

    Returns
    -------
    dmu, dlog_var : ndarray, shape (M, J)
    """
    z = est.reparameterize(mu, log_var, eps)                        # (L, M, J)
    _, score_mu, score_log_var = est.log_diag_gaussian_grad(z, mu, log_var)   # (L, M, J) each
    w = (f(z) - baseline)[..., None]                                # (L, M, 1)
    return np.mean(w * score_mu, axis=0), np.mean(w * score_log_var, axis=0)


def reparameterized_gradient(df, mu, log_var, eps):
    r"""The reparameterised (pathwise) estimate of the gradient of E_q[f(z)], Section 2.4.

    .. math::

        \hat g = \frac1L \sum_{l=1}^{L} \nabla_\phi f(\mu + \sigma \odot \epsilon_l):
        \quad \frac{\partial}{\partial \mu} = \frac{\partial f}{\partial z}, \quad
        \frac{\partial}{\partial \log\sigma^2} = \frac{\partial f}{\partial z} \odot \frac{\sigma \epsilon}{2}.

    For a fixed ``eps`` this is the exact gradient of
    (1/L) sum_l f(mu + sigma * eps_l), which is what the tests check by finite differences.

    Parameters
    ----------
    df : callable, (L, M, J) -> (L, M, J)
        The gradient of f with respect to z.
    mu, log_var : ndarray, shape (M, J)
    eps : ndarray, shape (L, M, J)

    Returns
    -------
    dmu, dlog_var : ndarray, shape (M, J)
    """
    L = eps.shape[0]
    z = est.reparameterize(mu, log_var, eps)                        # (L, M, J)
    return est.reparameterize_backward(df(z) / L, log_var, eps)     # the mean over the L samples


class QuadraticObjective:
    r"""f(z) = sum_j (z_j - c_j)^2, with E_q[f] and its gradient in closed form.

    For z ~ N(mu, diag sigma^2):

    .. math::

        \mathbb E_q[f] = \sum_j (\mu_j - c_j)^2 + \sigma_j^2, \qquad
        \frac{\partial \mathbb E_q[f]}{\partial \mu_j} = 2 (\mu_j - c_j), \qquad
        \frac{\partial \mathbb E_q[f]}{\partial \log\sigma_j^2} = \sigma_j^2.

    Parameters
    ----------
    c : ndarray, shape (J,) or (M, J)
        The target.
    """

    def __init__(self, c):
        self.c = np.asarray(c, dtype=np.float64)

    def __call__(self, z):
        """f(z): (L, M, J) -> (L, M)."""
        return np.sum((z - self.c) ** 2, axis=-1)

    def grad(self, z):
        """df/dz = 2 (z - c): (L, M, J)."""
        return 2.0 * (z - self.c)

    def expectation(self, mu, log_var):
        """E_q[f(z)] in closed form, (M,)."""
        return np.sum((mu - self.c) ** 2 + np.exp(log_var), axis=-1)

    def expectation_grad(self, mu, log_var):
        """The exact gradient of :meth:`expectation`: dmu, dlog_var of shape (M, J)."""
        dmu = 2.0 * (mu - self.c)                                  # (M, J)
        return dmu, np.broadcast_to(np.exp(log_var), dmu.shape).copy()
