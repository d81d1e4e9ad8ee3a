"""Checks of meaning: what a gradient check cannot see.

A finite-difference check (:mod:`minivae.gradcheck`) asks one question: is the
gradient the derivative of the loss the code computes? Code that is wrong *and
agrees with itself* passes it: a sampler that uses exp(log_var) as the standard
deviation and differentiates that faithfully, a KL written in the wrong direction
with its exact gradient, a minibatch sum differentiated correctly. The checks here
hold the code to what it should mean instead: a known answer, a closed form, or a
Monte-Carlo estimate with its standard error.

Each check returns a :class:`CheckResult` (one number, its limit, PASS or FAIL) and
looks the library's functions up when it runs, so it checks the code as it stands,
including a variant injected by :mod:`minivae.teaching.bugzoo`:

==========================  ====================================================================
check                       what it holds the code to
==========================  ====================================================================
``sampler_variance``        the sample variance of z = reparameterize(mu, log_var, eps) is exp(log_var)
``kl_monte_carlo``          the analytic KL equals E_q[log q(z|x) - log p(z)] over the sampler's z
``gradient``                ``VAE.loss_and_grads`` against finite differences (``check_model``)
``bernoulli_saturation``    log p(x|z) and its gradient at logits +-20, +-40 equal their closed forms
``elbo_unbiased``           the reported bound (``train.dataset_elbo``) averages to the exact ELBO
                            of a linear-Gaussian model
``adam_constant_gradient``  under a constant gradient every Adam update moves each parameter by lr
``loss_per_datapoint``      the loss and its gradient do not change when the minibatch is doubled
==========================  ====================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import estimator as est
from .. import model as model_module
from .. import optim, train
from ..gradcheck import TOLERANCE, check_model, relative_error
from .linear_gaussian import kl_diag_gaussians, linear_gaussian

__all__ = ["CheckResult", "CHECKS", "run_check", "sampler_variance", "kl_monte_carlo", "gradient",
           "bernoulli_saturation", "elbo_unbiased", "adam_constant_gradient", "loss_per_datapoint"]

#: How many standard errors a Monte-Carlo estimate may lie from its exact value.
Z_LIMIT = 5.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``value`` against ``limit`` (PASS when value <= limit).

    ``numbers`` holds the quantities the detail line prints, by name, for a notebook to plot or assert on.
    """

    name: str
    value: float
    limit: float
    what: str
    detail: str = ""
    numbers: dict = field(default_factory=dict, compare=False)

    @property
    def passed(self):
        return math.isfinite(self.value) and self.value <= self.limit

    def __str__(self):
        return (f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.what} {self.value:.3g} "
                f"(limit {self.limit:.3g})" + (f"; {self.detail}" if self.detail else ""))


def _fixed_gaussian():
    mu = np.array([[0.5, -1.0], [0.0, 2.0], [-0.3, 0.1]])            # (M, J) = (3, 2)
    log_var = np.array([[1.5, -1.5], [0.0, 0.7], [-0.4, 1.0]])       # variances from 0.22 to 4.5
    return mu, log_var


def sampler_variance(reparameterize=None, S=20000, seed=0):
    """The reparameterised z must have mean mu and variance exp(log_var) (log_var is a log *variance*).

    Compares the sample variance of S draws with exp(log_var), in standard errors
    (the sample variance of a Gaussian has standard error var * sqrt(2 / (S - 1))).
    """
    reparameterize = reparameterize or est.reparameterize
    mu, log_var = _fixed_gaussian()
    eps = np.random.default_rng(seed).standard_normal((S,) + mu.shape)
    z = reparameterize(mu, log_var, eps)                              # (S, M, J)
    var = np.exp(log_var)
    z_var = np.abs(z.var(axis=0, ddof=1) - var) / (var * math.sqrt(2.0 / (S - 1)))
    z_mean = np.abs(z.mean(axis=0) - mu) / np.sqrt(var / S)
    worst = float(max(z_var.max(), z_mean.max()))
    return CheckResult("sampler_variance", worst, Z_LIMIT, "largest deviation of the sample mean or variance "
                       "from mu, exp(log_var), in standard errors",
                       f"sample variances {np.round(z.var(axis=0).ravel(), 3).tolist()} "
                       f"for exp(log_var) {np.round(var.ravel(), 3).tolist()}")


