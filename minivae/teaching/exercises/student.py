"""A VAE that runs on a student's functions: how the exercises are plugged into minivae.

The student's functions live in a namespace (a notebook's ``globals()``, or the
dict :func:`minivae.teaching.exercises.grader.load_namespace` makes from a notebook file).
:func:`student_vae` builds the library's :class:`~minivae.model.VAE` and swaps in
subclasses whose backward passes are the student's:

- ``Linear.backward`` runs ``linear_backward(dout, x, W)``;
- ``Tanh/Sigmoid/ReLU/Softplus.backward`` run ``tanh_backward`` ... ``softplus_backward``;
- ``BernoulliDecoder.log_likelihood_grad`` runs ``bernoulli_log_likelihood_grad(x, logits)``;
- ``GaussianDecoder.log_likelihood_grad`` runs ``gaussian_log_likelihood_grad(x, mean, log_var)``;
- ``VAE.loss_and_grads`` runs ``loss_and_grads(model, x, eps, estimator)``, which calls the
  student's KL, estimator backward passes and ``reparameterize_backward``;
- ``AEVB.__call__`` runs ``aevb_step(...)`` (:class:`StudentAEVB`), which calls the
  student's ``adagrad_update``.

The forward passes stay the library's (they are not exercises), and so does the
bound :func:`minivae.train.fit` records: the library measures what the student's
code trained. Nothing here imports :mod:`minivae.fast`: the student's model is
trained by the readable loop with :class:`StudentAEVB` as its step.

Every student function is called through a counting wrapper, rebound so that the
student's functions calling each other (``aevb_step`` calling ``loss_and_grads``
calling ``estimator_b_backward`` ...) also go through the wrappers: ``model.calls``
says how often each ran, which is how a test shows that training used them.
"""

from __future__ import annotations

import types
from collections import Counter

import numpy as np

from ... import model as model_module
from ...layers import Linear, ReLU, Sequential, Sigmoid, Softplus, Tanh
from ...optim import Adagrad
from ...steps import StepResult, TrainingStep

__all__ = ["EXERCISES", "instrument", "rebind", "student_vae", "StudentVAE", "StudentAEVB", "missing"]

#: The functions a student writes, in the order of the notebook.
EXERCISES = (
    "linear_backward", "tanh_backward", "sigmoid_backward", "relu_backward", "softplus_backward",
    "reparameterize_backward", "kl_standard_normal", "kl_standard_normal_grad",
    "bernoulli_log_likelihood_grad", "gaussian_log_likelihood_grad",
    "estimator_a_backward", "estimator_b_backward", "loss_and_grads", "adagrad_update", "aevb_step",
)


def missing(ns, names=EXERCISES):
    """The names in ``names`` that the namespace does not define as functions."""
    return [n for n in names if not callable(ns.get(n))]


