"""The whole model: end-to-end gradient checks over every parameter, for each decoder,
estimator A and B, L = 1 and 3 (float64, relative error <= 1e-7), on the readable
code; then what the numbers mean, on models whose answers are known. (The parameter
prior is the optimiser's weight decay; its gradient is checked in test_estimator.py.)"""

import numpy as np
import pytest

from minivae import estimator as est
from minivae.gradcheck import TOLERANCE, check_model, check_model_direction
from minivae.model import VAE

DECODERS = [("bernoulli", True), ("gaussian", True), ("gaussian", False)]


def _small(decoder, sigmoid_mean, seed=0):
    # Glorot init: the paper's N(0, 0.01^2) makes a tiny model nearly linear and its
    # gradients tiny, which would make the check less telling.
    return VAE(D=6, H=5, J=3, decoder=decoder, sigmoid_mean=sigmoid_mean, init="glorot", random_state=seed)


@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=["bernoulli", "gauss-sigmoid", "gauss-linear"])
@pytest.mark.parametrize("estimator", ["A", "B"])
@pytest.mark.parametrize("L", [1, 3])
def test_end_to_end_gradient(decoder, sigmoid_mean, estimator, L):
    model = _small(decoder, sigmoid_mean)
    rng = np.random.default_rng(1)
    x = rng.random((4, 6))
    eps = model.sample_eps(4, L, rng)
    errors = check_model(model, x, eps, estimator)
    assert set(errors) == set(model.params)          # every parameter was checked
    assert max(errors.values()) < TOLERANCE, errors


def test_deeper_and_relu_models_are_checked_too():
    model = VAE(D=5, H=(4, 3), J=2, activation="softplus", init="glorot", random_state=3)
    rng = np.random.default_rng(4)
    x = (rng.random((3, 5)) < 0.5).astype(float)
    assert max(check_model(model, x, model.sample_eps(3, 2, rng), "A").values()) < TOLERANCE


def test_full_size_model_along_a_random_direction():
    """The paper's MNIST model (784-500-20), every parameter at once, two forward passes."""
    model = VAE(D=784, H=500, J=20, random_state=0)
    rng = np.random.default_rng(5)
    x = (rng.random((8, 784)) < 0.2).astype(float)
    # Tolerance 1e-6 here: the loss is ~500 nats, so rounding in the two large
    # forward passes sets the floor near 1e-8; a wrong gradient gives >= 1e-2.
    assert check_model_direction(model, x, model.sample_eps(8, 1, rng), "B", rng=6) < 1e-6


def test_gradient_uses_the_forward_eps():
    """A fresh eps in the backward pass would make two calls with one eps disagree."""
    model = _small("bernoulli", True)
    rng = np.random.default_rng(7)
    x, eps = rng.random((4, 6)), model.sample_eps(4, 2, rng)
    model.loss_and_grads(x, eps)
    g1 = {k: v.copy() for k, v in model.grads.items()}
    model.loss_and_grads(x, eps)
    for k in g1:
        np.testing.assert_array_equal(g1[k], model.grads[k])


def test_estimators_a_and_b_share_an_expectation_and_b_has_lower_variance():
    model = VAE(D=6, H=5, J=3, init="glorot", random_state=8)
    rng = np.random.default_rng(9)
    x = (rng.random((1, 6)) < 0.5).astype(float)
    eps = model.sample_eps(1, 100_000, rng)                     # (L, 1, J)
    w = model.log_importance_weights(x, eps)[:, 0]               # estimator A, one sample each
    mu, log_var = model.encode(x)
    z = est.reparameterize(mu, log_var, eps)
    log_px = model.decoder.log_likelihood(x, tuple(o.reshape(-1, 1, 6) for o in model.decoder.forward(z[:, 0])))[:, 0]
    b = log_px - est.kl_standard_normal(mu, log_var)[0]          # estimator B, one sample each
    diff = w - b                                                  # paired: same eps
    assert abs(diff.mean()) < 5 * diff.std() / np.sqrt(len(diff)), (w.mean(), b.mean())
    assert b.var() < w.var()
    # and the batch functions agree with these per-sample values
    np.testing.assert_allclose(model.elbo(x, eps[:10], "A"), [w[:10].mean()], rtol=1e-12)
    np.testing.assert_allclose(model.elbo(x, eps[:10], "B"), [b[:10].mean()], rtol=1e-12)


# --- a linear-Gaussian model: log p(x) and p(z|x) in closed form (minivae.teaching.linear_gaussian) ----------

def _linear_gaussian(D=5, J=2, noise=0.5, seed=10):
    """(model, x, log_px, posterior) of :func:`minivae.teaching.linear_gaussian.linear_gaussian`, with 3 data points."""
    from minivae.teaching.linear_gaussian import linear_gaussian
    lg = linear_gaussian(D, J, noise, seed=seed)
    x = np.random.default_rng(seed + 100).multivariate_normal(lg.c, lg.cov_x(), size=3)
    return lg.model, x, lg.log_px, lg.posterior