def kl_monte_carlo(kl=None, reparameterize=None, S=20000, seed=1):
    """The analytic KL(q || p) against a Monte-Carlo average of log q(z|x) - log p(z), z from the sampler.

    Catches a KL in the wrong direction (KL(p || q) is another number) and a sampler
    that does not draw from the q the KL describes.
    """
    kl = kl or est.kl_standard_normal
    reparameterize = reparameterize or est.reparameterize
    mu, log_var = _fixed_gaussian()
    eps = np.random.default_rng(seed).standard_normal((S,) + mu.shape)
    z = reparameterize(mu, log_var, eps)                                              # (S, M, J)
    terms = est.log_diag_gaussian(z, mu, log_var) - est.log_standard_normal(z)        # (S, M)
    mc, se = terms.mean(axis=0), terms.std(axis=0, ddof=1) / math.sqrt(S)
    analytic = np.asarray(kl(mu, log_var), dtype=np.float64)
    worst = float(np.max(np.abs(analytic - mc) / se))
    return CheckResult("kl_monte_carlo", worst, Z_LIMIT, "largest |analytic KL - Monte-Carlo KL|, in standard errors",
                       f"analytic {np.round(analytic, 4).tolist()}, Monte Carlo {np.round(mc, 4).tolist()}")


def gradient(seed=0):
    """Finite differences of ``VAE.loss_and_grads`` on a small model, both decoders, estimator B.

    The loss is a deterministic function of the parameters for a fixed eps; the
    analytic gradient must be its derivative (relative error <= TOLERANCE).
    """
    rng = np.random.default_rng(seed)
    worst, where = 0.0, ""
    for decoder in ("bernoulli", "gaussian"):
        model = model_module.VAE(D=6, H=5, J=3, decoder=decoder, init="glorot", random_state=seed)
        x = rng.random((4, 6))
        eps = model.sample_eps(4, L=2, rng=rng)
        errors = check_model(model, x, eps, estimator="B")
        name = max(errors, key=lambda k: errors[k] if math.isfinite(errors[k]) else math.inf)
        if not errors[name] <= worst:
            worst, where = errors[name], f"{decoder} decoder, {name}"
    return CheckResult("gradient", float(worst), TOLERANCE, "largest relative error against finite differences",
                       f"at {where}")


