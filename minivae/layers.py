"""Layers with explicit ``forward`` and ``backward``.

Convention, stated once: the paper writes ``W x`` for a column vector ``x``;
here data come in rows, a minibatch ``x`` of shape (M, in), and a layer computes
``x @ W + b`` with ``W`` of shape (in, out) and ``b`` of shape (out,).

Every layer keeps its parameters in ``params`` and their gradients in
``grads`` under the same keys. ``forward(x)`` caches what ``backward`` needs;
``backward(dout)`` takes the gradient of a scalar with respect to the layer's
output and returns the gradient with respect to its input (cs231n style),
writing the parameter gradients into ``grads``. A layer is called once per
training step (the model stacks the L samples into one batch), so ``backward``
overwrites ``grads`` rather than accumulating.

The arithmetic of the activations lives in small pure functions
(:func:`tanh_backward` and so on). These layers are what trains: the fast
path (:mod:`minivae.fast`) runs only while this code is unchanged, and its
kernels' twins call these layers.
"""

from __future__ import annotations

import numpy as np

from .utils import as_generator

__all__ = [
    "Linear", "Tanh", "Sigmoid", "ReLU", "Softplus", "Identity", "Sequential",
    "mlp", "init_weight", "sigmoid", "softplus", "ACTIVATIONS",
]


# --- initialisation -------------------------------------------------------

def init_weight(n_in: int, n_out: int, init: str, rng, dtype) -> np.ndarray:
    """Draw a weight matrix of shape (n_in, n_out).

    ``"paper"``: N(0, 0.01^2), the paper's Section 5 (it writes N(0, 0.01),
    meaning a standard deviation of 0.01). ``"glorot"``: uniform on
    [-a, a] with a = sqrt(6 / (n_in + n_out)) (Glorot & Bengio, 2010),
    which keeps activations of deeper networks at a useful scale.
    """
    rng = as_generator(rng)
    if init == "paper":
        w = rng.normal(0.0, 0.01, size=(n_in, n_out))
    elif init == "glorot":
        a = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-a, a, size=(n_in, n_out))
    else:
        raise ValueError(f"init must be 'paper' or 'glorot', not {init!r}.")
    return w.astype(dtype)


# --- pure activation functions -------------------------------------------

def sigmoid(a):
    r"""Logistic function 1 / (1 + exp(-a)), without overflow and accurate in both tails.

    .. math::

        \operatorname{sigmoid}(a) = \frac{1}{1 + e^{-a}} = \frac{e^{a}}{1 + e^{a}}.

    With ``e = exp(-|a|) <= 1``: 1 / (1 + e) for a >= 0 and e / (1 + e) for a < 0; the
    numerator is exp(min(a, 0)) (1 for a >= 0, e for a < 0), an ``exp`` instead of an
    ``np.where``, which took twice as long as the whole formula now does.
    """
    return np.exp(np.minimum(a, 0)) / (1.0 + np.exp(-np.abs(a)))


def softplus(a):
    r"""log(1 + exp(a)), exact for large ``|a|`` (no overflow, no log(0)).

    .. math::

        \operatorname{softplus}(a) = \log\big(1 + e^{a}\big) = \max(a, 0) + \log\big(1 + e^{-|a|}\big).

    The right-hand side as written: ``np.logaddexp(0, a)`` gives the same within an ulp but took
    9 times as long (float32), and this is the Bernoulli log-likelihood's cost.
    """
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def tanh_backward(dout, h):
    r"""d tanh(a) / da = 1 - tanh(a)^2, written through the output h = tanh(a).

    .. math::

        \frac{\partial F}{\partial a} = \frac{\partial F}{\partial h} \odot \big(1 - h \odot h\big).
    """
    return dout * (1.0 - h * h)


def sigmoid_backward(dout, y):
    r"""d sigmoid(a) / da = y (1 - y), written through the output y.

    .. math::

        \frac{\partial F}{\partial a} = \frac{\partial F}{\partial y} \odot y \odot (1 - y).
    """
    return dout * y * (1.0 - y)


def relu_backward(dout, a):
    """d max(a, 0) / da = 1 where a > 0 (0 at the kink, by convention)."""
    return dout * (a > 0)


def softplus_backward(dout, a):
    """d softplus(a) / da = sigmoid(a)."""
    return dout * sigmoid(a)


# --- layers ---------------------------------------------------------------

