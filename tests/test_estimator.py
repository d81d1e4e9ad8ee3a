"""The estimator's pieces: finite-difference checks (float64, relative error <= 1e-7),
then tests of meaning that a self-consistent but wrong gradient would fail."""

import numpy as np
import pytest

from minivae import estimator as est
from minivae.gradcheck import TOLERANCE, check_function

rng0 = np.random.default_rng(0)
L, M, J, D = 3, 4, 2, 5


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return dict(mu=rng.standard_normal((M, J)), log_var=rng.standard_normal((M, J)) * 0.5,
                eps=rng.standard_normal((L, M, J)))


def test_reparameterize_gradient():
    a = _arrays()
    dz = np.random.default_rng(1).standard_normal((L, M, J))
    dmu, dlv = est.reparameterize_backward(dz, a["log_var"], a["eps"])
    f = lambda: float(np.sum(est.reparameterize(a["mu"], a["log_var"], a["eps"]) * dz))
    err = check_function(f, {"mu": dmu, "log_var": dlv}, {"mu": a["mu"], "log_var": a["log_var"]})
    assert max(err.values()) < TOLERANCE, err


def test_kl_gradient():
    a = _arrays()
    w = np.random.default_rng(2).standard_normal(M)   # a random weight per datapoint
    dmu, dlv = est.kl_standard_normal_grad(a["mu"], a["log_var"])
    f = lambda: float(np.sum(est.kl_standard_normal(a["mu"], a["log_var"]) * w))
    err = check_function(f, {"mu": w[:, None] * dmu, "log_var": w[:, None] * dlv},
                         {"mu": a["mu"], "log_var": a["log_var"]})
    assert max(err.values()) < TOLERANCE, err


def test_bernoulli_log_likelihood_gradient():
    rng = np.random.default_rng(3)
    x = rng.random((M, D))
    logits = rng.standard_normal((L, M, D)) * 3
    w = rng.standard_normal((L, M))
    f = lambda: float(np.sum(est.bernoulli_log_likelihood(x, logits) * w))
    g = w[..., None] * est.bernoulli_log_likelihood_grad(x, logits)
    err = check_function(f, {"logits": g}, {"logits": logits})
    assert err["logits"] < TOLERANCE, err


def test_gaussian_log_likelihood_gradient():
    rng = np.random.default_rng(4)
    x = rng.random((M, D))
    mean, log_var = rng.standard_normal((L, M, D)), rng.standard_normal((L, M, D)) * 0.5
    w = rng.standard_normal((L, M))
    dmean, dlv = est.gaussian_log_likelihood_grad(x, mean, log_var)
    f = lambda: float(np.sum(est.gaussian_log_likelihood(x, mean, log_var) * w))
    err = check_function(f, {"mean": w[..., None] * dmean, "log_var": w[..., None] * dlv},
                         {"mean": mean, "log_var": log_var})
    assert max(err.values()) < TOLERANCE, err


def test_log_densities_of_z_gradients():
    a = _arrays(5)
    z = a["eps"] * 1.3 + 0.2
    w = np.random.default_rng(6).standard_normal((L, M))
    f_p = lambda: float(np.sum(est.log_standard_normal(z) * w))
    assert check_function(f_p, {"z": w[..., None] * est.log_standard_normal_grad(z)}, {"z": z})["z"] < TOLERANCE
    dz, dmu, dlv = est.log_diag_gaussian_grad(z, a["mu"], a["log_var"])
    f_q = lambda: float(np.sum(est.log_diag_gaussian(z, a["mu"], a["log_var"]) * w))
    err = check_function(f_q, {"z": w[..., None] * dz, "mu": (w[..., None] * dmu).sum(0),
                               "log_var": (w[..., None] * dlv).sum(0)},
                         {"z": z, "mu": a["mu"], "log_var": a["log_var"]})
    assert max(err.values()) < TOLERANCE, err


@pytest.mark.parametrize("which", ["A", "B"])
def test_estimator_backward(which):
    """Gradients of each estimator with respect to its direct inputs (z held as an input)."""
    a = _arrays(7)
    rng = np.random.default_rng(8)
    log_px_z = rng.standard_normal((L, M)) * 10
    z = est.reparameterize(a["mu"], a["log_var"], a["eps"])
    dout = rng.standard_normal(M)
    if which == "A":
        f = lambda: float(np.sum(est.estimator_a(log_px_z, z, a["mu"], a["log_var"]) * dout))
        dl, dz, dmu, dlv = est.estimator_a_backward(dout, z, a["mu"], a["log_var"])
        analytic = {"log_px_z": dl, "z": dz, "mu": dmu, "log_var": dlv}
        inputs = {"log_px_z": log_px_z, "z": z, "mu": a["mu"], "log_var": a["log_var"]}
    else:
        f = lambda: float(np.sum(est.estimator_b(log_px_z, a["mu"], a["log_var"]) * dout))
        dl, dmu, dlv = est.estimator_b_backward(dout, L, a["mu"], a["log_var"])
        analytic = {"log_px_z": dl, "mu": dmu, "log_var": dlv}
        inputs = {"log_px_z": log_px_z, "mu": a["mu"], "log_var": a["log_var"]}
    err = check_function(f, analytic, inputs)
    assert max(err.values()) < TOLERANCE, err


