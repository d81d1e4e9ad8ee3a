"""Optimisers: plain SGD, Adagrad (the paper's, Section 5) and Adam (today's usual choice).

Each one *minimises*: it moves parameters against their gradient. ``step``
updates the arrays of ``params`` in place (the model's layers see the new
values) and keeps its state per parameter name, so ``state_dict`` /
``load_state_dict`` round-trip through a checkpoint.

The arithmetic of each update is a small pure function
(:func:`sgd_update`, :func:`adagrad_update`, :func:`adam_update`) that the
classes call and that the fast path's kernels (``minivae.fast``) are held to.

``step(params, grads, weight_decay=c)`` adds ``c * theta`` to each gradient
before the update (:func:`decayed_gradient`). With c = 1/N that is the paper's
N(0, I) parameter prior (Section 5): the gradient of -(1/N) log p(theta), the
prior's share per datapoint (:func:`minivae.estimator.log_parameter_prior_grad`).
This is the one place the readable training path applies the prior, as
``torch.optim`` does: in the optimiser's own pass over the parameters.
"""

from __future__ import annotations

import math

import numpy as np

from .estimator import log_parameter_prior_grad
from .utils import check_scalar

__all__ = ["SGD", "Adagrad", "Adam", "make_optimizer", "OPTIMIZERS",
           "decayed_gradient", "sgd_update", "adagrad_update", "adam_update"]


# --- the updates, as pure functions (in place on p and the state arrays) ----------------

def decayed_gradient(g, p, weight_decay):
    r"""g + weight_decay * p: the gradient of the loss plus -(weight_decay) log N(p; 0, I).

    .. math::

        g \leftarrow g - c\, \frac{\partial \log \mathcal N(\theta; 0, I)}{\partial \theta} = g + c\, \theta,
        \qquad c = \texttt{weight\_decay} = 1/N.

    With weight_decay = 1/N this adds the paper's parameter prior per datapoint.
    Returns ``g`` itself (not a copy) when weight_decay is 0.
    """
    if not weight_decay:
        return g
    return g - weight_decay * log_parameter_prior_grad({"p": p})["p"]


def sgd_update(p, g, lr):
    r"""theta <- theta - lr * g, in place on p.

    .. math::

        \theta \leftarrow \theta - \eta\, g.
    """
    p -= lr * g


