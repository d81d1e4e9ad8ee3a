"""One optimiser step against numbers worked out by hand."""

import numpy as np
import pytest

from minivae import estimator as est
from minivae.model import VAE
from minivae.optim import OPTIMIZERS, SGD, Adagrad, Adam, make_optimizer


def _run(opt, grads_per_step, p0=(1.0, -2.0), weight_decay=0.0):
    params = {"w": np.array(p0)}
    for g in grads_per_step:
        opt.step(params, {"w": np.array(g)}, weight_decay=weight_decay)
    return params["w"]


def test_sgd_step_by_hand():
    # 1 - 0.1 * 0.5 = 0.95 ; -2 - 0.1 * 0.25 = -2.025
    np.testing.assert_allclose(_run(SGD(lr=0.1), [[0.5, 0.25]]), [0.95, -2.025], rtol=0, atol=1e-15)


def test_adagrad_two_steps_by_hand():
    # step 1: G = [0.25, 0.0625]; update = 0.1 * g / sqrt(G) = [0.1, 0.1] -> [0.9, -2.1]
    # step 2: g = [0.5, -0.75]; G = [0.5, 0.625];
    #   update = 0.1 * [0.5 / 0.70710678, -0.75 / 0.79056942] = [0.07071068, -0.09486833]
    #   -> [0.82928932, -2.00513167]
    w = _run(Adagrad(lr=0.1, eps=0.0), [[0.5, 0.25], [0.5, -0.75]])
    np.testing.assert_allclose(w, [0.8292893218813453, -2.0051316701949486], rtol=0, atol=1e-12)


def test_adam_two_steps_by_hand():
    # b1 = 0.9, b2 = 0.999, lr = 0.01, eps = 0
    # step 1: m = 0.1 g, v = 0.001 g^2; m_hat = g, v_hat = g^2 -> update lr * sign(g)
    #   w = [0.99, -2.01]
    # step 2 (g2 = [0.5, -0.75], first coordinate only for the comment):
    #   m = 0.9*0.05 + 0.1*0.5 = 0.095;  m_hat = 0.095 / 0.19 = 0.5
    #   v = 0.999*0.00025 + 0.001*0.25 = 0.00049975; v_hat = 0.00049975 / 0.001999 = 0.25
    #   update = 0.01 * 0.5 / 0.5 = 0.01 -> 0.98
    #   second coordinate: m = 0.9*0.025 - 0.075 = -0.0525; m_hat = -0.27631579
    #   v = 0.999*0.0000625 + 0.001*0.5625 = 0.0006249375; v_hat = 0.31262506
    #   update = 0.01 * -0.27631579 / 0.55912884 = -0.00494190 -> -2.00505810
    w = _run(Adam(lr=0.01, eps=0.0), [[0.5, 0.25], [0.5, -0.75]])
    np.testing.assert_allclose(w, [0.98, -2.0050581], rtol=0, atol=1e-8)


def test_weight_decay_by_hand():
    # decay 0.5 on w = [1, -2]: g' = g + 0.5 w = [0.5 + 0.5, 0.25 - 1] = [1, -0.75]
    # SGD, lr 0.1: [1 - 0.1, -2 + 0.075] = [0.9, -1.925]
    np.testing.assert_allclose(_run(SGD(lr=0.1), [[0.5, 0.25]], weight_decay=0.5), [0.9, -1.925],
                               rtol=0, atol=1e-15)
    # Adagrad, lr 0.1, first step: lr * sign(g') = [0.1, -0.1] -> [0.9, -1.9]
    np.testing.assert_allclose(_run(Adagrad(lr=0.1, eps=0.0), [[0.5, 0.25]], weight_decay=0.5), [0.9, -1.9],
                               rtol=0, atol=1e-15)
    # Adam, lr 0.01, first step: lr * sign(g') -> [0.99, -1.99]
    np.testing.assert_allclose(_run(Adam(lr=0.01, eps=0.0), [[0.5, 0.25]], weight_decay=0.5), [0.99, -1.99],
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_weight_decay_is_the_parameter_prior(optimizer):
    """A step with weight_decay = 1/N after the -ELBO's gradient is the step on the whole MAP objective
    -ELBO - (1/N) log p(theta), whose gradient adds -(1/N) d log p(theta) / d theta by hand here."""
    rng = np.random.default_rng(3)
    x = rng.random((8, 12))
    results = []
    for by_hand in (True, False):
        model = VAE(D=12, H=7, J=3, init="glorot", random_state=0)
        opt = OPTIMIZERS[optimizer](lr=0.05)
        for step in range(3):
            model.loss_and_grads(x, model.sample_eps(8, 1, np.random.default_rng(step)), "B")
            if by_hand:
                prior = est.log_parameter_prior_grad(model.params)
                grads = {k: g - prior[k] / 50 for k, g in model.grads.items()}
                opt.step(model.params, grads)
            else:
                opt.step(model.params, model.grads, weight_decay=1 / 50)
        results.append(model.params)
    for name in results[0]:
        np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-13, atol=1e-15)
    assert any(not np.allclose(p, VAE(D=12, H=7, J=3, init="glorot", random_state=0).params[k])
               for k, p in results[0].items())        # the steps did move the parameters


def test_state_round_trips_and_is_kept_per_name():
    opt = Adagrad(lr=0.1)
    params = {"a": np.ones(2), "b": np.ones(3)}
    opt.step(params, {"a": np.ones(2), "b": 2 * np.ones(3)})
    state = opt.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    other = Adagrad(lr=0.5)
    other.load_state_dict(state)
    assert other.lr == 0.1 and other.t == 1
    np.testing.assert_array_equal(other.state["b"], np.full(3, 4.0))


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("rmsprop", 0.1)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="learning rate must be a finite number > 0"):
            SGD(lr=bad)
    assert isinstance(make_optimizer("adagrad", 0.02), Adagrad)
    params, grads = {"w": np.ones(2)}, {"w": np.ones(2)}
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="weight_decay must be a number >= 0"):
            SGD(lr=0.1).step(params, grads, weight_decay=bad)
    np.testing.assert_array_equal(params["w"], 1.0)   # nothing was changed
