"""The marginal-likelihood estimator of Appendix D: HMC posterior samples and a fitted density q(z).

For any normalised density q(z),

    E_{z ~ p(z|x)} [ q(z) / (p(z) p(x|z)) ] = integral q(z) / p(x) dz = 1 / p(x),

so with samples z_l from the posterior

    p(x) ~= [ (1/L) sum_l q(z_l) / (p(z_l) p(x|z_l)) ]^(-1)          (Appendix D)

(a harmonic-mean estimator, stabilised by q). The paper's recipe, as
Kingma's own code (anglepy's ``hmc_est``) runs it and as implemented here:

1. draw L posterior samples per datapoint with HMC (:func:`minivae.baselines.hmc.hmc_sample`;
   the paper used L = 50 and 4 leapfrog steps);
2. fit a Gaussian q (full covariance, or diagonal) to the first half of them;
3. average q(z_l) / p(x, z_l) over the second half, in log space
   (a log-mean-exp), and invert: log p(x) = -logmeanexp(log q(z_l) - log p(x, z_l)).

Fitting q and evaluating on different samples keeps the estimate of 1/p(x)
unbiased given q (up to the correlation the chain leaves between its halves).
The estimator is reliable only for few latent variables (the paper: J < 5):
q must not have heavier tails than the posterior, or the average has an
infinite variance that no sample shows. Importance sampling with the encoder
(:func:`minivae.evaluate.log_likelihood`) is the estimator that works for any J.

Where the chains start (:func:`chain_starts`): at the highest of 1000 draws
from the prior, not at one draw, and not at the encoder's mean: the estimate is
a property of the decoder (theta) alone, so models trained by AEVB, wake-sleep
and Monte-Carlo EM are measured in the same way. Why not one draw: a decoder's
posterior can have several modes, and an HMC chain stays in the mode it starts
in. A chain confined to a mode that holds a fraction pi of the posterior's mass
averages q / p(x, z) over that mode only, which is 1 / (pi p(x)): the estimate
is log p(x) + log pi, too low, and no longer chain, larger L or more samples of
the same chain shows it. Monte-Carlo EM's decoders have such posteriors
(``benchmarks/bench_marginal.py``).
"""

from __future__ import annotations

import numpy as np

from ..estimator import LOG_2PI, log_standard_normal
from ..evaluate import logmeanexp
from .hmc import effective_sample_size, hmc_sample
from ..utils import as_generator, check_scalar

__all__ = ["appendix_d_log_likelihood", "dataset_marginal_likelihood", "grid_log_likelihood", "fit_gaussian",
           "log_gaussian", "chain_starts", "DENSITIES"]

#: The densities q that can be fitted to the first half of the samples.
DENSITIES = ("full", "diagonal")


def fit_gaussian(z, diagonal=False):
    """Mean and covariance of the samples z (n, M, J), for each of the M datapoints.

    Returns
    -------
    mean : ndarray (M, J)
    cov : ndarray (M, J, J)
        The unbiased sample covariance (divided by n - 1); only its diagonal
        when ``diagonal``.
    """
    n = z.shape[0]
    mean = z.mean(axis=0)                                          # (M, J)
    d = z - mean                                                   # (n, M, J)
    cov = np.einsum("nmi,nmj->mij", d, d) / (n - 1)                # (M, J, J)
    if diagonal:
        cov = cov * np.eye(z.shape[-1])
    return mean, cov


def log_gaussian(z, mean, cov):
    """log N(z; mean, cov) for z (n, M, J), mean (M, J), cov (M, J, J) -> (n, M).

    Raises ValueError when a covariance is not positive definite (the samples it
    was fitted to do not span J dimensions).
    """
    try:
        chol = np.linalg.cholesky(cov)                             # (M, J, J), lower triangular
    except np.linalg.LinAlgError:
        raise ValueError("the posterior samples of some datapoint do not span the J latent dimensions "
                         "(its chain barely moved), so no Gaussian can be fitted to them; use more samples "
                         "(L), a longer burn_in, or another step size.") from None
    J = z.shape[-1]
    d = np.moveaxis(z - mean, 0, -1)                               # (M, J, n)
    u = np.linalg.solve(chol, d)                                   # (M, J, n): L^-1 (z - mean)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)   # (M,)
    return (-0.5 * (J * LOG_2PI + log_det[:, None] + np.sum(u * u, axis=1))).T       # (n, M)


