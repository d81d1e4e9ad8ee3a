"""The EM view of the bound on the linear-Gaussian model (minivae.teaching.em), in closed form."""

import numpy as np

from minivae import estimator as est
from minivae.gradcheck import numerical_gradient
from minivae.teaching import em
from minivae.teaching.linear_gaussian import linear_gaussian


def _setup(seed=0, N=50):
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(N, rng=seed)
    rng = np.random.default_rng(seed + 1)
    mu = rng.normal(size=(N, 2))
    log_var = rng.normal(scale=0.5, size=(N, 2))
    return lg, x, mu, log_var


def test_expected_log_likelihood_matches_monte_carlo():
    lg, x, mu, log_var = _setup(N=3)
    S = 200_000
    z = est.reparameterize(mu, log_var, np.random.default_rng(2).standard_normal((S, 3, 2)))   # (S, N, J)
    ll = est.gaussian_log_likelihood(x, z @ lg.A + lg.c, np.full(x.shape, np.log(lg.s2)))       # (S, N)
    se = ll.std(axis=0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(ll.mean(axis=0) - em.expected_log_likelihood(lg, x, mu, log_var)) < 5 * se)


def test_log_px_is_the_bound_plus_the_kl_from_q_to_the_posterior():
    lg, x, mu, log_var = _setup()
    kl_q_post, kl_post_q = em.posterior_gap(lg, x, mu, log_var)
    gap = lg.log_px(x) - em.elbo(lg, x, mu, log_var)
    np.testing.assert_allclose(gap, kl_q_post, rtol=0, atol=1e-10)
    assert np.all(np.abs(gap - kl_post_q) > 1e-3)       # the other direction is not the gap


def test_the_exact_posterior_closes_the_gap():
    lg, x, _, _ = _setup()
    np.testing.assert_allclose(em.elbo(lg, x, *lg.posterior(x)), lg.log_px(x), rtol=0, atol=1e-10)


def test_m_step_maximises_the_expected_log_likelihood_and_log_px_does_not_fall():
    lg, x, _, _ = _setup(N=200)
    lg.c = lg.c + 0.5                                     # start away from the maximum likelihood decoder
    q = lg.posterior(x)                                   # E-step
    new = em.m_step(lg, x, *q)
    params = {"A": new.A, "c": new.c, "s2": np.array([new.s2])}

    def Q():
        return em.expected_log_likelihood(type(new)(new.model, params["A"], params["c"], float(params["s2"][0])),
                                          x, *q).sum()
    for name, p in params.items():                        # a stationary point: every partial derivative ~ 0
        assert np.max(np.abs(numerical_gradient(Q, p))) < 1e-5 * len(x), name
    assert Q() > em.expected_log_likelihood(lg, x, *q).sum()
    assert new.log_px(x).sum() >= lg.log_px(x).sum()
