"""Hybrid Monte Carlo on p(z|x): the gradient in z by finite differences (float64, relative error
<= 1e-7), the leapfrog integrator's reversibility and second order, and the meaning: on the
linear-Gaussian model the chains' means and covariance are the exact posterior's, within
standard errors that account for the chains' autocorrelation, at the tuned 90 % acceptance."""

import numpy as np
import pytest

from minivae import estimator as est
from minivae.baselines import hmc
from minivae.gradcheck import TOLERANCE, check_function
from minivae.model import VAE
from minivae.teaching.linear_gaussian import linear_gaussian

DECODERS = {"bernoulli": dict(decoder="bernoulli"),
            "gaussian-sigmoid": dict(decoder="gaussian", sigmoid_mean=True),
            "gaussian-linear": dict(decoder="gaussian", sigmoid_mean=False)}


def _model(kind, seed=0):
    """A small VAE with weights large enough that log p(x|z) bends in z (the paper's init is nearly flat)."""
    model = VAE(D=6, H=5, J=3, init="glorot", random_state=seed, **DECODERS[kind])
    rng = np.random.default_rng(seed + 1)
    x = (rng.random((4, 6)) < 0.5).astype(float) if kind == "bernoulli" else rng.random((4, 6))
    return model, x


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("lead", [(), (3,)], ids=["z(M,J)", "z(L,M,J)"])
def test_log_joint_gradient_in_z_matches_finite_differences(kind, lead):
    """grad_z [log p(z) + log p(x|z)] from the decoder's backward, against central differences.

    The scalar is sum(w * log p(x, z)) with a random weight per datapoint (and per sample), so a
    gradient that mixed up datapoints would fail. Tolerance: relative error <= TOLERANCE = 1e-7.
    """
    model, x = _model(kind)
    rng = np.random.default_rng(2)
    z = rng.standard_normal(lead + (4, 3))
    w = rng.standard_normal(lead + (4,))
    grad = hmc.log_joint_grad_z(model, x, z)
    err = check_function(lambda: float(np.sum(w * hmc.log_joint(model, x, z))), {"z": w[..., None] * grad}, {"z": z})
    assert err["z"] < TOLERANCE, err


@pytest.mark.parametrize("kind", DECODERS)
def test_backward_z_is_the_decoders_backward_without_parameter_gradients(kind):
    """HMC's gradient in z comes from ``decoder.backward_z``: the dz of ``decoder.backward``, bit for
    bit, with the parameter gradients left as they were."""
    model, _ = _model(kind)
    rng = np.random.default_rng(4)
    out = model.decoder.forward(rng.standard_normal((4, 3)))
    dout = tuple(rng.standard_normal(o.shape) for o in out)
    for g in model.decoder.grads.values():
        g[...] = 7.0
    dz = model.decoder.backward_z(dout)
    assert all(np.all(g == 7.0) for g in model.decoder.grads.values())
    np.testing.assert_array_equal(dz, model.decoder.backward(dout))


def test_log_joint_is_the_joint_the_estimators_use_and_gives_the_exact_evidence():
    """Two known answers. On any model, log p(x, z) equals log w + log q(z|x) for the importance
    weights w of minivae.model (the same joint). On the linear-Gaussian model,
    log p(x, z) - log p(z|x) is log p(x) for every z (Bayes' rule), with the exact posterior."""
    model, x = _model("gaussian-sigmoid")
    eps = model.sample_eps(4, 2, rng=3)
    mu, log_var = model.encode(x)
    z = est.reparameterize(mu, log_var, eps)
    np.testing.assert_allclose(hmc.log_joint(model, x, z),
                               model.log_importance_weights(x, eps) + est.log_diag_gaussian(z, mu, log_var),
                               rtol=1e-12)

    lg = linear_gaussian(D=5, J=2)
    xs = lg.sample(6, rng=4)
    mu, log_var = lg.posterior(xs)
    z = np.random.default_rng(5).standard_normal((7, 6, 2)) * 2.0          # anywhere, not only near the mode
    evidence = hmc.log_joint(lg.model, xs, z) - est.log_diag_gaussian(z, mu, log_var)
    np.testing.assert_allclose(evidence, np.broadcast_to(lg.log_px(xs), (7, 6)), rtol=1e-12)


def test_leapfrog_is_reversible_and_its_energy_error_is_second_order():
    model, x = _model("bernoulli")
    rng = np.random.default_rng(6)
    z0, p0 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))

    z1, p1, _, _ = hmc.leapfrog(model, x, z0, p0, 0.1, 7)
    z2, p2, _, _ = hmc.leapfrog(model, x, z1, -p1, 0.1, 7)              # negate the momentum, run again
    np.testing.assert_allclose(z2, z0, atol=1e-12)
    np.testing.assert_allclose(-p2, p0, atol=1e-12)

    def energy_error(eps, n):
        z, p, log_pxz, _ = hmc.leapfrog(model, x, z0, p0, eps, n)
        h0 = -hmc.log_joint(model, x, z0) + 0.5 * np.sum(p0 ** 2, axis=1)
        return np.abs(-log_pxz + 0.5 * np.sum(p ** 2, axis=1) - h0)     # (M,)

    ratio = energy_error(0.02, 10) / energy_error(0.01, 20)              # the same trajectory time 0.2
    assert np.all((ratio > 3.5) & (ratio < 4.5)), ratio                  # halving eps quarters the error


