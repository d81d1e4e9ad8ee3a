"""Finite-difference checks of every layer, in float64, with a random upstream gradient.

Tolerance: relative error <= minivae.gradcheck.TOLERANCE = 1e-7 (a correct
gradient gives about 1e-10; a wrong one 1e-2 or more).
"""

import numpy as np
import pytest

from minivae.gradcheck import TOLERANCE, check_layer
from minivae.layers import (ACTIVATIONS, Linear, ReLU, Sequential, Sigmoid, Softplus, Tanh, mlp,
                            init_weight, sigmoid, softplus)


@pytest.mark.parametrize("make", [lambda: Linear(4, 3, rng=0), Tanh, Sigmoid, ReLU, Softplus,
                                  lambda: mlp([4, 5, 3], "tanh", rng=1)],
                         ids=["linear", "tanh", "sigmoid", "relu", "softplus", "mlp"])
def test_layer_gradients(make):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)) * 2.0
    errors = check_layer(make(), x, rng=1)
    assert "x" in errors
    assert max(errors.values()) < TOLERANCE, errors


def test_linear_checks_every_parameter():
    errors = check_layer(Linear(4, 3, rng=0, init="glorot"), np.random.default_rng(2).standard_normal((5, 4)))
    assert set(errors) == {"W", "b", "x"}
    assert max(errors.values()) < TOLERANCE


def test_first_layer_skips_the_data_gradient():
    layer = Linear(4, 3, rng=0, need_dx=False)
    layer.forward(np.ones((2, 4)))
    assert layer.backward(np.ones((2, 3))) is None
    np.testing.assert_allclose(layer.grads["W"], np.full((4, 3), 2.0))   # x.T @ dout = 2 rows of ones
    np.testing.assert_allclose(layer.grads["b"], np.full(3, 2.0))


def test_sequential_params_are_views_of_the_layers():
    net = mlp([3, 4, 2], "tanh", rng=0)
    assert set(net.params) == {"0.W", "0.b", "2.W", "2.b"}
    net.params["0.W"][0, 0] = 123.0
    assert net.layers[0].params["W"][0, 0] == 123.0
    assert net.grads["2.b"] is net.layers[2].grads["b"]


def test_activations_are_stable_at_extreme_inputs():
    a = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = sigmoid(a)
        sp = softplus(a)
    np.testing.assert_allclose(s, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(sp, [0.0, 1.9287498479639178e-22, np.log(2.0), 50.0, 1000.0], rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_softplus_are_the_two_sided_formulas(dtype):
    """sigmoid gives the numbers of (1 or e) / (1 + e) with np.where, bit for bit; softplus those of
    np.logaddexp(0, a) within 4 units in the last place (3 seen in float32, 2 in float64)."""
    a = np.concatenate([np.linspace(-120, 120, 24001), np.random.default_rng(0).standard_normal(10000) * 10,
                        [-np.inf, -0.0, 0.0, np.inf]]).astype(dtype)
    e = np.exp(-np.abs(a))
    s = sigmoid(a)
    assert s.dtype == dtype and np.array_equal(s, np.where(a >= 0, 1.0, e) / (1.0 + e))
    sp, ref = softplus(a), np.logaddexp(dtype(0), a)
    assert sp.dtype == dtype
    finite = np.isfinite(ref)
    assert np.array_equal(sp[~finite], ref[~finite])
    assert np.all(np.abs(sp[finite] - ref[finite]) <= 4 * np.spacing(np.abs(ref[finite])))


@pytest.mark.parametrize("make", [lambda: Linear(4, 3, rng=0), Tanh, Sigmoid, ReLU, Softplus,
                                  lambda: mlp([4, 5, 3], "tanh", rng=1)],
                         ids=["linear", "tanh", "sigmoid", "relu", "softplus", "mlp"])
def test_backward_input_is_backward_without_parameter_gradients(make):
    rng = np.random.default_rng(3)
    x, layer = rng.standard_normal((6, 4)), make()
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    for g in layer.grads.values():
        g[...] = 7.0
    dx = layer.backward_input(dout)
    assert all(np.all(g == 7.0) for g in layer.grads.values())         # no parameter gradient computed
    np.testing.assert_array_equal(dx, layer.backward(dout))


def test_paper_initialisation_has_standard_deviation_001():
    w = init_weight(400, 500, "paper", np.random.default_rng(0), np.float64)
    assert w.shape == (400, 500)
    assert abs(w.std() - 0.01) < 2e-4 and abs(w.mean()) < 2e-4
    g = init_weight(400, 500, "glorot", np.random.default_rng(0), np.float32)
    assert g.dtype == np.float32 and np.abs(g).max() <= np.sqrt(6 / 900) + 1e-7
    with pytest.raises(ValueError, match="init must be"):
        init_weight(2, 2, "zeros", None, np.float64)


def test_unknown_activation_is_refused():
    assert set(ACTIVATIONS) >= {"tanh", "sigmoid", "relu", "softplus"}
    with pytest.raises(ValueError, match="activation must be one of"):
        mlp([2, 3], "swish")