def test_elbo_is_log_px_when_q_is_the_true_posterior():
    model, x, log_px, posterior = _linear_gaussian()
    mu, log_var = model.encode(x)
    np.testing.assert_allclose(np.c_[mu, log_var], np.c_[posterior(x)], rtol=1e-12)
    eps = model.sample_eps(3, 50, np.random.default_rng(11))
    # with q = p(z|x), log p(x, z) - log q(z|x) = log p(x) for every z: zero variance
    w = model.log_importance_weights(x, eps)
    np.testing.assert_allclose(w, np.broadcast_to(log_px(x), w.shape), rtol=1e-10)
    np.testing.assert_allclose(model.elbo(x, eps, "A"), log_px(x), rtol=1e-10)


def test_elbo_plus_kl_to_posterior_is_log_px():
    model, x, log_px, posterior = _linear_gaussian()
    model.params["enc.mu.b"] += np.array([0.4, -0.3])            # q is no longer the posterior
    model.params["enc.log_var.b"] += np.array([0.5, -0.2])
    mu_q, lv_q = model.encode(x)
    mu_p, lv_p = posterior(x)
    kl_q_post = 0.5 * np.sum(lv_p - lv_q + (np.exp(lv_q) + (mu_q - mu_p) ** 2) / np.exp(lv_p) - 1.0, axis=1)
    assert np.all(kl_q_post > 0.01)
    eps = model.sample_eps(3, 200_000, np.random.default_rng(12))
    w = model.log_importance_weights(x, eps)                      # (L, M)
    elbo, se = w.mean(0), w.std(0, ddof=1) / np.sqrt(w.shape[0])
    assert np.all(np.abs(elbo + kl_q_post - log_px(x)) < 5 * se), (elbo + kl_q_post, log_px(x), se)
    assert np.all(elbo < log_px(x))


# --- using the model --------------------------------------------------------------

def test_generate_and_decode_shapes_and_ranges():
    model = VAE(D=6, H=5, J=3, random_state=0)
    rng = np.random.default_rng(13)
    means = model.generate(7, rng)
    assert means.shape == (7, 6) and np.all((means > 0) & (means < 1))
    samples = model.generate(7, rng, sample=True)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    assert model.decode(np.zeros((2, 3))).shape == (2, 6)
    g = VAE(D=6, H=5, J=3, decoder="gaussian", random_state=0).generate(4, rng)
    assert np.all((g > 0) & (g < 1))                              # sigmoid mean


def test_float32_model_stays_float32():
    model = VAE(D=6, H=5, J=3, dtype="float32", random_state=0)
    rng = np.random.default_rng(14)
    x = rng.random((4, 6)).astype(np.float32)
    loss, elbo = model.loss_and_grads(x, model.sample_eps(4, 1, rng))
    assert np.isfinite(loss) and elbo.dtype == np.float32
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 for g in model.grads.values())


def test_phi_and_theta_split_the_parameters():
    model = VAE(D=6, H=5, J=3, random_state=0)
    assert set(model.phi) | set(model.theta) == set(model.params)
    assert not set(model.phi) & set(model.theta)
    assert all(k.startswith("enc.") for k in model.phi) and all(k.startswith("dec.") for k in model.theta)


# --- bad input: one clear error each -------------------------------------------------

@pytest.fixture
def model():
    return VAE(D=6, H=5, J=3, random_state=0)


@pytest.mark.parametrize("x,message", [
    (np.zeros((4, 2, 3)), "must be 2-D"),
    (np.zeros((4, 5)), "has 5 columns but the model expects D = 6"),
    (np.zeros((4, 6), dtype=np.uint8), "must hold floats"),
    (np.full((4, 6), np.nan), "NaN or infinite"),
    (np.full((4, 6), np.inf), "NaN or infinite"),
    (np.full((4, 6), 255.0), "pixels in \\[0, 1\\]"),
    (np.full((4, 6), -0.1), "pixels in \\[0, 1\\]"),
    ([[0.0] * 6] * 4, "must be a numpy array"),
])
def test_bad_data_is_refused(model, x, message):
    with pytest.raises((ValueError, TypeError), match=message):
        model.loss_and_grads(x, model.sample_eps(4))


def test_gaussian_decoder_accepts_values_outside_the_unit_interval():
    model = VAE(D=6, H=5, J=3, decoder="gaussian", sigmoid_mean=False, random_state=0)
    loss, _ = model.loss_and_grads(np.full((4, 6), 3.0), model.sample_eps(4))
    assert np.isfinite(loss)


@pytest.mark.parametrize("shape", [(4, 3), (1, 5, 3), (1, 4, 2), (0, 4, 3)])
def test_eps_of_the_wrong_shape_is_refused(model, shape):
    with pytest.raises(ValueError, match="eps must have shape"):
        model.loss_and_grads(np.zeros((4, 6)), np.zeros(shape))


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="latent size J must be at least 1"):
        VAE(D=6, H=5, J=0)
    with pytest.raises(ValueError, match="decoder must be"):
        VAE(D=6, H=5, J=2, decoder="poisson")
    with pytest.raises(ValueError, match="dtype must be"):
        VAE(D=6, H=5, J=2, dtype="float16")
    with pytest.raises(ValueError, match="hidden layer sizes"):
        VAE(D=6, H=0, J=2)
    with pytest.raises(ValueError, match="estimator must be"):
        VAE(D=6, H=5, J=2).loss_and_grads(np.zeros((1, 6)), np.zeros((1, 1, 2)), estimator="C")