class Layer:
    """Base class: no parameters, ``forward`` and ``backward`` to override."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dout):  # pragma: no cover - interface
        raise NotImplementedError

    def backward_input(self, dout):
        """The gradient with respect to the input only, no parameter gradients: for a layer
        without parameters, its ``backward``. (HMC needs only grad_z of the decoder.)"""
        return self.backward(dout)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Linear(Layer):
    r"""Affine map ``out = x @ W + b``.

    Its backward pass, for ``dout`` of shape (M, out):

    .. math::

        \texttt{dW} = x^\top \texttt{dout}, \qquad \texttt{db} = \sum_{m=1}^{M} \texttt{dout}_m, \qquad
        \texttt{dx} = \texttt{dout}\, W^\top.

    Parameters
    ----------
    n_in, n_out : int
    init : {"paper", "glorot"}
    rng : None, int or np.random.Generator
    dtype : numpy float dtype
    need_dx : bool
        ``False`` for the first layer of the encoder: its input is the data,
        whose gradient nobody asks for, so ``backward`` skips that product
        (one of the large matrix products of a step) and returns None.
    """

    def __init__(self, n_in, n_out, init="paper", rng=None, dtype=np.float64, need_dx=True):
        super().__init__()
        self.params["W"] = init_weight(n_in, n_out, init, rng, dtype)  # (in, out)
        self.params["b"] = np.zeros(n_out, dtype=dtype)                # (out,)
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.grads["b"] = np.zeros_like(self.params["b"])
        self.need_dx = need_dx
        self._x = None

    def forward(self, x):
        """x: (M, in) -> out: (M, out)."""
        self._x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        """dout: (M, out) -> dx: (M, in), or None when ``need_dx`` is False."""
        self.grads["W"][...] = self._x.T @ dout   # (in, out)
        self.grads["b"][...] = dout.sum(axis=0)   # (out,)
        if not self.need_dx:
            return None
        return self.backward_input(dout)

    def backward_input(self, dout):
        """dout: (M, out) -> dx: (M, in), what ``backward`` returns, without dW and db."""
        return dout @ self.params["W"].T          # (M, in)

    def __repr__(self):
        n_in, n_out = self.params["W"].shape
        return f"Linear({n_in}, {n_out})"


class Tanh(Layer):
    """h = tanh(a), elementwise."""

    def forward(self, a):
        self._h = np.tanh(a)
        return self._h

    def backward(self, dout):
        return tanh_backward(dout, self._h)


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-a)), elementwise."""

    def forward(self, a):
        self._y = sigmoid(a)
        return self._y

    def backward(self, dout):
        return sigmoid_backward(dout, self._y)


class ReLU(Layer):
    """h = max(a, 0), elementwise."""

    def forward(self, a):
        self._a = a
        return np.maximum(a, 0)

    def backward(self, dout):
        return relu_backward(dout, self._a)


class Softplus(Layer):
    """h = log(1 + exp(a)), elementwise; a smooth ReLU."""

    def forward(self, a):
        self._a = a
        return softplus(a)

    def backward(self, dout):
        return softplus_backward(dout, self._a)


class Identity(Layer):
    """h = a; lets a linear model (used in the linear-Gaussian checks) be built like any other."""

    def forward(self, a):
        return a

    def backward(self, dout):
        return dout


ACTIVATIONS = {"tanh": Tanh, "sigmoid": Sigmoid, "relu": ReLU, "softplus": Softplus, "identity": Identity}


class Sequential(Layer):
    """Layers applied in order; parameters named ``"<layer index>.<key>"``.

    ``params`` and ``grads`` are views onto the layers' own arrays, so an
    optimiser updating ``params[name]`` in place updates the layer.
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            for key in layer.params:
                self.params[f"{i}.{key}"] = layer.params[key]
                self.grads[f"{i}.{key}"] = layer.grads[key]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
            if dout is None:  # a first layer that was told not to compute dx
                break
        return dout

    def backward_input(self, dout):
        """The gradient with respect to the input, no parameter gradients (see ``Layer.backward_input``)."""
        for layer in reversed(self.layers):
            dout = layer.backward_input(dout)
        return dout

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


def mlp(sizes, activation="tanh", init="paper", rng=None, dtype=np.float64, need_dx=True):
    """Stack ``Linear -> activation`` for consecutive pairs in ``sizes``.

    ``mlp([784, 500], "tanh")`` is the paper's one hidden layer
    ``h = tanh(x W_h + b_h)``. ``need_dx`` applies to the first Linear only.
    With ``sizes`` of length 1 the result is an empty (identity) stack.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, not {activation!r}.")
    rng = as_generator(rng)
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, init, rng, dtype, need_dx=need_dx or k > 0))
        layers.append(ACTIVATIONS[activation]())
    return Sequential(layers)
