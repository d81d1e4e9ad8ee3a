"""Optimisers: plain SGD, Adagrad (the paper's, Section 5) and Adam (today's usual choice).

Each one *minimises*: it moves parameters against their gradient. ``step``
updates the arrays of ``params`` in place (the model's layers see the new
values) and keeps its state per parameter name, so ``state_dict`` /
``load_state_dict`` round-trip through a checkpoint.

``step(params, grads, weight_decay=c)`` adds ``c * theta`` to each gradient
before the update. With c = 1/N that is the paper's N(0, I) parameter prior
(Section 5): the gradient of -(1/N) log p(theta), the prior's share per
datapoint (:func:`minivae.estimator.log_parameter_prior_grad`). This is how
:func:`minivae.train.fit` applies the prior, as ``torch.optim`` does: in the
optimiser's own pass over the parameters, not in a pass of its own.

Under the default backend ``"numba"`` (see :mod:`minivae.backend`) each
update runs as one fused in-place pass per parameter
(:func:`minivae.kernels.adagrad_step` and its siblings), with the same
arithmetic in the same order as the ``_update`` written out below.
"""

from __future__ import annotations

import numpy as np

from .backend import get_backend
from .backend import kernels as _kernels
from .estimator import log_parameter_prior_grad

__all__ = ["SGD", "Adagrad", "Adam", "make_optimizer", "OPTIMIZERS"]


class Optimizer:
    """Base class: ``lr`` and per-name state arrays."""

    def __init__(self, lr):
        if not lr > 0:
            raise ValueError(f"the learning rate must be positive, got {lr}.")
        self.lr = float(lr)
        self.state: dict[str, np.ndarray] = {}
        self.t = 0  # steps taken
        self._flat = {}  # name -> (arrays, their flat views), for the fast update

    def step(self, params, grads, weight_decay=0.0):
        """One update of every array in ``params`` from ``grads`` (same keys); ``grads`` is only read.

        weight_decay : float >= 0
            Each gradient g becomes g + weight_decay * theta first. 1/N gives the
            N(0, I) parameter prior per datapoint, since -(1/N) d log p(theta) / d theta = theta / N.
        """
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay}.")
        self.t += 1
        fast = get_backend() == "numba"
        for name, p in params.items():
            g = grads[name]
            if not (fast and self._update_fast(name, p, g, weight_decay)):
                if weight_decay:
                    g = g - weight_decay * log_parameter_prior_grad({name: p})[name]
                self._update(name, p, g)

    def _update(self, name, p, g):  # pragma: no cover - interface
        raise NotImplementedError

    def _update_fast(self, name, p, g, decay):
        """The same update (g + decay * p first) in one jitted pass; False (nothing done) if it cannot run it."""
        return False

    def _flat_views(self, name, *arrays):
        """1-D views of C-contiguous float arrays of one dtype and shape, or None; cached per name."""
        cached = self._flat.get(name)
        if cached is not None and all(a is b for a, b in zip(cached[0], arrays)):
            return cached[1]
        p = arrays[0]
        if not (p.dtype.kind == "f" and all(a.dtype == p.dtype and a.shape == p.shape and a.flags.c_contiguous
                                            for a in arrays)):
            return None
        views = tuple(a.reshape(-1) for a in arrays)
        self._flat[name] = (arrays, views)
        return views

    def _slot(self, key, p):
        """The state array ``key`` (zeros like p at first use)."""
        if key not in self.state:
            self.state[key] = np.zeros_like(p)
        return self.state[key]

    def state_dict(self):
        """Flat dict of arrays (checkpoint-friendly: no objects)."""
        d = {f"state.{k}": v for k, v in self.state.items()}
        d["t"] = np.array(self.t)
        d["lr"] = np.array(self.lr)
        return d

    def load_state_dict(self, d):
        self.t = int(d["t"])
        self.lr = float(d["lr"])
        self.state = {k[len("state."):]: np.array(v) for k, v in d.items() if k.startswith("state.")}


class SGD(Optimizer):
    """theta <- theta - lr * g."""

    def _update(self, name, p, g):
        p -= self.lr * g

    def _update_fast(self, name, p, g, decay):
        flat = self._flat_views(name, p, g)
        if flat is None:
            return False
        f = p.dtype.type
        _kernels().sgd_step(*flat, f(self.lr), f(decay))
        return True


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), the paper's optimiser.

    G <- G + g^2;  theta <- theta - lr * g / (sqrt(G) + eps).
    The same update as ``torch.optim.Adagrad`` with its defaults (eps = 1e-10).
    The paper picks the global step size lr from {0.01, 0.02, 0.1}.
    """

    def __init__(self, lr=0.01, eps=1e-10):
        super().__init__(lr)
        self.eps = float(eps)

    def _update(self, name, p, g):
        G = self._slot(name, p)
        G += g * g
        p -= self.lr * g / (np.sqrt(G) + self.eps)

    def _update_fast(self, name, p, g, decay):
        flat = self._flat_views(name, p, g, self._slot(name, p))
        if flat is None:
            return False
        f = p.dtype.type
        _kernels().adagrad_step(*flat, f(self.lr), f(self.eps), f(decay))
        return True


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015).

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, name, p, g):
        m, v = self._slot(name + ".m", p), self._slot(name + ".v", p)
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * g * g
        m_hat = m / (1.0 - self.beta1 ** self.t)
        v_hat = v / (1.0 - self.beta2 ** self.t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def _update_fast(self, name, p, g, decay):
        flat = self._flat_views(name, p, g, self._slot(name + ".m", p), self._slot(name + ".v", p))
        if flat is None:
            return False
        f = p.dtype.type
        _kernels().adam_step(*flat, f(self.lr), f(self.beta1), f(self.beta2), f(1.0 - self.beta1),
                             f(1.0 - self.beta2), f(1.0 - self.beta1 ** self.t), f(1.0 - self.beta2 ** self.t),
                             f(self.eps), f(decay))
        return True


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "adam": Adam}


def make_optimizer(name, lr):
    """Build an optimiser by name ("sgd", "adagrad", "adam")."""
    try:
        return OPTIMIZERS[name](lr=lr)
    except KeyError:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, not {name!r}.") from None
