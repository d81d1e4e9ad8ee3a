"""The grader: minivae's own gradient checks and tests of meaning, one exercise at a time.

Each check takes the student's namespace and returns a :class:`Result`: the
function's name, PASS or FAIL, and the numbers behind it, each with its limit
(relative errors against ``minivae.gradcheck.TOLERANCE = 1e-7``; Monte-Carlo
agreement in standard errors; a trajectory against the library's). A function
that still raises ``NotImplementedError`` fails with that said.

One exercise is checked with the library's versions of the *other* functions it
calls (``estimator_b_backward`` with the library's KL gradient, ``loss_and_grads``
with the library's estimator pieces, ``aevb_step`` with the library's
``loss_and_grads`` and Adagrad), so a failure points at the function that is
wrong. ``end_to_end`` and ``training`` then check everything together, on the
student's own model (:func:`minivae.teaching.exercises.student_vae`).

In a notebook, a test cell calls :func:`grade`, which prints the lines and raises
``AssertionError`` on a failure (how nbgrader's autograder scores a cell); from a
shell, ``python -m minivae.teaching.exercises grade NOTEBOOK`` prints the whole table.
"""

from __future__ import annotations

import contextlib
import math
import traceback
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ... import estimator as est
from ... import layers as lib_layers
from ... import model as model_module
from ... import optim
from ..checks import kl_monte_carlo
from ...gradcheck import TOLERANCE, check_function, check_layer, check_model, relative_error
from ...steps import AEVB
from .student import (EXERCISES, StudentAEVB, StudentLinear, StudentReLU, StudentSigmoid, StudentSoftplus,
                      StudentTanh, rebind, student_vae)

__all__ = ["Item", "Result", "CHECKS", "GRADED", "grade", "grade_all", "format_results", "library_functions"]


class Item(NamedTuple):
    """One number of a check and its limit: ``kind`` "max" (value <= limit) or "min" (value >= limit)."""

    label: str
    value: float
    limit: float
    kind: str = "max"

    @property
    def ok(self):
        if not math.isfinite(self.value):
            return False
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def __str__(self):
        rel = "<=" if self.kind == "max" else ">="
        if 0 < self.limit < 1e-3:                                  # a relative error and its tolerance
            return f"{self.label} {self.value:.1e} (tol {self.limit:.0e})"
        return f"{self.label} {self.value:.4g} (need {rel} {self.limit:g})"


@dataclass
class Result:
    """The verdict on one function: PASS when every item is within its limit."""

    name: str
    items: list = field(default_factory=list)
    note: str = ""
    error: str = ""

    @property
    def passed(self):
        return not self.error and bool(self.items) and all(item.ok for item in self.items)

    def line(self):
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.name:30s}"
        if self.error:
            return f"{head} {self.error}"
        body = "; ".join(str(item) for item in self.items)
        return head + " " + body + (f"  [{self.note}]" if self.note else "")


# --- the library's versions of the exercises (the references and the isolation) ---------

def _linear_backward(dout, x, W):
    layer = lib_layers.Linear(*W.shape)
    layer.params["W"][...] = W
    layer.forward(x)
    dx = layer.backward(dout)
    return dx, layer.grads["W"].copy(), layer.grads["b"].copy()


def _loss_and_grads(model, x, eps, estimator="B"):
    return model_module.VAE.loss_and_grads(model, x, eps, estimator)


def _aevb_step(model, x, rng, G, lr, L=1, estimator="B", weight_decay=0.0, adagrad_eps=1e-10):
    opt = optim.Adagrad(lr=lr, eps=adagrad_eps)
    opt.state = G
    return AEVB(model, opt, estimator, L, weight_decay)(x, None, rng)


def library_functions():
    """name -> minivae's own function, for every exercise."""
    return {
        "linear_backward": _linear_backward,
        "tanh_backward": lib_layers.tanh_backward, "sigmoid_backward": lib_layers.sigmoid_backward,
        "relu_backward": lib_layers.relu_backward, "softplus_backward": lib_layers.softplus_backward,
        "reparameterize_backward": est.reparameterize_backward,
        "kl_standard_normal": est.kl_standard_normal, "kl_standard_normal_grad": est.kl_standard_normal_grad,
        "bernoulli_log_likelihood_grad": est.bernoulli_log_likelihood_grad,
        "gaussian_log_likelihood_grad": est.gaussian_log_likelihood_grad,
        "estimator_a_backward": est.estimator_a_backward, "estimator_b_backward": est.estimator_b_backward,
        "loss_and_grads": _loss_and_grads, "adagrad_update": optim.adagrad_update, "aevb_step": _aevb_step,
    }