def adagrad_update(p, g, G, lr, eps):
    r"""Adagrad (Duchi et al., 2011): G <- G + g^2; theta <- theta - lr * g / (sqrt(G) + eps); in place.

    .. math::

        G \leftarrow G + g \odot g, \qquad \theta \leftarrow \theta - \eta\, \frac{g}{\sqrt{G} + \varepsilon}.
    """
    G += g * g
    p -= lr * g / (np.sqrt(G) + eps)


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps):
    r"""Adam (Kingma & Ba, 2015), step number t >= 1 (counted in updates, not epochs), in place.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \qquad v \leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g,
        \qquad \theta \leftarrow \theta - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \varepsilon}.
    """
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * g * g
    m_hat = m / (1.0 - beta1 ** t)
    v_hat = v / (1.0 - beta2 ** t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


def _check_rate(name, value, positive=True):
    return check_scalar(float(value), f"the {name}", float, min_val=0,
                        include_boundaries="neither" if positive else "both")


# --- the optimisers ---------------------------------------------------------------------

class Optimizer:
    """Base class: ``lr``, the step count ``t`` and per-name state arrays."""

    def __init__(self, lr):
        self.lr = _check_rate("learning rate", lr)
        self.state: dict[str, np.ndarray] = {}
        self.t = 0  # updates taken

    def step(self, params, grads, weight_decay=0.0):
        """One update of every array in ``params`` from ``grads`` (same keys); ``grads`` is only read.

        weight_decay : float >= 0
            Each gradient g becomes g + weight_decay * theta first. 1/N gives the
            N(0, I) parameter prior per datapoint, since -(1/N) d log p(theta) / d theta = theta / N.
        """
        if not (isinstance(weight_decay, (int, float, np.floating)) and math.isfinite(weight_decay)
                and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay}.")
        self.t += 1
        for name, p in params.items():
            self._update(name, p, decayed_gradient(grads[name], p, weight_decay))

    def _update(self, name, p, g):  # pragma: no cover - interface
        raise NotImplementedError

    def _slot(self, key, p):
        """The state array ``key`` (zeros like p at first use)."""
        if key not in self.state:
            self.state[key] = np.zeros_like(p)
        return self.state[key]

    def hyperparameters(self):
        """The settings that define the update (recorded in checkpoints and compared on resume)."""
        return {"lr": self.lr}

    def state_dict(self):
        """Flat dict of arrays (checkpoint-friendly: no objects)."""
        d = {f"state.{k}": v for k, v in self.state.items()}
        d["t"] = np.array(self.t)
        d["lr"] = np.array(self.lr)
        d["n_state"] = np.array(len(self.state))   # so a checkpoint with an array missing is refused
        return d

    def load_state_dict(self, d, params=None):
        """Restore ``state_dict()``; with ``params``, check each state array's shape and dtype first."""
        state = {k[len("state."):]: np.array(v) for k, v in d.items() if k.startswith("state.")}
        if "n_state" in d and int(d["n_state"]) != len(state):
            raise ValueError(f"the optimiser state is incomplete: {len(state)} of its {int(d['n_state'])} arrays "
                             "are there; the checkpoint was damaged.")
        if params is not None:
            for key, v in state.items():
                p = params.get(key.rsplit(".", 1)[0] if key not in params else key)
                if p is None or v.shape != p.shape:
                    raise ValueError(f"optimiser state {key!r} has shape {v.shape}, which fits no parameter "
                                     f"of the model{'' if p is None else f' ({p.shape})'}.")
                state[key] = v.astype(p.dtype, copy=False)
        self.t = int(d["t"])
        self.lr = float(d["lr"])
        self.state = state


class SGD(Optimizer):
    """theta <- theta - lr * g (:func:`sgd_update`)."""

    def _update(self, name, p, g):
        sgd_update(p, g, self.lr)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), the paper's optimiser (:func:`adagrad_update`).

    G <- G + g^2;  theta <- theta - lr * g / (sqrt(G) + eps).
    The same update as ``torch.optim.Adagrad`` with its defaults (eps = 1e-10).
    The paper picks the global step size lr from {0.01, 0.02, 0.1}.
    """

    def __init__(self, lr=0.01, eps=1e-10):
        super().__init__(lr)
        self.eps = _check_rate("Adagrad eps", eps, positive=False)

    def _update(self, name, p, g):
        adagrad_update(p, g, self._slot(name, p), self.lr, self.eps)

    def hyperparameters(self):
        return {"lr": self.lr, "eps": self.eps}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) (:func:`adam_update`); its bias correction counts updates, ``t``."""

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        self.beta1, self.beta2 = (check_scalar(float(b), f"Adam's {name}", float, min_val=0, max_val=1,
                                               include_boundaries="left")
                                  for name, b in (("beta1", beta1), ("beta2", beta2)))
        self.eps = _check_rate("Adam eps", eps, positive=False)

    def _update(self, name, p, g):
        adam_update(p, g, self._slot(name + ".m", p), self._slot(name + ".v", p), self.t,
                    self.lr, self.beta1, self.beta2, self.eps)

    def hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "adam": Adam}


def make_optimizer(name, lr):
    """Build an optimiser by name ("sgd", "adagrad", "adam")."""
    try:
        return OPTIMIZERS[name](lr=lr)
    except KeyError:
        raise ValueError(f"optimizer must be one of {', '.join(sorted(OPTIMIZERS))}; got {name!r}.") from None
