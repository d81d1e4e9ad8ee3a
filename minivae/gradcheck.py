"""Gradient checking by central finite differences, for a notebook or a class exercise.

What to expect, in float64 with the default step h = 1e-5: the truncation
error of a central difference is O(h^2) ~ 1e-10 and the rounding error
O(machine eps / h) ~ 1e-11, so a correct gradient gives a relative error
(:func:`relative_error`) around 1e-9 to 1e-11. The tests accept
``TOLERANCE = 1e-7``; a wrong gradient typically gives 1e-2 or more. In
float32 no finite-difference check is meaningful: always check in float64.

These checks run the readable code (``VAE.loss_and_grads``, the layers'
``backward``): the code that trains under :func:`minivae.train.fit`. The fast
path is checked against them by its own tests, and by finite differences with
:func:`minivae.fast.gradcheck.check_fast_model`.

Typical use::

    import numpy as np
    from minivae import VAE
    from minivae.gradcheck import check_model
    model = VAE(D=6, H=5, J=3, decoder="bernoulli", random_state=0)
    x = (np.random.default_rng(1).random((4, 6)) < 0.5).astype(float)
    eps = model.sample_eps(4, L=3, rng=2)
    print(check_model(model, x, eps, estimator="B"))   # {'enc.h.0.W': 3e-10, ...}
"""

from __future__ import annotations

import numpy as np

from .utils import as_generator

__all__ = [
    "TOLERANCE", "relative_error", "numerical_gradient",
    "check_function", "check_layer", "check_model", "check_model_direction",
]

TOLERANCE = 1e-7


def relative_error(a, b):
    """||a - b|| / max(||a|| + ||b||, 1e-300), one number for the whole array.

    A norm-wise error, so entries that are almost zero in both arrays do not
    dominate as they would in an elementwise ratio.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def numerical_gradient(f, x, h=1e-5):
    """Central differences of the scalar ``f()`` with respect to the array ``x``.

    ``x`` is perturbed in place, one entry at a time, and restored: ``f`` must
    read it (for instance a model parameter, or an input captured by a
    closure). Returns an array of ``x``'s shape.
    """
    if x.dtype != np.float64:
        raise ValueError(f"check gradients in float64; this array is {x.dtype}.")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = f()
        x[i] = old - h
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad


def check_function(f, grads, inputs, h=1e-5):
    """Compare analytic gradients of a scalar ``f()`` with finite differences.

    Parameters
    ----------
    f : callable with no arguments, returning a float; reads the arrays in ``inputs``.
    grads : dict name -> ndarray, the analytic gradients.
    inputs : dict name -> ndarray (float64), the arrays to perturb (same keys).

    Returns
    -------
    dict name -> relative error.
    """
    return {name: relative_error(grads[name], numerical_gradient(f, inputs[name], h)) for name in inputs}


def check_layer(layer, x, rng=None, h=1e-5):
    """Check a layer's ``backward`` against finite differences (cs231n style).

    The scalar is ``sum(layer.forward(x) * dout)`` with a random upstream
    gradient ``dout``, so the check needs no loss function and every entry of
    the output matters. Checks the input gradient (if the layer returns one)
    and every parameter.

    Returns
    -------
    dict: ``"x"`` and each parameter name -> relative error.
    """
    rng = as_generator(rng)
    x = np.array(x, dtype=np.float64)
    dout = rng.standard_normal(layer.forward(x).shape)

    def f():
        return float(np.sum(layer.forward(x) * dout))

    layer.forward(x)
    dx = layer.backward(dout)
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    inputs = dict(layer.params)
    if dx is not None:
        analytic["x"] = dx
        inputs["x"] = x
    return check_function(f, analytic, inputs, h)


def check_model(model, x, eps, estimator="B", h=1e-5):
    """Check every parameter gradient of ``model.loss_and_grads`` (end to end).

    Costs two forward passes per parameter entry: use a small model
    (a few hundred parameters). ``eps`` is fixed, so the loss is a
    deterministic function of the parameters.

    Returns
    -------
    dict parameter name -> relative error.
    """
    model.loss_and_grads(x, eps, estimator)
    analytic = {name: g.copy() for name, g in model.grads.items()}

    def f():
        return model.loss_and_grads(x, eps, estimator)[0]

    return check_function(f, analytic, model.params, h)


def check_model_direction(model, x, eps, estimator="B", rng=None, h=1e-5):
    """Check the whole gradient along one random direction (HIPS/autograd style).

    (loss(theta + h v) - loss(theta - h v)) / 2h must equal <grad, v>; two
    forward passes check every parameter at once, so this suits full-size models.

    Returns
    -------
    float, the relative error between the two directional derivatives.
    """
    rng = as_generator(rng)
    model.loss_and_grads(x, eps, estimator)
    v = {name: rng.standard_normal(p.shape) for name, p in model.params.items()}
    analytic = sum(float(np.sum(model.grads[name] * v[name])) for name in v)

    def shifted(sign):
        for name, p in model.params.items():
            p += sign * h * v[name]
        value = model.loss_and_grads(x, eps, estimator)[0]
        for name, p in model.params.items():
            p -= sign * h * v[name]
        return value

    numeric = (shifted(+1) - shifted(-1)) / (2.0 * h)
    return relative_error(analytic, numeric)