def test_a_step_far_too_large_is_rejected_and_leaves_z_in_place():
    """With eps = 50 the trajectory flies off (the energy explodes): every proposal is rejected."""
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(8, rng=7)
    z = lg.posterior(x)[0]
    z_new, accepted = hmc.hmc_step(lg.model, x, z, 50.0, 10, np.random.default_rng(8))
    assert accepted.dtype == bool and accepted.shape == (8,) and not accepted.any()
    np.testing.assert_array_equal(z_new, z)


def test_hmc_samples_the_exact_posterior_of_the_linear_gaussian_model():
    """4 datapoints, each given 50 independent chains (200 in all) started from the prior;
    100 burn-in transitions tune each chain's step size, then 200 transitions of 10 leapfrog
    steps (the E-step's) are kept.

    Standard errors that account for autocorrelation: each chain's time average is one of 50
    independent values per datapoint (batch means, one batch per chain), so the standard error
    of a posterior mean is their spread / sqrt(50); for the covariance, each chain's average of
    (z - mu)(z - mu)^T around the exact mean is one of 200 independent values. Criterion:
    every error below 4 standard errors (11 checks; a correct sampler fails one about once in
    1500 seeds). The kept chains' acceptance must be within 0.03 of the 0.9 target.
    """
    lg = linear_gaussian(D=5, J=2)
    rng = np.random.default_rng(0)
    x = np.repeat(lg.sample(4, rng), 50, axis=0)                         # (200, 5)
    z0 = rng.standard_normal((200, 2))
    samples, stats = hmc.hmc_sample(lg.model, x, z0, 200, 10, rng, step_size=0.1, burn_in=100,
                                    return_stats=True)
    assert samples.shape == (200, 200, 2)
    mu, log_var = lg.posterior(x)

    chain_means = samples.mean(axis=0).reshape(4, 50, 2)                 # (datapoint, chain, J)
    err = chain_means.mean(axis=1) - mu[::50]
    se = chain_means.std(axis=1, ddof=1) / np.sqrt(50)
    assert np.all(np.abs(err) < 4 * se), err / se

    d = samples - mu                                                     # (n, 200, J)
    chain_cov = np.einsum("nmi,nmj->mij", d, d) / len(samples)          # (200, J, J)
    err = chain_cov.mean(axis=0) - np.diag(lg.post_var)
    se = chain_cov.std(axis=0, ddof=1) / np.sqrt(200)
    assert np.all(np.abs(err) < 4 * se), err / se

    assert abs(stats["acceptance"].mean() - 0.9) < 0.03, stats["acceptance"].mean()
    np.testing.assert_allclose(stats["log_pxz"], hmc.log_joint(lg.model, x, samples), rtol=1e-12)


@pytest.mark.parametrize("start", [0.01, 3.0])
def test_the_tuned_step_size_reaches_the_target_from_a_bad_start(start):
    """From a step 35 times too small or 9 times too large, 100 burn-in transitions find ~0.9."""
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(100, rng=1)
    samples, stats = hmc.hmc_sample(lg.model, x, np.zeros((100, 2)), 50, 10, 2, step_size=start, return_stats=True)
    assert abs(stats["acceptance"].mean() - 0.9) < 0.03, stats["acceptance"].mean()
    assert 0.2 < np.median(stats["step_size"]) < 0.5                     # about 0.35 on this model


def test_without_adaptation_the_step_size_stays_as_given():
    lg = linear_gaussian(D=5, J=2)
    x = lg.sample(3, rng=1)
    _, stats = hmc.hmc_sample(lg.model, x, np.zeros((3, 2)), 5, 4, 2, step_size=np.array([0.1, 0.2, 0.3]),
                              adapt=False, burn_in=3, return_stats=True)
    np.testing.assert_array_equal(stats["step_size"], [0.1, 0.2, 0.3])


def test_effective_sample_size_of_known_series():
    """AR(1) with coefficient r has tau = (1 + r) / (1 - r): ESS n/3 for r = 0.5; iid: about n."""
    rng = np.random.default_rng(9)
    n, r = 20000, 0.5
    e = rng.standard_normal((n, 3))
    a = np.empty_like(e)
    a[0] = e[0] / np.sqrt(1 - r * r)
    for t in range(1, n):
        a[t] = r * a[t - 1] + e[t]
    np.testing.assert_allclose(hmc.effective_sample_size(a), n / 3, rtol=0.1)
    np.testing.assert_allclose(hmc.effective_sample_size(e), n, rtol=0.1)
    assert hmc.effective_sample_size(np.ones(50)) == 50


def test_wrong_shapes_and_starting_points_get_one_clear_sentence():
    model, x = _model("bernoulli")
    with pytest.raises(ValueError, match=r"z must have shape \(M, J\) or \(L, M, J\) with M = 4"):
        hmc.log_joint(model, x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="z contains NaN"):
        hmc.log_joint_grad_z(model, x, np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match=r"step_size must be one number or one per datapoint, shape \(4,\)"):
        hmc.hmc_step(model, x, np.zeros((4, 3)), np.ones(3), 5, 0)
    with pytest.raises(ValueError, match="n_leapfrog must be a positive integer"):
        hmc.hmc_step(model, x, np.zeros((4, 3)), 0.1, 0, 0)
    with pytest.raises(ValueError, match=r"target_acceptance must be a number in \(0, 1\)"):
        hmc.hmc_sample(model, x, np.zeros((4, 3)), 5, 4, 0, target_acceptance=90)