def rebind(func, globals_):
    """A copy of ``func`` that looks its global names up in ``globals_``."""
    new = types.FunctionType(func.__code__, globals_, func.__name__, func.__defaults__, func.__closure__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__doc__ = func.__doc__
    return new


def instrument(ns, names=EXERCISES, overrides=None):
    """A namespace where each student function counts its calls, and the counter.

    ``overrides`` (name -> function) replaces some functions first: the grader uses it
    to check one exercise with the library's versions of the others.
    """
    g = dict(ns)
    g.update(overrides or {})
    calls = Counter()
    for name in names:
        f = g.get(name)
        if not isinstance(f, types.FunctionType):
            continue
        inner = rebind(f, g) if name not in (overrides or {}) else f

        def counted(*args, _f=inner, _name=name, **kwargs):
            calls[_name] += 1
            return _f(*args, **kwargs)

        counted.__name__ = name
        counted.__wrapped__ = inner
        g[name] = counted
    return g, calls


# --- the student's layers: the library's forward, the student's backward ------------------

class _Student:
    fns: dict = {}

    @classmethod
    def adopt(cls, layer, fns):
        """A student layer sharing ``layer``'s parameter and gradient arrays."""
        new = cls.__new__(cls)
        new.__dict__.update(layer.__dict__)
        new.fns = fns
        return new


class StudentLinear(_Student, Linear):
    def backward(self, dout):
        dx, dW, db = self.fns["linear_backward"](dout, self._x, self.params["W"])
        self.grads["W"][...] = dW
        self.grads["b"][...] = db
        return dx if self.need_dx else None


class StudentTanh(_Student, Tanh):
    def backward(self, dout):
        return self.fns["tanh_backward"](dout, self._h)


class StudentSigmoid(_Student, Sigmoid):
    def backward(self, dout):
        return self.fns["sigmoid_backward"](dout, self._y)


class StudentReLU(_Student, ReLU):
    def backward(self, dout):
        return self.fns["relu_backward"](dout, self._a)


class StudentSoftplus(_Student, Softplus):
    def backward(self, dout):
        return self.fns["softplus_backward"](dout, self._a)


_LAYERS = {Linear: StudentLinear, Tanh: StudentTanh, Sigmoid: StudentSigmoid, ReLU: StudentReLU,
           Softplus: StudentSoftplus}


def _adopt_layer(layer, fns):
    if isinstance(layer, Sequential):
        layer.layers = [_adopt_layer(child, fns) for child in layer.layers]
        return layer
    cls = _LAYERS.get(type(layer))
    return layer if cls is None else cls.adopt(layer, fns)     # Identity has no exercise


class StudentBernoulliDecoder(_Student, model_module.BernoulliDecoder):
    def log_likelihood_grad(self, x, out, dlog_px_z):
        return (dlog_px_z[..., None] * self.fns["bernoulli_log_likelihood_grad"](x, out[0]),)


class StudentGaussianDecoder(_Student, model_module.GaussianDecoder):
    def log_likelihood_grad(self, x, out, dlog_px_z):
        dmean, dlog_var = self.fns["gaussian_log_likelihood_grad"](x, out[0], out[1])
        w = dlog_px_z[..., None]
        return w * dmean, w * dlog_var


class StudentVAE(_Student, model_module.VAE):
    """The library's VAE whose ``loss_and_grads`` is the student's (inputs checked first)."""

    calls: Counter

    def loss_and_grads(self, x, eps, estimator="B"):
        x = self.check_x(x)
        eps = self.check_eps(eps, len(x))
        return self.fns["loss_and_grads"](self, x, eps, estimator)


def student_vae(ns, D, H=500, J=20, decoder="bernoulli", overrides=None, **kwargs):
    """The library's VAE built as usual (same initial weights), running the student's functions.

    Parameters
    ----------
    ns : mapping
        The student's namespace (``globals()`` of the notebook).
    D, H, J, decoder, **kwargs
        As for :class:`minivae.model.VAE`.
    overrides : dict or None
        Library functions to use instead of some of the student's (for grading one
        exercise at a time).

    Returns
    -------
    StudentVAE, with ``.calls`` counting each student function's calls.
    """
    fns, calls = instrument(ns, overrides=overrides)
    base = model_module.VAE(D, H, J, decoder=decoder, **kwargs)
    enc, dec = base.encoder, base.decoder
    enc.trunk = _adopt_layer(enc.trunk, fns)
    enc.mu, enc.log_var = _adopt_layer(enc.mu, fns), _adopt_layer(enc.log_var, fns)
    dec.trunk = _adopt_layer(dec.trunk, fns)
    if isinstance(dec, model_module.BernoulliDecoder):
        dec.logits = _adopt_layer(dec.logits, fns)
        base.decoder = StudentBernoulliDecoder.adopt(dec, fns)
    else:
        dec.mean_layer, dec.log_var = _adopt_layer(dec.mean_layer, fns), _adopt_layer(dec.log_var, fns)
        if dec._squash is not None:
            dec._squash = _adopt_layer(dec._squash, fns)
        base.decoder = StudentGaussianDecoder.adopt(dec, fns)
    vae = StudentVAE.adopt(base, fns)
    vae.calls = calls
    return vae


class StudentAEVB(TrainingStep):
    """One step of Algorithm 1 by the student's ``aevb_step``, with Adagrad's state in a library Adagrad.

    The accumulators G live in ``optimizer.state`` under the parameter names, where the
    library's Adagrad keeps them, so checkpoints of this step read like the library's.
    """

    name = "aevb-student"

    def __init__(self, model, lr=0.02, L=1, estimator="B", weight_decay=0.0):
        super().__init__(model)
        if not isinstance(model, StudentVAE):
            raise TypeError("StudentAEVB trains a model made by student_vae(...); build one with it first.")
        self.optimizer = Adagrad(lr=lr)
        for name, p in model.params.items():
            self.optimizer.state[name] = np.zeros_like(p)
        self.L, self.estimator, self.weight_decay = int(L), estimator, float(weight_decay)

    def __call__(self, x, idx, rng):
        loss, elbo = self.model.fns["aevb_step"](self.model, x, rng, self.optimizer.state, self.optimizer.lr,
                                                 L=self.L, estimator=self.estimator, weight_decay=self.weight_decay,
                                                 adagrad_eps=self.optimizer.eps)
        if np.isfinite(loss):
            self.optimizer.t += 1
        return StepResult(float(loss), np.asarray(elbo))

    def optimizers(self):
        return {"optimizer": self.optimizer}

    def describe(self):
        return {**super().describe(), "estimator": self.estimator, "L": self.L, "weight_decay": self.weight_decay}