def _isolated(ns, name):
    """The student's ``name``, calling the library's versions of every other exercise."""
    lib = library_functions()
    lib.pop(name)
    return rebind(ns[name], {**ns, **lib})


def _errors(label_prefix, errors, tol=TOLERANCE):
    return [Item(f"{label_prefix}{k}", v, tol) for k, v in errors.items()]


# --- the checks, one per exercise ---------------------------------------------------------

def _check_linear(ns):
    layer = StudentLinear.adopt(lib_layers.Linear(4, 3, init="glorot", rng=0), ns)
    x = np.random.default_rng(2).standard_normal((5, 4))
    errors = check_layer(layer, x, rng=1)
    return [Item(f"d{k}", errors[k], TOLERANCE) for k in ("x", "W", "b")]


def _activation_check(cls, lib_cls):
    def check(ns):
        x = np.random.default_rng(0).standard_normal((6, 4)) * 2.0
        x[np.abs(x) < 1e-3] = 0.5                       # no entry within h of ReLU's kink
        return [Item("dx", check_layer(cls.adopt(lib_cls(), ns), x, rng=1)["x"], TOLERANCE)]
    return check


def _arrays(seed, L=3, M=4, J=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((M, J)), rng.standard_normal((M, J)) * 0.5, rng.standard_normal((L, M, J)))


def _check_reparameterize_backward(ns):
    mu, log_var, eps = _arrays(0)
    dz = np.random.default_rng(1).standard_normal(eps.shape)
    dmu, dlv = ns["reparameterize_backward"](dz, log_var, eps)
    f = lambda: float(np.sum(est.reparameterize(mu, log_var, eps) * dz))  # noqa: E731
    err = check_function(f, {"mu": np.asarray(dmu), "log_var": np.asarray(dlv)}, {"mu": mu, "log_var": log_var})
    return _errors("d", err)


def _check_kl(ns):
    mu, log_var, _ = _arrays(2, M=4, J=3)
    kl = np.asarray(ns["kl_standard_normal"](mu, log_var), dtype=np.float64)
    items = [Item("vs closed form", relative_error(kl, est.kl_standard_normal(mu, log_var)), TOLERANCE)]
    # The library's check of meaning: E_q[log q(z|x) - log p(z)] over the library sampler's z.
    mc = kl_monte_carlo(kl=ns["kl_standard_normal"])
    items.append(Item("vs Monte Carlo, in standard errors", mc.value, mc.limit))
    return items


def _check_kl_grad(ns):
    mu, log_var, _ = _arrays(4)
    w = np.random.default_rng(5).standard_normal(len(mu))
    dmu, dlv = ns["kl_standard_normal_grad"](mu, log_var)
    f = lambda: float(np.sum(est.kl_standard_normal(mu, log_var) * w))  # noqa: E731
    err = check_function(f, {"mu": w[:, None] * dmu, "log_var": w[:, None] * dlv}, {"mu": mu, "log_var": log_var})
    return _errors("d", err)


def _check_bernoulli_grad(ns):
    rng = np.random.default_rng(6)
    x = rng.random((4, 5))
    logits = rng.standard_normal((3, 4, 5)) * 3.0
    w = rng.standard_normal((3, 4))
    g = w[..., None] * ns["bernoulli_log_likelihood_grad"](x, logits)
    f = lambda: float(np.sum(est.bernoulli_log_likelihood(x, logits) * w))  # noqa: E731
    items = _errors("d", check_function(f, {"logits": g}, {"logits": logits}))
    xs = np.array([[1.0, 1.0, 0.0, 0.0]])
    ls = np.array([[-40.0, 40.0, -40.0, 40.0]])                 # saturated: sigmoid is 0 or 1 in float64
    with np.errstate(all="ignore"):
        got = np.asarray(ns["bernoulli_log_likelihood_grad"](xs, ls), dtype=np.float64)
    items.append(Item("at logits +-40", relative_error(got, xs - lib_layers.sigmoid(ls)), TOLERANCE))
    return items


