"""The importance-sampled log-likelihood: at least the ELBO, and exact where log p(x) is known."""

import warnings

import numpy as np
import pytest

from minivae.evaluate import dataset_elbo, log_likelihood, logmeanexp
from minivae.model import VAE
from test_model import _linear_gaussian


def test_logmeanexp_is_stable():
    a = np.array([[1000.0, -1000.0], [1000.0, -1000.0 + np.log(3.0)]])
    np.testing.assert_allclose(logmeanexp(a, axis=0), [1000.0, -1000.0 + np.log(2.0)], rtol=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # and says so without a warning
        assert logmeanexp(np.array([-np.inf, -np.inf])) == -np.inf


def test_importance_sampling_is_exact_when_q_is_the_posterior():
    model, x, log_px, _ = _linear_gaussian()
    np.testing.assert_allclose(log_likelihood(model, x, K=7, rng=0), log_px(x), rtol=1e-10)


def test_importance_sampling_recovers_log_px_with_an_imperfect_q():
    model, x, log_px, _ = _linear_gaussian()
    model.params["enc.mu.b"] += np.array([0.4, -0.3])
    model.params["enc.log_var.b"] += np.array([0.5, -0.2])
    elbo = dataset_elbo(model, x, np.random.default_rng(1), L=20000) * len(x)  # sum over the 3 points
    # Ten independent K = 5000 estimates per point give a mean and its standard error.
    runs = np.array([log_likelihood(model, x, K=5000, rng=seed, chunk=1000) for seed in range(10)])  # (10, 3)
    mean, se = runs.mean(0), runs.std(0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(mean - log_px(x)) < 5 * se + 1e-3), (mean, log_px(x), se)
    assert mean.sum() > elbo + 0.05         # strictly better than the bound here (KL(q||p) ~ 0.2 per point)


def test_importance_sampled_estimate_is_at_least_the_elbo_on_a_vae():
    model = VAE(10, 8, 3, init="glorot", random_state=0)
    x = (np.random.default_rng(1).random((50, 10)) < 0.4).astype(float)
    elbo = dataset_elbo(model, x, np.random.default_rng(2), L=200)
    ll = log_likelihood(model, x, K=1000, rng=3).mean()
    assert ll > elbo, (ll, elbo)


def test_chunking_does_not_change_the_estimate():
    model = VAE(10, 8, 3, init="glorot", random_state=0)
    x = np.random.default_rng(1).random((7, 10))
    a = log_likelihood(model, x, K=300, rng=5, batch_size=7, chunk=300)
    b = log_likelihood(model, x, K=300, rng=5, batch_size=7, chunk=300)
    np.testing.assert_array_equal(a, b)                       # seeded: reproducible
    c = log_likelihood(model, x, K=300, rng=5, batch_size=3, chunk=64)
    assert np.abs(a - c).max() < 1.0                          # same estimator, other noise: close


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="K must be at least 1"):
        log_likelihood(VAE(4, 3, 2), np.zeros((1, 4)), K=0)