def bernoulli_saturation():
    """log p(x|z) and its gradient where the sigmoid saturates, against their closed forms.

    With y = sigmoid(l): log y = -log(1 + e^-l) and log(1 - y) = -log(1 + e^l), exact
    for any l; d/dl = x - y. Clipping y (to avoid log 0) biases the value by tens of
    nats per pixel at ``|l| = 40`` and zeroes the gradient there.
    """
    logits = np.array([[-40.0, -20.0, 20.0, 40.0, -40.0, -20.0, 20.0, 40.0]])
    x = np.array([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    exact = float(np.sum(np.where(x == 1.0, -np.logaddexp(0.0, -logits), -np.logaddexp(0.0, logits))))
    exact_grad = x - 1.0 / (1.0 + np.exp(-logits))
    with np.errstate(all="ignore"):
        value = float(np.sum(est.bernoulli_log_likelihood(x, logits)))
        grad = np.asarray(est.bernoulli_log_likelihood_grad(x, logits), dtype=np.float64)
    err = max(relative_error(value, exact), relative_error(grad, exact_grad))
    return CheckResult("bernoulli_saturation", err, TOLERANCE,
                       "relative error of log p(x|z) and its gradient at logits +-20, +-40",
                       f"log p(x|z) = {value:.4f}, closed form {exact:.4f}")


def elbo_unbiased(repeats=40, n=200, seed=2):
    """The reported bound (``train.dataset_elbo``) must average to the exact ELBO.

    On the linear-Gaussian model (:mod:`minivae.teaching.linear_gaussian`) with its encoder
    moved off the exact posterior, ELBO = log p(x) - KL(q || p(z|x)) in closed form.
    ``repeats`` evaluations with fresh noise give a mean and its standard error; the
    mean must lie within :data:`Z_LIMIT` standard errors of the exact value. An
    evaluation with eps = 0 is deterministic and lies above it (by Jensen's inequality
    log p(x|mu) >= E_q log p(x|z)): it is not a lower bound.
    """
    lg = linear_gaussian()
    model = lg.model
    x = lg.sample(n, rng=np.random.default_rng(seed))
    model.params["enc.mu.b"] += 0.3                       # q is no longer the posterior
    model.params["enc.log_var.b"] += 0.5
    mu_q, lv_q = model.encode(x)
    mu_p, lv_p = lg.posterior(x)
    exact = float(np.mean(lg.log_px(x) - kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p)))
    rng = np.random.default_rng(seed + 1)
    values = np.array([train.dataset_elbo(model, x, rng) for _ in range(repeats)])
    se = max(float(values.std(ddof=1)) / math.sqrt(repeats), 1e-12)
    z = abs(float(values.mean()) - exact) / se
    return CheckResult("elbo_unbiased", z, Z_LIMIT, "|mean reported bound - exact ELBO|, in standard errors",
                       f"reported {values.mean():.4f} +- {se:.2g}, exact ELBO {exact:.4f}, "
                       f"log p(x) {np.mean(lg.log_px(x)):.4f}",
                       {"reported": float(values.mean()), "se": se, "exact_elbo": exact,
                        "log_px": float(np.mean(lg.log_px(x)))})


def adam_constant_gradient(steps=5, lr=0.01):
    """Under a constant gradient g, Adam's bias-corrected update is ``lr * g / (|g| + eps)`` at *every* step.

    With t counted in updates, m_hat = g and v_hat = g^2 exactly, so each of the
    first ``steps`` updates moves each parameter by lr (to within ``eps / |g|``).
    Counting t in epochs leaves t = 1 for a whole epoch and the steps grow.
    """
    g = np.array([0.3, -2.0, 0.05])
    opt = optim.Adam(lr=lr)
    p = np.zeros(3)
    worst = 0.0
    moves = []
    for _ in range(steps):
        before = p.copy()
        opt.step({"p": p}, {"p": g})
        move = before - p
        moves.append(float(np.abs(move).mean() / lr))
        worst = max(worst, relative_error(move, lr * g / (np.abs(g) + opt.eps)))
    return CheckResult("adam_constant_gradient", worst, TOLERANCE,
                       "largest relative error of an update against lr * g / (|g| + eps)",
                       "updates / lr: " + ", ".join(f"{m:.4f}" for m in moves))


def loss_per_datapoint(seed=3):
    """The loss is -ELBO *per datapoint*: doubling the minibatch changes neither it nor its gradient.

    A minibatch sum doubles both, which scales the learning rate of SGD silently by
    M; the gradient check cannot see it, since the gradient of the sum is right.
    """
    model = model_module.VAE(D=6, H=5, J=3, init="glorot", random_state=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((4, 6))
    eps = model.sample_eps(4, L=1, rng=rng)
    loss, elbo = model.loss_and_grads(x, eps)
    grads = np.concatenate([g.ravel() for g in model.grads.values()])
    loss2, _ = model.loss_and_grads(np.concatenate([x, x]), np.concatenate([eps, eps], axis=1))
    grads2 = np.concatenate([g.ravel() for g in model.grads.values()])
    err = max(relative_error(loss, loss2), relative_error(grads, grads2), relative_error(loss, -np.mean(elbo)))
    return CheckResult("loss_per_datapoint", err, TOLERANCE,
                       "relative change of the loss and its gradient when the minibatch is doubled",
                       f"loss {loss:.4f} for M = 4, {loss2:.4f} for the same 4 points twice")


#: Every check by name, in the order of the module docstring.
CHECKS = {f.__name__: f for f in (sampler_variance, kl_monte_carlo, gradient, bernoulli_saturation,
                                  elbo_unbiased, adam_constant_gradient, loss_per_datapoint)}


def run_check(name):
    """Run the check called ``name`` (one of :data:`CHECKS`) with its defaults."""
    if name not in CHECKS:
        raise KeyError(f"no check is called {name!r}; the checks are: {', '.join(CHECKS)}.")
    with np.errstate(all="ignore"):
        return CHECKS[name]()