def chain_starts(model, x, rng, n_draws=1000, max_elements=2_000_000):
    """Where the HMC chains of Appendix D start: of n_draws draws from the prior, the one with the highest
    log p(x, z) = log p(z) + log p_theta(x|z), for each datapoint.

    Why: an HMC chain stays in the posterior mode it starts in, and a chain confined
    to a minor mode makes the Appendix D estimate too low (see the module docstring).
    The highest of many prior draws lies, for J < 5, in the basin of the posterior's
    highest mode. On a Monte-Carlo EM decoder (J = 3, 10^6 samples on 1000 MNIST
    images) chains from one prior draw gave estimates 33.5 +- 4.6 nats too low on average
    over 200 training images, and 318 on one; chains from the highest of 1000 draws were
    0.27 +- 0.25 nats below an importance-sampled reference (one image of the 200 still 49
    nats below), and 0.05 +- 0.04 on test images (``benchmarks/bench_marginal.py``, its
    table in docs/results.md).

    The draws are shared by the datapoints of x, so the decoder runs once per draw
    (the blocks of (draws, M, D) computed at once hold at most ``max_elements`` values).

    Parameters
    ----------
    model : VAE
    x : ndarray (M, D)
    rng : None, int or np.random.Generator
    n_draws : int
        Draws z ~ p(z) = N(0, I) to choose from.

    Returns
    -------
    z0 : ndarray (M, J)
    """
    rng = as_generator(rng)
    check_scalar(n_draws, "n_draws (prior draws the chains start from)", int, min_val=1)
    x = model.check_x(x)
    z = rng.standard_normal((n_draws, model.J), dtype=model.dtype)              # (K, J), shared by every row of x
    best = np.full(len(x), -np.inf)                                             # (M,)
    z0 = np.empty((len(x), model.J), dtype=model.dtype)                         # (M, J)
    rows = np.arange(len(x))
    step = max(1, max_elements // (len(x) * model.D))
    for k0 in range(0, n_draws, step):
        zk = z[k0:k0 + step]                                                    # (k, J)
        dec_out = tuple(o[:, None, :] for o in model.decoder.forward(zk))       # (k, 1, D) each
        log_pxz = model.decoder.log_likelihood(x, dec_out) + log_standard_normal(zk)[:, None]   # (k, M)
        top = np.argmax(log_pxz, axis=0)                                        # (M,) the block's best draw
        value = log_pxz[top, rows]                                              # (M,) and its log p(x, z)
        higher = value > best
        best = np.where(higher, value, best)
        z0[higher] = zk[top[higher]]
    return z0


def appendix_d_log_likelihood(model, x, rng, L=50, n_leapfrog=4, burn_in=100, density="full", z0=None,
                              start_draws=1000, step_size=0.1, adapt=True, target_acceptance=0.9, thin=1):
    """The Appendix D estimate of log p_theta(x) per datapoint, with its standard error.

    Parameters
    ----------
    model : VAE
        Only the decoder and the prior are used.
    x : ndarray (M, D)
    rng : None, int or np.random.Generator
    L : int
        Posterior samples per datapoint: the first L // 2 fit q, the other
        L - L // 2 enter the average (the paper: L = 50).
    n_leapfrog : int
        Leapfrog steps per HMC transition (the paper: 4).
    burn_in : int
        HMC transitions before the first kept sample; the step size of each
        datapoint is tuned towards ``target_acceptance`` during them.
    density : {"full", "diagonal"}
        The Gaussian q fitted to the first half of the samples.
    z0 : ndarray (M, J) or None
        Where the chains start; None: the highest of ``start_draws`` prior draws
        (:func:`chain_starts`).
    start_draws : int
        Prior draws the start is chosen from, when z0 is None.
    step_size, adapt, target_acceptance, thin : passed to :func:`minivae.baselines.hmc.hmc_sample`
        (``adapt=False`` keeps ``step_size`` as given).

    Returns
    -------
    log_px : ndarray (M,)
        -logmeanexp_l (log q(z_l) - log p(x, z_l)) over the evaluation half, nats.
    se : ndarray (M,)
        Its standard error by the delta method, sd(w) / (mean(w) sqrt(n_eff))
        with w_l = q(z_l) / p(x, z_l) and n_eff the effective sample size of
        the w_l along the chain (estimated on all L values, scaled to the second
        half, at most its number). It measures the noise of the average given q
        and cannot see tails no sample reached. On the linear-Gaussian model
        (L = 50, 4 leapfrog steps, 1600 datapoints) the root-mean-square error
        equals the root-mean-square se within 5 %, but the errors have heavier
        tails than a Gaussian: 1.2 % of them exceed 4 se.
    """
    rng = as_generator(rng)
    if density not in DENSITIES:
        raise ValueError(f"density must be one of {', '.join(DENSITIES)}; got {density!r}.")
    check_scalar(L, "L (posterior samples: half fit q, half estimate)", int, min_val=4)
    n_fit = L // 2
    if density == "full" and n_fit <= model.J:
        raise ValueError(f"L = {L} gives {n_fit} samples to fit a full Gaussian in J = {model.J} dimensions; "
                         f"use L >= {2 * (model.J + 1)} or density='diagonal'.")
    x = model.check_x(x)
    if z0 is None:
        z0 = chain_starts(model, x, rng, start_draws)                       # (M, J)
    z, stats = hmc_sample(model, x, z0, L, n_leapfrog, rng, step_size=step_size, adapt=adapt,
                          target_acceptance=target_acceptance, burn_in=burn_in, thin=thin,
                          return_stats=True)                                 # (L, M, J)
    mean, cov = fit_gaussian(z[:n_fit], diagonal=density == "diagonal")     # (M, J), (M, J, J)
    log_w = log_gaussian(z, mean, cov) - stats["log_pxz"]                   # (L, M): log q(z_l) / p(x, z_l)
    log_px = -logmeanexp(log_w[n_fit:], axis=0)                             # (M,) from the second half

    # The standard error: the spread of w over the second half, and the effective sample size
    # that the chain's autocorrelation leaves of it, estimated on the whole chain of w (L values:
    # the correlation of 25 values alone is too noisy, and too optimistic).
    n_est = L - n_fit
    w = np.exp(log_w - log_w.max(axis=0))                                   # (L, M), at most 1; sd/mean is scale-free
    n_eff = np.minimum(effective_sample_size(w) * n_est / L, n_est)         # (M,)
    se = np.std(w[n_fit:], axis=0, ddof=1) / (np.mean(w[n_fit:], axis=0) * np.sqrt(n_eff))
    return log_px, se


def dataset_marginal_likelihood(model, x, rng, estimator=None, L=50, n_leapfrog=4, batch_size=500, **kwargs):
    """Mean Appendix D estimate of log p(x) over the rows of x, with its standard error over them.

    ``estimator`` is accepted and ignored, so this function can be the
    ``evaluate=`` hook of :func:`minivae.train.fit` (which passes the name of
    the bound's estimator); ``kwargs`` go to :func:`appendix_d_log_likelihood`.

    Returns
    -------
    mean : float
        Nats per datapoint.
    se : float
        sd / sqrt(n) of the n per-datapoint estimates (NaN for one datapoint): the
        uncertainty of the mean from the choice of the n images and the estimator's
        own noise together. For MNIST images the sd is about 45 nats, so the mean of
        100 images is uncertain by 4.5 nats, of 1000 by 1.4.
    """
    rng = as_generator(rng)
    x = model.check_x(x)
    log_px = np.concatenate([appendix_d_log_likelihood(model, x[start:start + batch_size], rng, L=L,
                                                       n_leapfrog=n_leapfrog, **kwargs)[0]
                             for start in range(0, len(x), batch_size)])          # (N,)
    se = float(np.std(log_px, ddof=1) / np.sqrt(len(log_px))) if len(log_px) > 1 else float("nan")
    return float(np.mean(log_px)), se


def grid_log_likelihood(model, x, half_width=6.0, step=0.05, max_elements=2_000_000):
    """log p_theta(x) = log integral p(z) p(x|z) dz by the trapezoidal rule on a grid, for J = 1 or 2.

    A third estimate beside Appendix D and importance sampling, and for small J
    the known answer to hold them to: on [-half_width, half_width]^J with
    spacing ``step`` the rule is exact to rounding when ``step`` is well below
    the posterior's width (its error falls like exp(-2 pi^2 (width / step)^2)
    for a smooth integrand) and the prior's mass outside the box is negligible
    (about exp(-half_width^2 / 2)). A posterior narrower than a few grid
    steps (a sharp, well-trained decoder) needs a smaller ``step``.

    Parameters
    ----------
    model : VAE with J <= 2
    x : ndarray (M, D)
    half_width, step : float
        The box and the grid spacing.
    max_elements : int
        Bound on the size of the (grid points, datapoints, D) blocks computed at once.

    Returns
    -------
    ndarray (M,), nats.
    """
    if model.J > 2:
        raise ValueError(f"a grid over z has step^-J points: use it for J <= 2, not J = {model.J}; "
                         "use appendix_d_log_likelihood or minivae.evaluate.log_likelihood instead.")
    x = model.check_x(x)
    g = np.arange(-half_width, half_width + 0.5 * step, step)
    z = np.stack(np.meshgrid(*([g] * model.J), indexing="ij"), axis=-1).reshape(-1, model.J)   # (G, J)
    log_cell = model.J * np.log(step)
    out = np.full(len(x), -np.inf)
    rows = max(1, min(len(x), max_elements // (len(g) * model.D)))
    cols = max(1, max_elements // (rows * model.D))
    for r0 in range(0, len(x), rows):
        xb = x[r0:r0 + rows]                                                    # (m, D)
        total = np.full(len(xb), -np.inf)
        for c0 in range(0, len(z), cols):
            zc = z[c0:c0 + cols].astype(model.dtype)                            # (G_c, J)
            dec_out = tuple(o[:, None, :] for o in model.decoder.forward(zc))   # (G_c, 1, D) each
            log_pxz = model.decoder.log_likelihood(xb, dec_out) + log_standard_normal(zc)[:, None]  # (G_c, m)
            total = np.logaddexp(total, logmeanexp(log_pxz, axis=0) + np.log(len(zc)))
        out[r0:r0 + rows] = total + log_cell
    return out
