"""The bug zoo: mistakes that published VAE code shipped, each injected into minivae as a named variant.

Every entry of :data:`BUGS` replaces one or two of minivae's functions by the
mistaken version, written the way the mistake is usually written, *with its
gradient computed faithfully* where the mistake has one: code that agrees with
itself. Inside ``with inject(name):`` the whole library (``VAE.loss_and_grads``,
``fit``, the checks) runs the mistaken code; on leaving, the library is restored.

Each entry names the check of :mod:`minivae.teaching.checks` that catches it and says what
the gradient check (:func:`minivae.teaching.checks.gradient`) does with it, and why::

    from minivae.teaching import bugzoo
    print(bugzoo.demonstrate("std_as_variance"))
    # std_as_variance: ... stock PASS, injected FAIL (sampler_variance); gradient check PASS, as the entry says

``python -m minivae.teaching.bugzoo`` prints the whole zoo, demonstrated.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from . import checks
from .. import estimator as est
from .. import evaluate, optim, train
from ..layers import sigmoid
from ..model import VAE

__all__ = ["Bug", "BUGS", "inject", "demonstrate", "Demonstration"]


@dataclass(frozen=True)
class Bug:
    """One mistake: what it is, which check catches it, what the gradient check does with it.

    ``patches()`` returns the (object, attribute, replacement) triples that inject it.
    """

    name: str
    title: str
    mistake: str
    caught_by: str
    gradient_check_passes: bool
    why: str
    patches: object

    def __str__(self):
        verdict = "passes" if self.gradient_check_passes else "fails"
        return (f"{self.name}: {self.title}\n  the mistake: {self.mistake}\n  caught by: checks.{self.caught_by}\n"
                f"  the gradient check {verdict}: {self.why}")


# --- the mistaken versions ------------------------------------------------------------------

def _std_as_variance():
    def reparameterize(mu, log_var, eps):
        sigma = np.exp(log_var)                  # the mistake: exp(log_var) is the variance, not sigma
        return mu + sigma * eps

    def reparameterize_backward(dz, log_var, eps):
        sigma = np.exp(log_var)                  # differentiated faithfully: d sigma / d log_var = sigma
        return dz.sum(axis=0), sigma * (dz * eps).sum(axis=0)

    return [(est, "reparameterize", reparameterize), (est, "reparameterize_backward", reparameterize_backward)]


def _eps_redrawn():
    rng = np.random.default_rng(2013)
    forward_backward = est.reparameterize_backward

    def reparameterize_backward(dz, log_var, eps):
        fresh = rng.standard_normal(eps.shape)   # the mistake: new noise, not the forward pass's eps
        return forward_backward(dz, log_var, fresh)

    return [(est, "reparameterize_backward", reparameterize_backward)]


_CLIP = 1e-7


def _clipped_bernoulli():
    def bernoulli_log_likelihood(x, logits):
        y = np.clip(sigmoid(logits), _CLIP, 1.0 - _CLIP)      # the mistake: probabilities, clipped
        return np.sum(x * np.log(y) + (1.0 - x) * np.log(1.0 - y), axis=-1)

    def bernoulli_log_likelihood_grad(x, logits):
        y = sigmoid(logits)
        inside = (y > _CLIP) & (y < 1.0 - _CLIP)               # the clip's derivative: 0 outside
        return np.where(inside, x - y, 0.0)

    return [(est, "bernoulli_log_likelihood", bernoulli_log_likelihood),
            (est, "bernoulli_log_likelihood_grad", bernoulli_log_likelihood_grad)]


def _eps_zero_elbo():
    def dataset_elbo(model, x, rng, L=1, estimator="B", batch_size=1000):
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            eps = np.zeros((L, len(xb), model.J), dtype=model.dtype)   # the mistake: z = mu, "deterministic"
            total += float(np.sum(model.elbo(xb, eps, estimator)))
        return total / len(x)

    return [(train, "dataset_elbo", dataset_elbo), (evaluate, "dataset_elbo", dataset_elbo)]


def _kl_wrong_direction():
    def kl_standard_normal(mu, log_var):
        # the mistake: KL(p || q) = 1/2 sum((1 + mu^2) / sigma^2 - 1 + log sigma^2), not KL(q || p)
        return 0.5 * np.sum((1.0 + mu * mu) * np.exp(-log_var) - 1.0 + log_var, axis=-1)

    def kl_standard_normal_grad(mu, log_var):
        return mu * np.exp(-log_var), 0.5 * (1.0 - (1.0 + mu * mu) * np.exp(-log_var))

    return [(est, "kl_standard_normal", kl_standard_normal), (est, "kl_standard_normal_grad", kl_standard_normal_grad)]


def _adam_epochs(steps_per_epoch=100):
    def _update(self, name, p, g):
        epoch = (self.t - 1) // steps_per_epoch + 1            # the mistake: t counts epochs, not updates
        optim.adam_update(p, g, self._slot(name + ".m", p), self._slot(name + ".v", p), epoch,
                          self.lr, self.beta1, self.beta2, self.eps)

    return [(optim.Adam, "_update", _update)]


def _sum_not_mean():
    per_datapoint = VAE.loss_and_grads

    def loss_and_grads(self, x, eps, estimator="B"):
        loss, elbo = per_datapoint(self, x, eps, estimator)
        M = len(x)
        for g in self.grads.values():                          # the mistake: -sum_i ELBO_i, not the mean
            g *= M
        return loss * M, elbo

    return [(VAE, "loss_and_grads", loss_and_grads)]


#: The zoo, by name.
BUGS = {b.name: b for b in (
    Bug("std_as_variance", "exp(log_var) used as the standard deviation in the sampler",
        "z = mu + exp(log_var) * eps, while the KL treats exp(log_var) as the variance",
        "sampler_variance", True,
        "the sampler and its backward agree with each other, so the loss is differentiated correctly; only the "
        "distribution of z is wrong, which the sample variance of z against exp(log_var) shows (the Monte-Carlo "
        "KL check sees it too)", _std_as_variance),
    Bug("eps_redrawn", "eps redrawn between the forward and the backward pass",
        "the backward pass of z = mu + sigma * eps draws fresh noise instead of reusing the forward pass's eps",
        "gradient", False,
        "here the gradient check is the right tool: the gradient is no longer the derivative of the loss that was "
        "computed, and finite differences with the fixed eps disagree with it", _eps_redrawn),
    Bug("clipped_bernoulli", "Bernoulli probabilities clipped instead of working from logits",
        "log p(x|z) = sum x log clip(y) + (1 - x) log(1 - clip(y)) with y = sigmoid(logits), clipped to "
        "[1e-7, 1 - 1e-7] against log 0",
        "bernoulli_saturation", True,
        "the clipped function is differentiated exactly (its gradient is 0 where it clips), and at moderate "
        "logits it equals the true likelihood; at saturated logits it is biased by tens of nats and its "
        "gradient vanishes, which the closed form at logits +-20, +-40 shows", _clipped_bernoulli),
    Bug("eps_zero_elbo", "the \"ELBO\" evaluated with eps = 0",
        "the reported bound uses z = mu (eps = 0) to make it deterministic",
        "elbo_unbiased", True,
        "no gradient is involved: it is the number reported, not the one trained; with eps = 0 it is "
        "log p(x|mu) - KL, above the ELBO by Jensen's inequality and not a lower bound on log p(x)",
        _eps_zero_elbo),
    Bug("kl_wrong_direction", "the KL written in the wrong direction",
        "KL(p(z) || q(z|x)) in place of KL(q(z|x) || p(z)), with its exact gradient",
        "kl_monte_carlo", True,
        "the reversed KL is a smooth function with a correct gradient; it is just another function, which the "
        "Monte-Carlo average of log q(z|x) - log p(z) over q's samples exposes", _kl_wrong_direction),
    Bug("adam_epochs", "Adam's bias correction counted in epochs instead of steps",
        "m / (1 - beta1^t) and v / (1 - beta2^t) with t the epoch number (100 steps per epoch here)",
        "adam_constant_gradient", True,
        "the optimiser is not differentiated: the gradient check never looks at it; under a constant gradient "
        "Adam's update must be lr at every step, and it is not from the second step on", _adam_epochs),
    Bug("sum_not_mean", "a minibatch sum where the per-datapoint mean was meant",
        "loss = -sum_i ELBO_i over the minibatch, so the gradient, and SGD's step, grow by M",
        "loss_per_datapoint", True,
        "the gradient of the sum is exactly the derivative of the sum; the scale is what is wrong (the learning "
        "rate is silently multiplied by M), which doubling the minibatch shows", _sum_not_mean),
)}


@contextlib.contextmanager
def inject(name):
    """Run the library with the bug ``name`` (one of :data:`BUGS`) in place; restore it on leaving."""
    if name not in BUGS:
        raise KeyError(f"the bug zoo has no {name!r}; its bugs are: {', '.join(BUGS)}.")
    patches = BUGS[name].patches()
    saved = [(obj, attr, obj.__dict__[attr] if isinstance(obj, type) else getattr(obj, attr))
             for obj, attr, _ in patches]
    try:
        for obj, attr, new in patches:
            setattr(obj, attr, new)
        yield BUGS[name]
    finally:
        for obj, attr, old in reversed(saved):
            setattr(obj, attr, old)


@dataclass(frozen=True)
class Demonstration:
    """A bug's named check on the stock code and with the bug injected, and the gradient check with the bug."""

    bug: Bug
    stock: checks.CheckResult
    injected: checks.CheckResult
    gradient: checks.CheckResult

    @property
    def as_claimed(self):
        """The named check passes on the stock code and fails on the bug; the gradient check does as the entry says."""
        return self.stock.passed and not self.injected.passed and self.gradient.passed == self.bug.gradient_check_passes

    def __str__(self):
        return "\n".join([str(self.bug), f"  stock code:    {self.stock}", f"  with the bug:  {self.injected}",
                          f"  gradient check with the bug: {self.gradient}",
                          f"  => {'as the entry says' if self.as_claimed else 'NOT as the entry says'}"])


def demonstrate(name):
    """Run the bug's check on the stock code, then inject the bug and run it and the gradient check."""
    bug = BUGS[name] if name in BUGS else None
    if bug is None:
        raise KeyError(f"the bug zoo has no {name!r}; its bugs are: {', '.join(BUGS)}.")
    stock = checks.run_check(bug.caught_by)
    with inject(name):
        injected = checks.run_check(bug.caught_by)
        grad = injected if bug.caught_by == "gradient" else checks.run_check("gradient")
    return Demonstration(bug, stock, injected, grad)


if __name__ == "__main__":  # pragma: no cover - a teacher's tool
    for bug_name in BUGS:
        print(demonstrate(bug_name), end="\n\n")
