"""A linear-Gaussian VAE whose log p(x) and posterior p(z|x) are known in closed form.

p(z) = N(0, I), p(x|z) = N(z A + c, s^2 I) with the rows of A orthogonal, so that
the true posterior is a diagonal Gaussian, which the library's encoder can
represent exactly. It is the known-answer model of the tests and notebooks:
the ELBO equals log p(x) when q is the posterior, log p(x) = ELBO + KL(q || p(z|x))
otherwise, importance sampling and HMC-based estimators must find log p(x).

In the paper's terms this is factor analysis / probabilistic PCA, the one
decoder for which the E-step of EM is tractable (Section 2.1's intractability
starts as soon as the decoder is a network).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..estimator import LOG_2PI
from ..model import VAE
from ..utils import as_generator

__all__ = ["LinearGaussian", "linear_gaussian", "kl_diag_gaussians"]


@dataclass
class LinearGaussian:
    """The model's matrices and its closed forms.

    Attributes
    ----------
    model : VAE
        A VAE (H = (), identity activations, Gaussian decoder with a linear mean)
        whose encoder is set to the exact posterior.
    A : ndarray (J, D);  c : ndarray (D,);  s2 : float
        p(x|z) = N(z A + c, s2 I).
    """

    model: VAE
    A: np.ndarray
    c: np.ndarray
    s2: float

    @property
    def post_var(self):
        """Var(z_j | x), the same for every x: 1 / (1 + (A A^T)_jj / s2), shape (J,)."""
        return 1.0 / (1.0 + np.diag(self.A @ self.A.T) / self.s2)

    def cov_x(self):
        """Cov(x) = A^T A + s2 I, the marginal's covariance (D, D)."""
        return self.A.T @ self.A + self.s2 * np.eye(self.A.shape[1])

    def log_px(self, x):
        """Exact log p(x) per row of x (M, D): a Gaussian with mean c and covariance A^T A + s2 I."""
        D = self.A.shape[1]
        diff = np.asarray(x, dtype=np.float64) - self.c
        cov = self.cov_x()
        _, logdet = np.linalg.slogdet(cov)
        return -0.5 * (D * LOG_2PI + logdet + np.einsum("md,de,me->m", diff, np.linalg.inv(cov), diff))

    def posterior(self, x):
        """The exact posterior p(z|x) = N(mu, diag exp(log_var)): mu, log_var of shape (M, J)."""
        mu = (np.asarray(x, dtype=np.float64) - self.c) @ self.A.T * self.post_var / self.s2
        return mu, np.broadcast_to(np.log(self.post_var), mu.shape).copy()

    def sample(self, n, rng=None):
        """n draws of x from the model, (n, D)."""
        return as_generator(rng).multivariate_normal(self.c, self.cov_x(), size=n)


def linear_gaussian(D=5, J=2, noise=0.5, scales=(1.5, 0.7), seed=10):
    """Build the linear-Gaussian model with the encoder set to the exact posterior.

    Parameters
    ----------
    D, J : int
        Data and latent sizes (J <= D, J <= len(scales)).
    noise : float
        s, the decoder's standard deviation.
    scales : sequence of float
        Lengths of the rows of A (orthogonal directions).
    seed : int
        Draws the directions of A and the offset c.
    """
    if not 1 <= J <= min(D, len(scales)):
        raise ValueError(f"need 1 <= J <= min(D, len(scales)); got J={J}, D={D}, {len(scales)} scales.")
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((D, J)))[0].T          # (J, D), orthonormal rows
    A = np.asarray(scales[:J], dtype=np.float64)[:, None] * Q   # (J, D); A A^T diagonal
    c = rng.standard_normal(D) * 0.3
    s2 = float(noise) ** 2
    model = VAE(D=D, H=(), J=J, decoder="gaussian", sigmoid_mean=False, activation="identity", random_state=0)
    lg = LinearGaussian(model, A, c, s2)
    p = model.params
    p["dec.mean.W"][...] = A
    p["dec.mean.b"][...] = c
    p["dec.log_var.W"][...] = 0.0
    p["dec.log_var.b"][...] = np.log(s2)
    p["enc.mu.W"][...] = A.T * lg.post_var / s2                 # mu = (x - c) A^T Sigma / s^2
    p["enc.mu.b"][...] = -(c @ A.T) * lg.post_var / s2
    p["enc.log_var.W"][...] = 0.0
    p["enc.log_var.b"][...] = np.log(lg.post_var)
    return lg


def kl_diag_gaussians(mu_q, log_var_q, mu_p, log_var_p):
    """KL(N(mu_q, diag e^log_var_q) || N(mu_p, diag e^log_var_p)), summed over the last axis."""
    return 0.5 * np.sum(log_var_p - log_var_q + (np.exp(log_var_q) + (mu_q - mu_p) ** 2) / np.exp(log_var_p) - 1.0,
                        axis=-1)
