"""Hybrid (Hamiltonian) Monte Carlo on the posterior p_theta(z|x), for Appendices D and E.

The paper's two baselines need samples from the true posterior of a decoder:
the E-step of Monte-Carlo EM (Appendix E, :mod:`minivae.baselines.mcem`) and the
marginal-likelihood estimator of Appendix D (:mod:`minivae.baselines.marginal`). Both
use hybrid Monte Carlo (Duane et al., 1987; Neal, 2011) with the gradient

    grad_z log p_theta(x, z) = grad_z log p(z) + grad_z log p_theta(x|z),

which is the decoder's own backward pass: the gradient of log p(x|z) reaching
the decoder's outputs (``decoder.log_likelihood_grad``), sent back through
the decoder to z (``decoder.backward_z``: the backward pass without the parameter
gradients, which HMC does not use), plus -z from the prior
(:func:`minivae.estimator.log_standard_normal_grad`).

One HMC transition, for every datapoint of a minibatch at once::

    p ~ N(0, I)                                 # (M, J) momentum, unit mass
    H(z, p) = -log p(x, z) + |p|^2 / 2          # (M,) energy
    (z', p') = leapfrog(z, p)                   # n_leapfrog steps of size eps
    accept with probability min(1, exp(H(z, p) - H(z', p')))

Each datapoint has its own chain, its own energy and its own accept/reject;
they share only the matrix products. A step size may be one number or one per
datapoint, shape (M,).

Step-size tuning, and why it is done this way: the paper tunes the step size
"automatically" towards about 90 % acceptance. :func:`hmc_sample` gives every
datapoint its own step size (posteriors of different datapoints have widths
that differ by orders of magnitude under a trained decoder) and tunes it by a
Robbins-Monro update of log eps on the Metropolis acceptance probability,
during burn-in only: the kept samples come from a chain with a fixed step
size, so they are a valid MCMC chain whose stationary law is p(z|x).
:class:`minivae.baselines.mcem.MCEM` instead tunes one global step size that never
stops adapting; its reasons are in that module.

Shapes: x (M, D); z, p, gradients (M, J); energies and log-densities (M,);
a chain of n kept samples (n, M, J). Randomness only through the Generator
passed in (momenta, the accept/reject uniforms, nothing else).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import estimator as est
from ..utils import as_generator, check_scalar

__all__ = ["log_joint", "log_joint_grad_z", "log_joint_and_grad", "leapfrog", "HMCTransition",
           "hmc_transition", "hmc_step", "hmc_sample", "adapt_log_step_size", "effective_sample_size",
           "ADAPT_GAIN", "ADAPT_DECAY", "JITTER"]


#: The Robbins-Monro gains of :func:`hmc_sample`'s burn-in: ADAPT_GAIN * (t + 1)^(-ADAPT_DECAY) at transition t.
#: Large first gains (each change clipped to a factor e) let a step size that is 35 times too small or
#: 9 times too large recover within 100 transitions (tests/test_hmc.py, on the linear-Gaussian model).
ADAPT_GAIN = 10.0
ADAPT_DECAY = 0.6
#: How much :func:`hmc_transition` randomises the step size: eps * U(1 - JITTER, 1 + JITTER).
JITTER = 0.2


def _check_z(model, x, z):
    z = np.asarray(z)
    if z.ndim not in (2, 3) or z.shape[-2:] != (len(x), model.J):
        raise ValueError(f"z must have shape (M, J) or (L, M, J) with M = {len(x)} rows of x and "
                         f"J = {model.J}; got {z.shape}.")
    if not np.isfinite(z).all():
        raise ValueError("z contains NaN or infinite values; start the chains from finite points.")
    return z.astype(model.dtype, copy=False)


def _log_joint_and_grad(model, x, z, value=True):
    """The unchecked core of :func:`log_joint_and_grad`: z (..., M, J) -> (..., M), (..., M, J).

    Only the gradient in z is computed (``decoder.backward_z``: no parameter gradients), and
    with ``value=False`` not log p(x, z) either (None in its place): a leapfrog step inside a
    trajectory uses the gradient alone, and the likelihood's softplus is most of its cost.
    """
    dec = model.decoder
    lead = z.shape[:-1]                                        # (M,) or (L, M)
    out = dec.forward(z.reshape(-1, model.J))                  # (K, D) each, K = L * M
    out = tuple(o.reshape(lead + (model.D,)) for o in out)     # (..., M, D) each
    dout = dec.log_likelihood_grad(x, out, np.ones(lead, dtype=model.dtype))
    dz_dec = dec.backward_z(tuple(d.reshape(-1, model.D) for d in dout)).reshape(z.shape)
    dz = dz_dec + est.log_standard_normal_grad(z)              # (..., M, J): through p(x|z) and p(z)
    if not value:
        return None, dz
    return est.log_standard_normal(z) + dec.log_likelihood(x, out), dz


def log_joint_and_grad(model, x, z):
    """log p(z) + log p_theta(x|z) per datapoint and its gradient in z, from one forward and one backward.

    Parameters
    ----------
    model : minivae.model.VAE
        Only its decoder and the prior N(0, I) are used.
    x : ndarray (M, D)
    z : ndarray (M, J), or (L, M, J) for L values of z per datapoint

    Returns
    -------
    log_pxz : ndarray (M,) or (L, M)
        log p(x, z) = log p(z) + log p(x|z), in nats.
    dz : ndarray, the shape of z
        grad_z log p(x, z) = -z + (decoder backward of d log p(x|z) / d outputs).

    The decoder's parameter gradients (``model.grads``) are neither computed nor touched.
    """
    x = model.check_x(x)
    return _log_joint_and_grad(model, x, _check_z(model, x, z))


def log_joint(model, x, z):
    """log p(z) + log p_theta(x|z) per datapoint: x (M, D), z (M, J) or (L, M, J) -> (M,) or (L, M).

    The unnormalised log posterior, log p(z|x) + log p(x): the target of HMC.
    """
    x = model.check_x(x)
    z = _check_z(model, x, z)
    out = model.decoder.forward(z.reshape(-1, model.J))
    out = tuple(o.reshape(z.shape[:-1] + (model.D,)) for o in out)
    return est.log_standard_normal(z) + model.decoder.log_likelihood(x, out)


def log_joint_grad_z(model, x, z):
    """grad_z [log p(z) + log p_theta(x|z)], the shape of z (see :func:`log_joint_and_grad`)."""
    return log_joint_and_grad(model, x, z)[1]


def _per_datapoint(step_size, M):
    """A step size as one value per datapoint, shape (M,) (one clear error if it is neither a number nor (M,))."""
    eps = np.asarray(step_size, dtype=np.float64)
    if eps.ndim != 0 and eps.shape != (M,):
        raise ValueError(f"step_size must be one number or one per datapoint, shape ({M},); got {eps.shape}.")
    return np.array(np.broadcast_to(eps, (M,)))


def _per_row(step_size, M):
    """A step size that broadcasts against (M, J): a number stays one, (M,) becomes (M, 1)."""
    if np.ndim(step_size) == 0:
        return float(step_size)
    return _per_datapoint(step_size, M)[:, None]


def leapfrog(model, x, z, p, step_size, n_leapfrog, grad=None):
    """n_leapfrog leapfrog steps of Hamilton's equations for ``H = -log p(x, z) + |p|^2 / 2``.

    p <- p + (eps/2) grad;  then n times { z <- z + eps p;  p <- p + eps grad }
    with the last momentum update a half step. Volume-preserving and
    reversible (negate p' and run again to return to z), which is what makes
    the Metropolis correction of :func:`hmc_transition` exact.

    Parameters
    ----------
    model : VAE
    x : ndarray (M, D)
    z, p : ndarray (M, J)
        Position and momentum (not modified).
    step_size : float or ndarray (M,)
    n_leapfrog : int >= 1
    grad : ndarray (M, J) or None
        grad_z log p(x, z) at the start, if already known (saves one backward).

    Returns
    -------
    z, p : ndarray (M, J)
        The end of the trajectory.
    log_pxz : ndarray (M,)
        log p(x, z) at the end.
    grad : ndarray (M, J)
        Its gradient at the end.
    """
    check_scalar(n_leapfrog, "n_leapfrog", int, min_val=1)
    eps = _per_row(step_size, len(z))                            # scalar or (M, 1)
    if isinstance(eps, np.ndarray):
        eps = eps.astype(z.dtype)                                # a float32 chain stays float32
    if grad is None:
        grad = _log_joint_and_grad(model, x, z)[1]
    p = p + 0.5 * eps * grad                                     # (M, J) half step
    for t in range(n_leapfrog):
        last = t == n_leapfrog - 1
        z = z + eps * p                                          # (M, J) full step in position
        log_pxz, grad = _log_joint_and_grad(model, x, z, value=last)   # log p(x, z) only at the end
        p = p + (0.5 * eps if last else eps) * grad              # full steps, the last one a half
    return z, p, log_pxz, grad


class HMCTransition(NamedTuple):
    """One HMC transition of M chains.

    Attributes
    ----------
    z : ndarray (M, J)
        The new state (the proposal where accepted, the old z elsewhere).
    accepted : ndarray (M,) bool
        Which proposals were accepted.
    accept_prob : ndarray (M,)
        The Metropolis probability min(1, exp(H_old - H_new)); 0 for a
        non-finite proposal. What the step-size tuning uses.
    log_pxz, grad : ndarray (M,), (M, J)
        log p(x, z) and its gradient at the new state (carried to the next transition).
    """

    z: np.ndarray
    accepted: np.ndarray
    accept_prob: np.ndarray
    log_pxz: np.ndarray
    grad: np.ndarray


def hmc_transition(model, x, z, step_size, n_leapfrog, rng, current=None, jitter=JITTER):
    """One HMC transition for each row: fresh momentum, a leapfrog trajectory, Metropolis accept/reject.

    Parameters
    ----------
    model : VAE
    x : ndarray (M, D)
    z : ndarray (M, J)
    step_size : float or ndarray (M,)
        eps; each chain's trajectory uses eps * u with u uniform on
        [1 - jitter, 1 + jitter], drawn afresh for every transition.
    n_leapfrog : int
    rng : np.random.Generator
        Draws the momenta (M, J), the step-size factors (M,), then the accept uniforms (M,).
    current : (log_pxz (M,), grad (M, J)) or None
        log p(x, z) and its gradient at z, if known (from the previous transition).
    jitter : float in [0, 1)
        Why the step size is randomised (Neal, 2011, "MCMC using Hamiltonian
        dynamics"): with a fixed step, a trajectory can come back to almost
        where it started, or to its mirror image (on a Gaussian posterior of
        width s, a trajectory of length near a multiple of pi s), and the chain
        then barely explores. On the linear-Gaussian model, 10 leapfrog steps at
        the step size tuned to 90 % acceptance did that: Appendix D estimates
        from those chains were 0.43 nats too low on average, 0.03 with
        jitter = 0.2. A random step per transition is still a valid MCMC
        kernel (a mixture of valid kernels).

    Returns
    -------
    HMCTransition
    """
    rng = as_generator(rng)
    x = model.check_x(x)
    z = _check_z(model, x, z)
    log_pxz0, grad0 = _log_joint_and_grad(model, x, z) if current is None else current
    p0 = rng.standard_normal(z.shape, dtype=model.dtype)                  # (M, J)
    eps = _per_datapoint(step_size, len(z))                                # (M,)
    if jitter:
        eps = eps * rng.uniform(1.0 - jitter, 1.0 + jitter, size=len(z))  # (M,)
    z1, p1, log_pxz1, grad1 = leapfrog(model, x, z, p0, eps, n_leapfrog, grad0)
    h0 = -log_pxz0 + 0.5 * np.sum(p0 * p0, axis=-1)                       # (M,) energy at the start
    h1 = -log_pxz1 + 0.5 * np.sum(p1 * p1, axis=-1)                       # (M,) energy at the end
    with np.errstate(invalid="ignore", over="ignore"):
        log_ratio = h0 - h1                                               # (M,)
        ok = np.isfinite(log_ratio)
        accept_prob = np.where(ok, np.exp(np.minimum(np.where(ok, log_ratio, 0.0), 0.0)), 0.0)
    accepted = rng.random(len(z)) < accept_prob                           # (M,) bool
    return HMCTransition(np.where(accepted[:, None], z1, z), accepted, accept_prob,
                         np.where(accepted, log_pxz1, log_pxz0), np.where(accepted[:, None], grad1, grad0))


def hmc_step(model, x, z, step_size, n_leapfrog, rng):
    """One HMC transition of every chain: x (M, D), z (M, J) -> (z_new (M, J), accepted (M,) bool).

    The step size is jittered by :data:`JITTER` (see :func:`hmc_transition`).
    """
    t = hmc_transition(model, x, z, step_size, n_leapfrog, rng)
    return t.z, t.accepted


def adapt_log_step_size(log_step_size, accept_prob, target, gain, max_change=np.inf):
    """A Robbins-Monro step towards the target acceptance: log eps + gain * (accept_prob - target).

    Too many rejections (accept_prob below target) shrink the step, too few
    grow it; the root is the step size whose mean acceptance probability is
    the target. With gains that decrease to zero the iterates settle. The
    change is clipped to [-max_change, max_change], so one unlucky transition
    under a large early gain cannot throw the step size far off.
    """
    change = gain * (np.asarray(accept_prob, dtype=np.float64) - target)
    return log_step_size + np.clip(change, -max_change, max_change)


def hmc_sample(model, x, z0, n_samples, n_leapfrog, rng, step_size=0.1, adapt=True, target_acceptance=0.9,
               burn_in=100, thin=1, jitter=JITTER, return_stats=False):
    """Draw n_samples states of an HMC chain on p(z|x) for each datapoint, after a burn-in.

    Parameters
    ----------
    model : VAE
    x : ndarray (M, D)
    z0 : ndarray (M, J)
        Where the chains start (e.g. a draw from the prior).
    n_samples : int
        States kept per datapoint.
    n_leapfrog : int
        Leapfrog steps per transition (the paper: 10 in the E-step, 4 in Appendix D).
    rng : None, int or np.random.Generator
    step_size : float or ndarray (M,)
        The initial step size (the final one without ``adapt``).
    adapt : bool
        Tune each datapoint's step size during burn-in.
    target_acceptance : float in (0, 1)
        The paper: about 0.9.
    burn_in : int
        Transitions run before the first kept state. With ``adapt``, transition t
        moves log eps_m by 10 (t + 1)^(-0.6) (a_m - target), a_m the Metropolis
        acceptance probability of chain m (Robbins-Monro, :data:`ADAPT_GAIN`,
        :data:`ADAPT_DECAY`; at most a factor e per transition); the step size used
        afterwards is the mean of log eps_m over the second half of burn-in
        (an average of the iterates, less noisy than the last one), and it
        stays fixed, so the kept states are a valid MCMC chain.
    thin : int
        Transitions between kept states.
    jitter : float
        Step-size randomisation of every transition (see :func:`hmc_transition`).
    return_stats : bool
        Also return a dict: "step_size" (M,), the step size used for the kept
        states; "acceptance" (M,), the fraction of accepted transitions among
        them; "log_pxz" (n_samples, M), log p(x, z) at each kept state.

    Returns
    -------
    samples : ndarray (n_samples, M, J)
        Successive (correlated) states; their law tends to p(z|x) as burn-in grows.
    stats : dict, only with ``return_stats``.
    """
    rng = as_generator(rng)
    for name, value, least in (("n_samples", n_samples, 1), ("burn_in", burn_in, 0), ("thin", thin, 1)):
        check_scalar(value, name, int, min_val=least)
    check_scalar(target_acceptance, "target_acceptance", float, min_val=0, max_val=1, include_boundaries="neither")
    x = model.check_x(x)
    z = _check_z(model, x, z0).copy()
    if z.ndim != 2:
        raise ValueError(f"z0 must have shape (M, J) = ({len(x)}, {model.J}); got {z.shape}.")
    M = len(x)
    eps = _per_datapoint(step_size, M)                             # (M,) one per chain
    if not (np.isfinite(eps).all() and (eps > 0).all()):
        raise ValueError(f"step_size must be positive and finite; got {step_size!r}.")
    current = _log_joint_and_grad(model, x, z)
    if not np.isfinite(current[0]).all():
        raise ValueError("log p(x, z) is not finite at the starting points z0; start from other points.")

    log_eps, kept_log_eps = np.log(eps), []
    for t in range(burn_in):
        tr = hmc_transition(model, x, z, eps, n_leapfrog, rng, current, jitter)
        z, current = tr.z, (tr.log_pxz, tr.grad)
        if adapt:
            gain = ADAPT_GAIN * (t + 1.0) ** -ADAPT_DECAY
            log_eps = adapt_log_step_size(log_eps, tr.accept_prob, target_acceptance, gain, max_change=1.0)
            eps = np.exp(log_eps)
            if t >= burn_in // 2:
                kept_log_eps.append(log_eps)
    if kept_log_eps:
        eps = np.exp(np.mean(kept_log_eps, axis=0))                # (M,) fixed from here on

    samples = np.empty((n_samples, M, model.J), dtype=model.dtype)
    log_pxz = np.empty((n_samples, M))
    n_accepted = np.zeros(M)
    for s in range(n_samples):
        for _ in range(thin):
            tr = hmc_transition(model, x, z, eps, n_leapfrog, rng, current, jitter)
            z, current = tr.z, (tr.log_pxz, tr.grad)
            n_accepted += tr.accepted
        samples[s] = z
        log_pxz[s] = current[0]
    if not return_stats:
        return samples
    return samples, {"step_size": eps, "acceptance": n_accepted / (n_samples * thin), "log_pxz": log_pxz}


def effective_sample_size(chain):
    """The effective sample size of each series in ``chain`` (n, ...), by Geyer's initial positive sequence.

    ESS = n / tau with tau = 1 + 2 sum_{t>=1} rho_t, the sum of the
    autocorrelations rho_t cut where a pair rho_{2k} + rho_{2k+1} first turns
    negative (Geyer, 1992). For an AR(1) series with coefficient r,
    tau = (1 + r) / (1 - r). An antithetic chain (negative correlations) has
    ESS above n; as in Stan, tau is kept at least 1 / log10(n) (for n >= 10), so
    the ESS is at most n log10(n). A constant series counts as n independent values.

    Returns
    -------
    ndarray, the shape of ``chain.shape[1:]``.
    """
    a = np.asarray(chain, dtype=np.float64)
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"the effective sample size needs a chain of at least 2 states; got {n}.")
    constant = np.all(a == a[0], axis=0)
    a = a - a.mean(axis=0)
    f = np.fft.rfft(a, n=2 * n, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=2 * n, axis=0)[:n] / n          # (n, ...) autocovariances
    var0 = acov[0]
    rho = acov / np.where(constant, 1.0, var0)                              # (n, ...) autocorrelations
    tau = np.full(var0.shape, -1.0)                                        # -rho_0, so tau starts at 1 + ...
    alive = np.ones(var0.shape, dtype=bool)
    for k in range(n // 2):
        pair = rho[2 * k] + rho[2 * k + 1]
        alive &= pair > 0
        if not alive.any():
            break
        tau += np.where(alive, 2.0 * pair, 0.0)
    return np.where(constant, float(n), n / np.maximum(tau, 1.0 / max(1.0, np.log10(n))))