def _check_gaussian_grad(ns):
    rng = np.random.default_rng(7)
    x = rng.random((4, 5))
    mean, log_var = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5)) * 0.5
    w = rng.standard_normal((3, 4))
    dmean, dlv = ns["gaussian_log_likelihood_grad"](x, mean, log_var)
    f = lambda: float(np.sum(est.gaussian_log_likelihood(x, mean, log_var) * w))  # noqa: E731
    err = check_function(f, {"mean": w[..., None] * dmean, "log_var": w[..., None] * dlv},
                         {"mean": mean, "log_var": log_var})
    return _errors("d", err)


def _check_estimator_a(ns):
    mu, log_var, eps = _arrays(8)
    rng = np.random.default_rng(9)
    z = mu + np.exp(0.5 * log_var) * eps + 0.1 * rng.standard_normal(eps.shape)   # z is an input here
    log_px_z = rng.standard_normal(eps.shape[:2])
    dout = rng.standard_normal(len(mu))
    g = ns["estimator_a_backward"](dout, z, mu, log_var)
    inputs = {"log_px_z": log_px_z, "z": z, "mu": mu, "log_var": log_var}
    f = lambda: float(np.sum(dout * est.estimator_a(log_px_z, z, mu, log_var)))  # noqa: E731
    return _errors("d", check_function(f, dict(zip(inputs, g)), inputs))


def _check_estimator_b(ns):
    mu, log_var, eps = _arrays(10)
    rng = np.random.default_rng(11)
    log_px_z = rng.standard_normal(eps.shape[:2])
    dout = rng.standard_normal(len(mu))
    g = _isolated(ns, "estimator_b_backward")(dout, eps.shape[0], mu, log_var)
    inputs = {"log_px_z": log_px_z, "mu": mu, "log_var": log_var}
    f = lambda: float(np.sum(dout * est.estimator_b(log_px_z, mu, log_var)))  # noqa: E731
    return _errors("d", check_function(f, dict(zip(inputs, g)), inputs))


_CONFIGS = (("bernoulli", "B"), ("bernoulli", "A"), ("gaussian", "B"))


def _small_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((4, 6))
    eps = rng.standard_normal((2, 4, 3))
    return x, eps


def _check_loss_and_grads(ns):
    f = _isolated(ns, "loss_and_grads")
    items = []
    for decoder, estimator in _CONFIGS:
        model = model_module.VAE(D=6, H=5, J=3, decoder=decoder, init="glorot", random_state=0)
        x, eps = _small_problem()
        for g in model.grads.values():
            g[...] = np.nan                                   # every gradient must be written
        loss, _ = f(model, x, eps, estimator)
        analytic = {k: g.copy() for k, g in model.grads.items()}
        errors = check_function(lambda: f(model, x, eps, estimator)[0], analytic, model.params)
        worst = max(errors, key=lambda k: errors[k] if math.isfinite(errors[k]) else math.inf)
        items.append(Item(f"{decoder}/{estimator} worst ({worst})", errors[worst], TOLERANCE))
        ref, _ = model_module.VAE.loss_and_grads(model, x, eps, estimator)
        items.append(Item(f"{decoder}/{estimator} loss vs library", relative_error(loss, ref), TOLERANCE))
    return items


def _check_adagrad(ns):
    update = ns["adagrad_update"]
    p = np.array([1.0, -2.0, 0.5])
    G = np.zeros(3)
    update(p, np.array([0.5, -1.0, 0.0]), G, 0.1, 1e-10)
    update(p, np.array([0.5, 1.0, 2.0]), G, 0.1, 1e-10)
    # In place on p and G, worked by hand: G = g1^2 + g2^2 = [0.5, 2, 4];
    # p = [1 - 0.1 - 0.05 sqrt(2), -2 + 0.1 - 0.05 sqrt(2), 0.5 - 0.1] (the first step moves each by lr).
    by_hand = np.array([0.829289321881345, -1.970710678118655, 0.4])
    items = [Item("p vs worked by hand", relative_error(p, by_hand), TOLERANCE),
             Item("G vs worked by hand", relative_error(G, [0.5, 2.0, 4.0]), TOLERANCE)]
    rng = np.random.default_rng(12)
    p1, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    G1 = rng.random((4, 3))
    p2, G2 = p1.copy(), G1.copy()
    update(p1, g, G1, 0.02, 1e-10)
    optim.adagrad_update(p2, g, G2, 0.02, 1e-10)
    items.append(Item("vs library on random arrays", relative_error(np.concatenate([p1, G1]),
                                                                     np.concatenate([p2, G2])), TOLERANCE))
    return items


