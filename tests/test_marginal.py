"""The Appendix D marginal-likelihood estimator against known answers: the exact log p(x) of the
linear-Gaussian model, and a fine grid over z (exact to rounding for J = 2) on a Bernoulli decoder
whose posterior is not Gaussian."""

import numpy as np
import pytest
from scipy import stats

from minivae.baselines.hmc import log_joint
from minivae.baselines.marginal import (appendix_d_log_likelihood, chain_starts, dataset_marginal_likelihood,
                                        fit_gaussian, grid_log_likelihood, log_gaussian)
from minivae.model import VAE
from minivae.optim import Adagrad
from minivae.teaching.linear_gaussian import linear_gaussian
from minivae.train import fit


def _within(err, se, k=4.0):
    """|mean error| < k standard errors of the mean (errors of different datapoints are independent)."""
    se_mean = np.sqrt(np.sum(se ** 2)) / len(se)
    return abs(np.mean(err)) < k * se_mean, (np.mean(err), se_mean)


def test_log_gaussian_is_the_multivariate_normal_density():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((30, 2, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.7]])
    mean, cov = fit_gaussian(z)
    for m in range(2):
        np.testing.assert_allclose(mean[m], z[:, m].mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(cov[m], np.cov(z[:, m].T), rtol=1e-12)
        np.testing.assert_allclose(log_gaussian(z, mean, cov)[:, m],
                                   stats.multivariate_normal(mean[m], cov[m]).logpdf(z[:, m]), rtol=1e-10)
    _, diag = fit_gaussian(z, diagonal=True)
    np.testing.assert_array_equal(diag, cov * np.eye(3))


def test_the_grid_is_exact_on_the_linear_gaussian_model():
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(20, rng=1)
    np.testing.assert_allclose(grid_log_likelihood(lg.model, x, step=0.1), lg.log_px(x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("density", ["full", "diagonal"])
def test_appendix_d_matches_the_exact_log_px_of_the_linear_gaussian_model(density):
    """The paper's settings: L = 50 posterior samples (25 fit q, 25 estimate), 4 leapfrog steps;
    J = 2, 10 datapoints. Criterion: the mean error over the 10 is below 4 of its standard errors
    sqrt(sum se_i^2) / 10. (Single estimates have heavier tails than a Gaussian: on 1600
    datapoints 1.2 % were more than 4 se off, none of 160 means of 10.) The standard error must
    also be small enough for the check to mean something."""
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(10, rng=2)
    log_px, se = appendix_d_log_likelihood(lg.model, x, rng=3, L=50, n_leapfrog=4, density=density)
    ok, detail = _within(log_px - lg.log_px(x), se)
    assert ok, detail
    assert detail[1] < 0.1 and np.all(se > 0)


def test_appendix_d_matches_the_grid_on_a_bernoulli_decoder():
    """A non-Gaussian posterior (a tanh decoder with large weights, binary x drawn from it), where
    the fitted Gaussian q is only an approximation: the estimate stays unbiased, its spread grows."""
    model = VAE(D=10, H=6, J=2, init="glorot", random_state=3)
    for p in model.theta.values():
        p *= 1.5
    x = model.generate(10, np.random.default_rng(0), sample=True)
    exact = grid_log_likelihood(model, x, step=0.1)
    log_px, se = appendix_d_log_likelihood(model, x, rng=1)
    ok, detail = _within(log_px - exact, se)
    assert ok, detail


def _two_mode_decoder():
    """J = 1, D = 1: p(x|z) = N(f(z), 0.05^2) with f(z) = 1 + tanh(50 (z - 1)) - tanh(z), which is 0 at
    z = 0 (a slope of 1) and near z = 1 (a slope of 50), and near -1 between them. For x near 0 the
    posterior has a main mode at 0 and a narrow one near 1 holding at most 2.4 % of its mass,
    with a valley between them 200 nats deep where p(x|z) barely changes."""
    model = VAE(D=1, H=2, J=1, decoder="gaussian", sigmoid_mean=False, dtype="float64", random_state=0)
    p = model.params
    p["dec.h.0.W"][...] = [[50.0, 1.0]]
    p["dec.h.0.b"][...] = [-50.0, 0.0]
    p["dec.mean.W"][...] = [[1.0], [-1.0]]
    p["dec.mean.b"][...] = [1.0]
    p["dec.log_var.W"][...] = 0.0
    p["dec.log_var.b"][...] = [2 * np.log(0.05)]
    return model


def test_chains_from_the_highest_prior_draw_find_the_main_mode_of_a_two_mode_posterior():
    """An HMC chain stays in the mode (or the flat valley) where it starts, and Appendix D's estimate
    from a chain confined to a region holding a fraction pi of the posterior's mass is log p(x) + log pi.
    Started at one prior draw, some chains here never reach the main mode and the mean estimate over
    100 datapoints falls nats below the exact value (the grid); started at the highest of 1000 prior
    draws (the default) every chain is in the main mode and the estimate is within 4 standard errors."""
    model = _two_mode_decoder()
    x = np.random.default_rng(0).normal(0.0, 0.05, size=(100, 1))
    exact = grid_log_likelihood(model, x, half_width=8.0, step=0.001)
    rng = np.random.default_rng(1)
    one_draw, _ = appendix_d_log_likelihood(model, x, rng, z0=rng.standard_normal((100, 1)))
    assert np.mean(one_draw - exact) < -1.0 and np.min(one_draw - exact) < -100.0
    log_px, se = appendix_d_log_likelihood(model, x, rng=2)
    ok, detail = _within(log_px - exact, se)
    assert ok, detail
    assert np.min(log_px - exact) > -2.0


def test_chain_starts_are_the_highest_of_the_prior_draws():
    model = VAE(D=6, H=4, J=2, random_state=1)
    x = model.generate(5, np.random.default_rng(0), sample=True)
    z0 = chain_starts(model, x, np.random.default_rng(3), n_draws=50, max_elements=100)   # 50 draws, a few at a time
    draws = np.random.default_rng(3).standard_normal((50, 2), dtype=model.dtype)           # the same draws
    log_pxz = log_joint(model, x, np.broadcast_to(draws[:, None, :], (50, 5, 2)).copy())    # (50, 5)
    np.testing.assert_array_equal(z0, draws[np.argmax(log_pxz, axis=0)])


def test_dataset_marginal_likelihood_is_the_mean_with_its_standard_error_and_serves_as_fits_evaluate_hook():
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(12, rng=4)
    log_px, _ = appendix_d_log_likelihood(lg.model, x, rng=5, L=20)
    mean, se = dataset_marginal_likelihood(lg.model, x, 5, estimator="B", L=20)
    assert mean == pytest.approx(np.mean(log_px), 1e-12)
    assert se == pytest.approx(np.std(log_px, ddof=1) / np.sqrt(12), 1e-12)

    history = fit(lg.model, Adagrad(0.01), x, x[:6], M=6, samples=24, eval_points=2, progress=False,
                  evaluate=lambda model, xs, rng, estimator: dataset_marginal_likelihood(model, xs, rng, estimator,
                                                                                         L=20, burn_in=30))
    assert len(history["test_elbo"]) == 2 and np.all(np.isfinite(history["train_elbo"] + history["test_elbo"]))
    assert abs(history["test_elbo"][-1] - np.mean(grid_log_likelihood(lg.model, x[:6], step=0.1))) < 0.5
    assert len(history["test_se"]) == 2 and all(0 < s < 2 for s in history["train_se"] + history["test_se"])


def test_bad_settings_get_one_clear_sentence():
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(3, rng=6)
    with pytest.raises(ValueError, match="L = 5 gives 2 samples to fit a full Gaussian in J = 2 dimensions"):
        appendix_d_log_likelihood(lg.model, x, 0, L=5)
    with pytest.raises(ValueError, match=r"L \(posterior samples.*\) must be an integer >= 4"):
        appendix_d_log_likelihood(lg.model, x, 0, L=3, density="diagonal")
    with pytest.raises(ValueError, match="density must be one of full, diagonal"):
        appendix_d_log_likelihood(lg.model, x, 0, density="kde")
    with pytest.raises(ValueError, match="use it for J <= 2, not J = 3"):
        grid_log_likelihood(VAE(D=5, H=3, J=3), x)