def test_parameter_prior_gradient():
    rng = np.random.default_rng(9)
    params = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    err = check_function(lambda: est.log_parameter_prior(params), est.log_parameter_prior_grad(params), params)
    assert max(err.values()) < TOLERANCE, err
    assert est.log_parameter_prior({"w": np.array([3.0, 4.0])}) == -12.5


# --- meaning -------------------------------------------------------------------

def test_sampler_variance_is_exp_log_var():
    """A std/variance mix-up passes every gradient check; this catches it."""
    rng = np.random.default_rng(10)
    mu = np.array([[0.5, -1.0, 2.0]])
    log_var = np.array([[-2.0, 0.0, 1.5]])
    n = 200_000
    z = est.reparameterize(mu, log_var, rng.standard_normal((n, 1, 3)))[:, 0, :]
    var = np.exp(log_var[0])
    se_var = var * np.sqrt(2.0 / (n - 1))            # standard error of a normal sample variance
    assert np.all(np.abs(z.var(axis=0, ddof=1) - var) < 5 * se_var), (z.var(axis=0), var)
    assert np.all(np.abs(z.mean(axis=0) - mu[0]) < 5 * np.sqrt(var / n))


def test_analytic_kl_matches_monte_carlo_kl_from_the_same_sampler():
    rng = np.random.default_rng(11)
    mu = np.array([[0.3, -1.2], [2.0, 0.1]])
    log_var = np.array([[-1.0, 0.4], [0.2, -2.5]])
    n = 200_000
    z = est.reparameterize(mu, log_var, rng.standard_normal((n, 2, 2)))
    log_ratio = est.log_diag_gaussian(z, mu, log_var) - est.log_standard_normal(z)   # (n, M)
    mc, se = log_ratio.mean(axis=0), log_ratio.std(axis=0, ddof=1) / np.sqrt(n)
    kl = est.kl_standard_normal(mu, log_var)
    assert np.all(kl >= 0)
    assert np.all(np.abs(mc - kl) < 5 * se), (mc, kl, se)


def test_kl_is_zero_at_the_prior():
    assert est.kl_standard_normal(np.zeros((2, 3)), np.zeros((2, 3))).tolist() == [0.0, 0.0]


def test_bernoulli_log_likelihood_is_exact_for_any_logit():
    x = np.array([[1.0, 0.0, 1.0, 0.0, 0.5]])
    logits = np.array([[1000.0, 1000.0, -1000.0, -1000.0, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ll = est.bernoulli_log_likelihood(x, logits)
        g = est.bernoulli_log_likelihood_grad(x, logits)
    # log sigmoid(1000) = 0, log(1 - sigmoid(1000)) = -1000, log sigmoid(-1000) = -1000,
    # log(1 - sigmoid(-1000)) = 0, and 0.5 log(1/2) + 0.5 log(1/2) = -log 2.
    np.testing.assert_allclose(ll, [-2000.0 - np.log(2.0)], rtol=1e-15)
    np.testing.assert_allclose(g, [[0.0, -1.0, 1.0, 0.0, 0.0]], atol=1e-300)


def test_bernoulli_log_likelihood_matches_the_textbook_form():
    rng = np.random.default_rng(12)
    x, logits = rng.random((4, 6)), rng.standard_normal((4, 6))
    y = 1 / (1 + np.exp(-logits))
    textbook = np.sum(x * np.log(y) + (1 - x) * np.log(1 - y), axis=-1)
    np.testing.assert_allclose(est.bernoulli_log_likelihood(x, logits), textbook, rtol=1e-12)


def test_gaussian_log_likelihood_matches_the_density():
    x, mean, log_var = np.array([[0.3, 1.0]]), np.array([[0.0, 2.0]]), np.array([[np.log(4.0), 0.0]])
    by_hand = np.log(np.exp(-0.3 ** 2 / 8) / np.sqrt(2 * np.pi * 4)) + np.log(np.exp(-0.5) / np.sqrt(2 * np.pi))
    np.testing.assert_allclose(est.gaussian_log_likelihood(x, mean, log_var), [by_hand], rtol=1e-14)