def _check_aevb_step(ns):
    f = _isolated(ns, "aevb_step")
    rng = np.random.default_rng(13)
    x = rng.random((5, 6))

    def fresh():
        return model_module.VAE(D=6, H=5, J=3, init="glorot", random_state=1)

    mine, ref = fresh(), fresh()
    G = {k: np.zeros_like(p) for k, p in mine.params.items()}
    ref_step = AEVB(ref, optim.Adagrad(lr=0.05), "B", 2, weight_decay=0.01)
    for seed in (20, 21):
        loss, _ = f(mine, x, np.random.default_rng(seed), G, 0.05, L=2, estimator="B", weight_decay=0.01)
        ref_loss, _ = ref_step(x, None, np.random.default_rng(seed))
    after = np.concatenate([p.ravel() for p in mine.params.values()])
    expected = np.concatenate([p.ravel() for p in ref.params.values()])
    items = [Item("parameters after 2 steps vs library AEVB", relative_error(after, expected), TOLERANCE),
             Item("loss vs library", relative_error(loss, ref_loss), TOLERANCE),
             Item("Adagrad state vs library", relative_error(
                 np.concatenate([G[k].ravel() for k in G]),
                 np.concatenate([ref_step.optimizer.state[k].ravel() for k in G])), TOLERANCE)]
    # A non-finite loss must change nothing.
    broken = fresh()
    broken.params["dec.logits.b"][0] = np.inf
    before = {k: p.copy() for k, p in broken.params.items()}
    with np.errstate(all="ignore"):
        f(broken, x, np.random.default_rng(22), {k: np.zeros_like(p) for k, p in broken.params.items()}, 0.05)
    changed = sum(not np.array_equal(before[k], p, equal_nan=True) for k, p in broken.params.items())
    items.append(Item("parameters changed by a step whose loss is not finite", float(changed), 0.0))
    return items


def _check_end_to_end(ns):
    items = []
    for decoder, estimator in _CONFIGS:
        model = student_vae(ns, D=6, H=5, J=3, decoder=decoder, init="glorot", random_state=0)
        x, eps = _small_problem()
        for g in model.grads.values():
            g[...] = np.nan
        errors = check_model(model, x, eps, estimator)
        worst = max(errors, key=lambda k: errors[k] if math.isfinite(errors[k]) else math.inf)
        items.append(Item(f"{decoder}/{estimator} worst ({worst})", errors[worst], TOLERANCE))
    return items


#: The functions a VAE with tanh trunks and a Bernoulli decoder, trained with estimator B, must call.
TRAINING_CALLS = ("linear_backward", "tanh_backward", "reparameterize_backward", "kl_standard_normal",
                  "kl_standard_normal_grad", "bernoulli_log_likelihood_grad", "estimator_b_backward",
                  "loss_and_grads", "adagrad_update", "aevb_step")


def training_data(n_train=500, n_test=100, seed=0):
    """A small digits-synthetic set (generated, no files): x_train (n_train, 784), x_test (n_test, 784)."""
    from ...data.synthetic import make_digits
    x, _ = make_digits(n_train + n_test, seed=seed)
    return x[:n_train].astype(np.float64), x[n_train:].astype(np.float64)


_DATA_CACHE = {}


