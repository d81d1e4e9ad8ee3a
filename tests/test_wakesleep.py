"""Wake-sleep: both phases' gradients by finite differences, what each phase means, the step's
bookkeeping (two optimisers, two parameter groups, exact resume), and AEVB beating it on MNIST."""

import json
import shutil

import numpy as np
import pytest

from fake_data import fake_mnist_splits
from minivae.baselines.wakesleep import WakeSleep, dream, sleep_loss_and_grads, wake_loss_and_grads
from minivae.checkpoint import CheckpointMismatch, load_checkpoint
from minivae.gradcheck import TOLERANCE, check_function, relative_error
from minivae.model import VAE
from minivae.optim import SGD, Adagrad, Adam
from minivae.steps import AEVB
from minivae.teaching.linear_gaussian import kl_diag_gaussians, linear_gaussian
from minivae.train import fit

DECODERS = [("bernoulli", True), ("gaussian", True), ("gaussian", False)]
DECODER_IDS = ["bernoulli", "gaussian-sigmoid-mean", "gaussian-linear-mean"]


def _small(decoder, sigmoid_mean, seed=0):
    """A float64 model of a few hundred parameters, glorot weights so every gradient is sizeable."""
    return VAE(D=6, H=5, J=3, decoder=decoder, sigmoid_mean=sigmoid_mean, init="glorot", random_state=seed)


def _data(model, M=4, seed=1):
    rng = np.random.default_rng(seed)
    if model.decoder.kind == "bernoulli":
        return (rng.random((M, model.D)) < 0.5).astype(float), rng
    return rng.random((M, model.D)), rng


# --- finite differences, float64, relative error <= TOLERANCE = 1e-7 --------------------------

@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_wake_gradient_matches_finite_differences(decoder, sigmoid_mean):
    """Every theta gradient of the wake loss, L = 2 samples per datapoint; z is held by eps fixed."""
    model = _small(decoder, sigmoid_mean)
    x, rng = _data(model)
    eps = model.sample_eps(len(x), 2, rng)
    wake_loss_and_grads(model, x, eps)
    analytic = {k: g.copy() for k, g in model.decoder.grads.items()}
    errors = check_function(lambda: wake_loss_and_grads(model, x, eps), analytic, model.theta)
    assert set(errors) == set(model.theta) and max(errors.values()) <= TOLERANCE, errors
    assert min(np.abs(g).max() for g in analytic.values()) > 1e-4     # every gradient is really checked


@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_sleep_gradient_matches_finite_differences(decoder, sigmoid_mean):
    """Every phi gradient of the sleep loss on a fixed dream (z, x) drawn from the model."""
    model = _small(decoder, sigmoid_mean)
    z, x_dream = dream(model, 5, np.random.default_rng(2))
    sleep_loss_and_grads(model, z, x_dream)
    analytic = {k: g.copy() for k, g in model.encoder.grads.items()}
    errors = check_function(lambda: sleep_loss_and_grads(model, z, x_dream), analytic, model.phi)
    assert set(errors) == set(model.phi) and max(errors.values()) <= TOLERANCE, errors
    assert min(np.abs(g).max() for g in analytic.values()) > 1e-4


def test_each_phase_fills_only_its_own_group():
    model = _small("bernoulli", True)
    x, rng = _data(model)
    for g in model.grads.values():
        g[...] = 7.0
    wake_loss_and_grads(model, x, model.sample_eps(len(x), 1, rng))
    assert all((g == 7.0).all() for g in model.encoder.grads.values())          # no gradient through z to phi
    assert all(not (g == 7.0).all() for g in model.decoder.grads.values())
    for g in model.grads.values():
        g[...] = 7.0
    sleep_loss_and_grads(model, *dream(model, 4, rng))
    assert all((g == 7.0).all() for g in model.decoder.grads.values())
    assert all(not (g == 7.0).all() for g in model.encoder.grads.values())


# --- what the phases mean --------------------------------------------------------------------

@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_wake_gradient_is_the_elbo_gradient_in_theta(decoder, sigmoid_mean):
    """Known answer: in theta, -ELBO (estimator B) and the wake loss differ by -KL and -log p(z),
    neither of which depends on theta, so at the same eps their theta gradients are equal."""
    model = _small(decoder, sigmoid_mean)
    x, rng = _data(model)
    eps = model.sample_eps(len(x), 3, rng)
    model.loss_and_grads(x, eps, "B")
    aevb = {k: model.grads[k].copy() for k in model.theta}
    wake_loss_and_grads(model, x, eps)
    for k in model.theta:
        assert relative_error(model.decoder.grads[k], aevb[k]) < 1e-12, k


