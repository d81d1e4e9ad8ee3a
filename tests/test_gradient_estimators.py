"""The score-function and reparameterised gradient estimators of E_q[f(z)] (minivae.teaching.gradient_estimators)."""

import numpy as np

from minivae.gradcheck import TOLERANCE, check_function, numerical_gradient, relative_error
from minivae.teaching.gradient_estimators import QuadraticObjective, reparameterized_gradient, score_function_gradient

TOLERANCE_USED = TOLERANCE    # 1e-7 relative, float64 central differences


def _problem(seed=0, M=2, J=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(M, J)), rng.normal(scale=0.5, size=(M, J)), QuadraticObjective(rng.normal(size=J)), rng


def test_quadratic_objective_gradients_match_finite_differences():
    mu, log_var, obj, rng = _problem()
    z = rng.normal(size=(4, 2, 3))
    assert relative_error(obj.grad(z), numerical_gradient(lambda: obj(z).sum(), z)) < TOLERANCE_USED
    dmu, dlog_var = obj.expectation_grad(mu, log_var)
    errors = check_function(lambda: obj.expectation(mu, log_var).sum(), {"mu": dmu, "log_var": dlog_var},
                            {"mu": mu, "log_var": log_var})
    assert max(errors.values()) < TOLERANCE_USED, errors


def test_quadratic_expectation_matches_monte_carlo():
    mu, log_var, obj, rng = _problem(1)
    S = 200_000
    values = obj(mu + np.exp(0.5 * log_var) * rng.standard_normal((S, *mu.shape)))   # (S, M)
    se = values.std(axis=0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(values.mean(axis=0) - obj.expectation(mu, log_var)) < 5 * se)


def test_reparameterized_gradient_is_the_exact_gradient_for_fixed_eps():
    mu, log_var, obj, rng = _problem(2)
    eps = rng.standard_normal((5, *mu.shape))
    dmu, dlog_var = reparameterized_gradient(obj.grad, mu, log_var, eps)
    f = lambda: obj(mu + np.exp(0.5 * log_var) * eps).mean(axis=0).sum()   # noqa: E731
    errors = check_function(f, {"mu": dmu, "log_var": dlog_var}, {"mu": mu, "log_var": log_var})
    assert max(errors.values()) < TOLERANCE_USED, errors


def _unbiased(estimate, exact, S):
    """Mean of S single-sample estimates (S, M, J) within 5 standard errors of the exact gradient."""
    se = estimate.std(axis=0, ddof=1) / np.sqrt(S)
    return np.all(np.abs(estimate.mean(axis=0) - exact) < 5 * se)


def test_both_estimators_are_unbiased_and_the_reparameterised_one_has_lower_variance():
    mu, log_var, obj, rng = _problem(3, M=1)
    S = 100_000
    mus, log_vars = np.repeat(mu, S, axis=0), np.repeat(log_var, S, axis=0)   # S independent copies, L = 1
    eps = rng.standard_normal((1, S, mu.shape[1]))
    exact_mu, exact_lv = obj.expectation_grad(mu, log_var)
    sf = score_function_gradient(obj, mus, log_vars, eps)
    rp = reparameterized_gradient(obj.grad, mus, log_vars, eps)
    for got, exact in zip(sf + rp, (exact_mu, exact_lv) * 2):
        assert _unbiased(got, exact, S)
    assert np.all(rp[0].var(axis=0) < sf[0].var(axis=0)) and np.all(rp[1].var(axis=0) < sf[1].var(axis=0))


def test_score_function_baseline_keeps_the_mean_and_lowers_the_variance():
    mu, log_var, obj, rng = _problem(4, M=1)
    S = 100_000
    mus, log_vars = np.repeat(mu, S, axis=0), np.repeat(log_var, S, axis=0)
    eps = rng.standard_normal((1, S, mu.shape[1]))
    b = float(obj.expectation(mu, log_var)[0])            # the mean of f: a good constant baseline
    plain = score_function_gradient(obj, mus, log_vars, eps)
    based = score_function_gradient(obj, mus, log_vars, eps, baseline=b)
    exact = obj.expectation_grad(mu, log_var)
    assert _unbiased(based[0], exact[0], S) and _unbiased(based[1], exact[1], S)
    assert based[0].var(axis=0).sum() < plain[0].var(axis=0).sum()


def test_l_samples_average_the_single_sample_estimates():
    mu, log_var, obj, rng = _problem(5)
    eps = rng.standard_normal((4, *mu.shape))
    whole = score_function_gradient(obj, mu, log_var, eps)
    parts = [score_function_gradient(obj, mu, log_var, eps[l:l + 1]) for l in range(4)]
    np.testing.assert_allclose(whole[0], np.mean([p[0] for p in parts], axis=0), rtol=1e-12)
    np.testing.assert_allclose(whole[1], np.mean([p[1] for p in parts], axis=0), rtol=1e-12)