def single_blas_thread():
    """Single-threaded BLAS for small products on a shared machine (threadpoolctl, where installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - an optional nicety
        return contextlib.nullcontext()
    return threadpool_limits(1)


def compare_training(ns, x_train=None, x_test=None, steps=60, M=50, lr=0.05, H=50, J=5, seed=0):
    """Train the student's VAE and the library's from the same start; return both histories and the calls.

    Both runs see the same minibatches and the same noise (the loop's Generator, seeded
    alike), so a correct set of functions reproduces the library's trajectory to rounding.
    """
    if x_train is None:
        if "default" not in _DATA_CACHE:
            _DATA_CACHE["default"] = training_data()
        x_train, x_test = _DATA_CACHE["default"]
    from ...train import fit
    N, D = x_train.shape
    kw = dict(M=M, samples=steps * M, eval_points=5, progress=False, seed=seed)
    mine = student_vae(ns, D=D, H=H, J=J, random_state=seed)
    ref = model_module.VAE(D=D, H=H, J=J, random_state=seed)
    with single_blas_thread(), np.errstate(all="ignore"):
        h_student = fit(mine, StudentAEVB(mine, lr=lr, weight_decay=1.0 / N), x_train, x_test, **kw)
        h_library = fit(ref, AEVB(ref, optim.Adagrad(lr=lr), weight_decay=1.0 / N), x_train, x_test, **kw)
    return h_student, h_library, mine.calls


def _check_training(ns):
    h_student, h_library, calls = compare_training(ns)
    a, b = np.array(h_student["train_elbo"]), np.array(h_library["train_elbo"])
    items = [Item("train bound vs library's trajectory", relative_error(a, b), 1e-6),
             Item("nats gained by training", float(a[-1] - a[0]), 20.0, "min"),
             Item("expected functions never called", float(sum(calls[n] == 0 for n in TRAINING_CALLS)), 0.0)]
    note = (f"bound {a[0]:.1f} -> {a[-1]:.1f} nats (library {b[0]:.1f} -> {b[-1]:.1f}); calls: "
            + ", ".join(f"{n} {calls[n]}" for n in TRAINING_CALLS))
    return items, note


#: Check name -> (the functions it needs, the check). Most checks are named after their function.
CHECKS = {
    "linear_backward": (("linear_backward",), _check_linear),
    "tanh_backward": (("tanh_backward",), _activation_check(StudentTanh, lib_layers.Tanh)),
    "sigmoid_backward": (("sigmoid_backward",), _activation_check(StudentSigmoid, lib_layers.Sigmoid)),
    "relu_backward": (("relu_backward",), _activation_check(StudentReLU, lib_layers.ReLU)),
    "softplus_backward": (("softplus_backward",), _activation_check(StudentSoftplus, lib_layers.Softplus)),
    "reparameterize_backward": (("reparameterize_backward",), _check_reparameterize_backward),
    "kl_standard_normal": (("kl_standard_normal",), _check_kl),
    "kl_standard_normal_grad": (("kl_standard_normal_grad",), _check_kl_grad),
    "bernoulli_log_likelihood_grad": (("bernoulli_log_likelihood_grad",), _check_bernoulli_grad),
    "gaussian_log_likelihood_grad": (("gaussian_log_likelihood_grad",), _check_gaussian_grad),
    "estimator_a_backward": (("estimator_a_backward",), _check_estimator_a),
    "estimator_b_backward": (("estimator_b_backward",), _check_estimator_b),
    "loss_and_grads": (("loss_and_grads",), _check_loss_and_grads),
    "adagrad_update": (("adagrad_update",), _check_adagrad),
    "aevb_step": (("aevb_step",), _check_aevb_step),
    "end_to_end": (EXERCISES, _check_end_to_end),
    "training": (EXERCISES, _check_training),
}
#: Every check, in the notebook's order.
GRADED = tuple(CHECKS)


def _run(name, ns):
    if name not in CHECKS:
        raise KeyError(f"no check is called {name!r}; the checks are: {', '.join(GRADED)}.")
    needs, check = CHECKS[name]
    absent = [n for n in needs if not callable(ns.get(n))]
    if absent:
        return Result(name, error=f"not defined: {', '.join(absent)} (run the cell that defines it)")
    try:
        with np.errstate(all="ignore"):
            out = check(ns)
    except NotImplementedError:
        return Result(name, error="not written yet: it raises NotImplementedError (replace the raise with your code)")
    except Exception as e:  # a student's bug: report it as a failure, with where it happened
        where = traceback.extract_tb(e.__traceback__)[-1]
        return Result(name, error=f"raised {type(e).__name__}: {e} (line {where.lineno} of {where.name})")
    items, note = out if isinstance(out, tuple) else (out, "")
    return Result(name, list(items), note)


def grade_all(ns, names=GRADED):
    """Run the named checks on the namespace; a list of :class:`Result`, nothing printed."""
    names = [names] if isinstance(names, str) else list(names)
    return [_run(name, ns) for name in names]


def format_results(results):
    """The grader's table: one line per function, then the count."""
    lines = [r.line() for r in results]
    n_pass = sum(r.passed for r in results)
    lines.append(f"{n_pass} passed, {len(results) - n_pass} failed (tolerance {TOLERANCE:.0e} unless stated)")
    return "\n".join(lines)


def grade(names, ns):
    """Check the named functions of ``ns`` (a notebook's ``globals()``), print the verdicts, assert they pass."""
    results = grade_all(ns, names)
    for r in results:
        print(r.line())
    failed = [r.name for r in results if not r.passed]
    assert not failed, f"not yet right: {', '.join(failed)} (the lines above say why)"
    return results