def test_wake_loss_is_minus_log_joint_at_the_encoders_sample():
    """The wake loss is -[log p(x|z) + log p(z)] averaged: rebuild it from estimator A's pieces."""
    model = _small("gaussian", True)
    x, rng = _data(model)
    eps = model.sample_eps(len(x), 2, rng)
    mu, log_var = model.encode(x)
    z = mu + np.exp(0.5 * log_var) * eps                                  # (L, M, J)
    log_w = model.log_importance_weights(x, eps)                          # log p(x|z) + log p(z) - log q(z|x)
    log_q = -0.5 * np.sum(np.log(2 * np.pi) + log_var + (z - mu) ** 2 / np.exp(log_var), axis=-1)
    expected = -np.mean(log_w + log_q)
    assert abs(wake_loss_and_grads(model, x, eps) - expected) < 1e-12 * abs(expected)


def test_dreams_follow_the_generative_model():
    """On the linear-Gaussian model, dreamed x has the marginal's mean c and covariance A^T A + s^2 I:
    checked within 4 standard errors of the sample mean and of each covariance entry."""
    lg = linear_gaussian(D=4, J=2)
    n = 40000
    z, x = dream(lg.model, n, np.random.default_rng(5))
    assert z.shape == (n, 2) and x.shape == (n, 4)
    cov = lg.cov_x()
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(axis=0) - lg.c) < 4 * se_mean)
    d = x - lg.c
    emp = d.T @ d / n
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)   # Var of a Gaussian product moment
    assert np.all(np.abs(emp - cov) < 4 * se_cov), (emp, cov)


def test_bernoulli_dreams_are_binary_draws():
    model = _small("bernoulli", True)
    _, x = dream(model, 2000, np.random.default_rng(3))
    assert set(np.unique(x)) <= {0.0, 1.0} and 0.05 < x.mean() < 0.95


def test_sleep_phase_moves_q_to_the_exact_posterior():
    """Linear-Gaussian model, decoder fixed: from an encoder far off, sleep steps alone bring
    q(z|x) to p(z|x) (the sleep objective's optimum, which the linear encoder can represent).

    The mean KL(p(z|x) || q(z|x)) over data from the model starts above 1 nat and must end
    below 0.01 nats (Adam, 3000 steps of 200 dreams; the remaining KL is SGD noise)."""
    lg = linear_gaussian(D=5, J=2)
    model = lg.model
    x_check = lg.sample(2000, np.random.default_rng(0))
    mu_true, lv_true = lg.posterior(x_check)

    def kl_to_posterior():
        mu, lv = model.encode(x_check)
        return float(np.mean(kl_diag_gaussians(mu_true, lv_true, mu, lv)))

    rng = np.random.default_rng(1)
    for p in model.phi.values():
        p[...] = rng.normal(0.0, 0.7, p.shape)
    before = kl_to_posterior()
    theta0 = {k: p.copy() for k, p in model.theta.items()}
    opt = Adam(0.01)
    for _ in range(3000):
        sleep_loss_and_grads(model, *dream(model, 200, rng))
        opt.step(model.phi, model.encoder.grads)
    after = kl_to_posterior()
    assert before > 1.0 and after < 0.01, (before, after)
    assert all(np.array_equal(theta0[k], model.theta[k]) for k in theta0)      # the decoder never moved


# --- the training step ---------------------------------------------------------------------------

def test_a_step_is_a_wake_update_of_theta_and_a_sleep_update_of_phi():
    """With SGD, one step equals the two phases worked out from the same draws, in the order
    the step makes them: eps, then the dream, both at the starting parameters."""
    model = _small("bernoulli", True)
    x, _ = _data(model, M=6)
    start = {k: p.copy() for k, p in model.params.items()}
    ref = _small("bernoulli", True)
    rng = np.random.default_rng(9)
    wake_loss_and_grads(ref, x, ref.sample_eps(6, 1, rng))
    dtheta = {k: g.copy() for k, g in ref.decoder.grads.items()}
    sleep_loss_and_grads(ref, *dream(ref, 6, rng))
    dphi = {k: g.copy() for k, g in ref.encoder.grads.items()}

    step = WakeSleep(model, SGD(0.3), SGD(0.1))
    result = step(x, np.arange(6), np.random.default_rng(9))
    assert result.elbo is None and np.isfinite(result.loss)
    for k in model.theta:
        np.testing.assert_allclose(model.params[k], start[k] - 0.3 * dtheta[k], rtol=0, atol=1e-15)
    for k in model.phi:
        np.testing.assert_allclose(model.params[k], start[k] - 0.1 * dphi[k], rtol=0, atol=1e-15)
    assert step.opt_theta.t == 1 and step.opt_phi.t == 1
    assert set(step.opt_theta.state) == set() and set(step.optimizers()) == {"theta", "phi"}


def test_adagrad_state_is_kept_per_group():
    model = _small("gaussian", True)
    step = WakeSleep(model, Adagrad(0.01), Adagrad(0.01), weight_decay=0.01)
    x, _ = _data(model)
    step(x, np.arange(len(x)), np.random.default_rng(0))
    assert set(step.opt_theta.state) == set(model.theta) and set(step.opt_phi.state) == set(model.phi)
    d = step.describe()
    assert d["algorithm"] == "wake-sleep" and set(d["optimizers"]) == {"theta", "phi"}
    assert d["optimizers"]["theta"] == {"type": "Adagrad", "lr": 0.01, "eps": 1e-10} and d["weight_decay"] == 0.01
    json.dumps(d)


def test_a_non_finite_loss_changes_nothing():
    model = _small("bernoulli", True)
    model.params["dec.logits.b"][0] = np.nan
    start = {k: p.copy() for k, p in model.params.items()}
    step = WakeSleep(model, Adagrad(0.1), Adagrad(0.1))
    x, _ = _data(model)
    with np.errstate(invalid="ignore"):                                        # NaN logits, on purpose
        assert not np.isfinite(step(x, np.arange(len(x)), np.random.default_rng(0)).loss)
    for k in start:
        np.testing.assert_array_equal(model.params[k], start[k])
    assert step.opt_theta.t == 0 and step.opt_phi.t == 0


def test_bad_arguments():
    model = _small("bernoulli", True)
    opt = Adagrad(0.1)
    with pytest.raises(ValueError, match="two optimiser objects"):
        WakeSleep(model, opt, opt)
    with pytest.raises(TypeError, match="opt_phi must be a minivae.optim.Optimizer"):
        WakeSleep(model, opt, 0.1)
    with pytest.raises(ValueError, match="positive integer"):
        WakeSleep(model, Adagrad(0.1), Adagrad(0.1), L=0)
    z, x = dream(model, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"the dream must be z of shape \(M, J\) = \(M, 3\).*got z \(3, 3\)"):
        sleep_loss_and_grads(model, z[:3], x)


def _toy(seed=0, n=120, D=12):
    rng = np.random.default_rng(seed)
    return rng.random((n, D)), rng.random((40, D))


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_resume_from_every_checkpoint_equals_the_uninterrupted_run(tmp_path, decoder):
    """tests/test_train.py's pattern: checkpoints every 0.25 epoch; resuming from each one ends
    bit for bit where the uninterrupted run ends (parameters, both optimisers, history)."""
    x, xt = _toy()
    kw = dict(M=10, seed=3, eval_points=6, progress=False, checkpoint_every=0.25)

    def make(seed):
        model = VAE(12, 6, 2, decoder=decoder, random_state=seed)
        return model, WakeSleep(model, Adagrad(0.05), Adagrad(0.05), weight_decay=1 / len(x))

    saved = []

    def keep(path):
        saved.append(tmp_path / f"ck{len(saved):02d}.npz")
        shutil.copy(path, saved[-1])

    whole, step = make(1)
    ck = tmp_path / "whole.npz"
    fit(whole, step, x, xt, samples=370, checkpoint=ck, on_checkpoint=keep, **kw)
    final = load_checkpoint(ck)
    assert len(saved) == 13 and {k.split("/")[0] for k in final["step_state"]} == {"theta", "phi"}
    for path in saved[::3]:
        resumed, rstep = make(99)                                    # another init: all must come from the file
        fit(resumed, rstep, x, xt, samples=370, checkpoint=path, resume=True, **kw)
        for name in whole.params:
            np.testing.assert_array_equal(whole.params[name], resumed.params[name], err_msg=name)
        after = load_checkpoint(path)
        for key in final["step_state"]:
            np.testing.assert_array_equal(final["step_state"][key], after["step_state"][key], err_msg=key)
        ha, hb = dict(final["history"]), dict(after["history"])
        ha.pop("seconds"), hb.pop("seconds")
        assert ha == hb


def test_resume_refuses_another_algorithm_or_rate(tmp_path):
    x, xt = _toy()
    ck = tmp_path / "ck.npz"
    model = VAE(12, 6, 2, random_state=1)
    fit(model, WakeSleep(model, Adagrad(0.05), Adagrad(0.05)), x, xt, M=10, samples=100, checkpoint=ck,
        progress=False)
    other = VAE(12, 6, 2)
    with pytest.raises(CheckpointMismatch, match=r"step.optimizers.phi.lr: 0.05 there, 0.1 now"):
        fit(other, WakeSleep(other, Adagrad(0.05), Adagrad(0.1)), x, xt, M=10, samples=200, checkpoint=ck,
            resume=True, progress=False)
    with pytest.raises((CheckpointMismatch, ValueError), match="optimiser|algorithm"):
        fit(other, AEVB(other, Adagrad(0.05)), x, xt, M=10, samples=200, checkpoint=ck, resume=True,
            progress=False)


def test_fit_records_the_elbo_of_a_wake_sleep_model():
    """fit's history for wake-sleep is estimator B's bound, recomputed here at the end point."""
    x, xt = _toy()
    model = VAE(12, 6, 2, random_state=1)
    h = fit(model, WakeSleep(model, Adagrad(0.05), Adagrad(0.05)), x, xt, M=10, samples=600, eval_points=5,
            progress=False)
    assert h["samples"][-1] == 600 and len(h["test_elbo"]) == 5
    assert h["train_elbo"][-1] > h["train_elbo"][0]                  # the model learns
    from minivae.train import dataset_elbo
    again = dataset_elbo(model, xt, np.random.default_rng(4), L=200)
    assert abs(again - h["test_elbo"][-1]) < 1.0                      # same quantity: the ELBO, up to noise


@pytest.mark.realdata
@pytest.mark.slow
def test_aevb_beats_wake_sleep_on_real_mnist(data_dir):
    """The paper's Figure 2 claim on a small budget: 784-200-20, grey MNIST, Adagrad lr 0.02 for
    every parameter group, 30,000 samples, seed 0; the test bound (estimator B, the same 500 test
    images for both) of AEVB is above wake-sleep's at every recorded point after the first three."""
    from minivae.data import load_mnist
    x_train, _ = load_mnist("train", data_dir=data_dir)
    x_test, _ = load_mnist("test", data_dir=data_dir)
    kw = dict(M=100, samples=30000, seed=0, eval_points=8, eval_train_size=500, progress=False)
    a = VAE(784, 200, 20, dtype="float32", random_state=0)
    ha = fit(a, AEVB(a, Adagrad(0.02), weight_decay=1 / 60000), x_train, x_test[:500], **kw)
    w = VAE(784, 200, 20, dtype="float32", random_state=0)
    hw = fit(w, WakeSleep(w, Adagrad(0.02), Adagrad(0.02), weight_decay=1 / 60000), x_train, x_test[:500], **kw)
    assert ha["samples"] == hw["samples"] and len(ha["samples"]) == 8
    gaps = np.array(ha["test_elbo"]) - np.array(hw["test_elbo"])
    assert np.all(gaps[3:] > 0), list(zip(ha["samples"], ha["test_elbo"], hw["test_elbo"]))


def _fake_mnist(root):
    return fake_mnist_splits(root, n_train=300, n_test=50)


def test_minivae_train_algorithm_wake_sleep_resumes_bit_for_bit(tmp_path):
    """`minivae train --algorithm wake-sleep`: a run cut at 1500 samples and resumed to 3000 ends
    where the uninterrupted 3000-sample run ends (every parameter, both Adagrad states)."""
    from minivae.run.cli import main
    data = _fake_mnist(tmp_path / "data")
    common = ["train", "--dataset", "mnist", "--data-dir", str(data), "-H", "8", "-J", "2", "--algorithm",
              "wake-sleep", "--eval-points", "3", "--eval-train-size", "100", "--checkpoint-every", "0.5",
              "--no-progress", "--no-figures", "--no-download", "--readable", "--threads", "1"]
    assert main(common + ["--samples", "3000", "--out", str(tmp_path / "whole")]) == 0
    assert main(common + ["--samples", "1500", "--out", str(tmp_path / "cut")]) == 0
    assert main(["train", "--resume", "--samples", "3000", "--out", str(tmp_path / "cut"), "--no-progress",
                 "--no-figures", "--readable"]) == 0       # (without it, the fast twin: equal to 1e-12, not bits)
    a, b = load_checkpoint(tmp_path / "whole" / "checkpoint.npz"), load_checkpoint(tmp_path / "cut" / "checkpoint.npz")
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["algorithm"] == "wake-sleep"
    assert set(a["params"]) == set(b["params"]) and set(a["step_state"]) == set(b["step_state"])
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], b["params"][k], err_msg=k)
    for k in a["step_state"]:
        np.testing.assert_array_equal(a["step_state"][k], b["step_state"][k], err_msg=k)
    assert {k.split("/")[0] for k in a["step_state"]} == {"theta", "phi"}
