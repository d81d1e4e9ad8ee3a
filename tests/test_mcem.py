"""Monte-Carlo EM (Appendix E): the M-step gradient by finite differences (float64, relative error
<= 1e-7), the E-step's persistent chains sample the exact posterior, MCEM raises the exact
log-likelihood of a perturbed linear-Gaussian decoder, and a resumed run equals the
uninterrupted one bit for bit."""

import shutil

import numpy as np
import pytest

import minivae.baselines.mcem
from minivae.baselines.marginal import grid_log_likelihood
from minivae.baselines.mcem import MCEM, mstep_loss_and_grads
from minivae.checkpoint import load_checkpoint
from minivae.gradcheck import TOLERANCE, check_function
from minivae.model import VAE
from minivae.optim import SGD, Adagrad
from minivae.teaching.linear_gaussian import linear_gaussian
from minivae.train import fit

DECODERS = {"bernoulli": dict(decoder="bernoulli"),
            "gaussian-sigmoid": dict(decoder="gaussian", sigmoid_mean=True),
            "gaussian-linear": dict(decoder="gaussian", sigmoid_mean=False)}


@pytest.mark.parametrize("kind", DECODERS)
def test_mstep_gradient_matches_finite_differences(kind):
    """Every theta entry of -(1/M) sum_i log p(x_i|z_i); relative error <= TOLERANCE = 1e-7."""
    model = VAE(D=6, H=5, J=3, init="glorot", random_state=0, **DECODERS[kind])
    rng = np.random.default_rng(1)
    x = (rng.random((4, 6)) < 0.5).astype(float) if kind == "bernoulli" else rng.random((4, 6))
    z = rng.standard_normal((4, 3))
    mstep_loss_and_grads(model, x, z)
    analytic = {name: model.grads[name].copy() for name in model.theta}
    err = check_function(lambda: mstep_loss_and_grads(model, x, z), analytic, model.theta)
    assert max(err.values()) < TOLERANCE, err


def _run_by_hand(step, x, M, epochs, seed):
    """The loop's order (a permutation per epoch, the rows idx), with the acceptance of every E-step."""
    rng = np.random.default_rng(seed)
    acceptance = []
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        for b in range(len(x) // M):
            idx = perm[b * M:(b + 1) * M]
            step(x[idx], idx, rng)
            acceptance.append(step.acceptance)
    return np.array(acceptance)


def test_the_persistent_chains_sample_the_exact_posterior_at_90_percent_acceptance():
    """With theta fixed (updates_per_estep=0) the E-step alone is an HMC sampler whose chains, one
    per datapoint, advance once an epoch. After 20 epochs (20 transitions of 10 leapfrog steps from
    the prior) the standardised chains u = (z - mu) / sigma of the exact linear-Gaussian
    posterior are N = 400 independent draws of N(0, I): mean within 4 / sqrt(N), variance within
    4 sqrt(2 / N) of 1. The shared step size, tuned from 0.1, gives a mean acceptance within 0.04
    of 0.9 over the last 10 epochs (100 minibatches of 40)."""
    lg = linear_gaussian(D=5, J=2)
    N = 400
    x = lg.sample(N, rng=0)
    step = MCEM(lg.model, Adagrad(0.05), n_data=N, updates_per_estep=0)
    acceptance = _run_by_hand(step, x, M=40, epochs=20, seed=1)
    mu, log_var = lg.posterior(x)
    u = (step.z - mu) / np.exp(0.5 * log_var)                           # (N, J)
    assert np.all(np.abs(u.mean(axis=0)) < 4 / np.sqrt(N)), u.mean(axis=0)
    assert np.all(np.abs(u.var(axis=0) - 1) < 4 * np.sqrt(2 / N)), u.var(axis=0)
    assert abs(acceptance[-100:].mean() - 0.9) < 0.04, acceptance[-100:].mean()
    np.testing.assert_array_equal(lg.model.params["dec.mean.W"], lg.A)    # nothing trained


def test_mcem_raises_the_exact_log_likelihood_of_a_perturbed_linear_gaussian_decoder():
    """Data: 100 draws of the linear-Gaussian model (log p(x) = -5.39 nats per datapoint under it).
    The decoder starts perturbed (weights, offsets, noise variance) at -7.07; 30 epochs of MCEM
    (M = 20, Adagrad 0.05, the parameter prior 1/N) bring it to the generating model's level
    (-5.32 when this test was written; required: above -5.49). log p(x) is computed on a grid over z (exact to 1e-9 on this family, see
    test_marginal), so it stays exact when MCEM's update of the log-variance weights makes the
    noise depend on z. The encoder (phi) must not move."""
    lg = linear_gaussian(D=5, J=2)
    N = 100
    x = lg.sample(N, rng=0)
    generating = float(np.mean(lg.log_px(x)))
    model = lg.model
    rng = np.random.default_rng(5)
    for name in ("dec.mean.W", "dec.mean.b"):
        model.params[name] += 0.5 * rng.standard_normal(model.params[name].shape)
    model.params["dec.log_var.b"] += 1.0
    phi = {name: p.copy() for name, p in model.phi.items()}
    before = float(np.mean(grid_log_likelihood(model, x, step=0.1)))

    fit(model, MCEM(model, Adagrad(0.05), n_data=N, weight_decay=1.0 / N), x, M=20, epochs=30, eval_points=1,
        progress=False)
    after = float(np.mean(grid_log_likelihood(model, x, step=0.1)))
    assert before < generating - 1.5, (before, generating)
    assert after > generating - 0.1, (before, after, generating)
    for name, p in model.phi.items():
        np.testing.assert_array_equal(p, phi[name], err_msg=name)


def _toy(seed=0, n=120, D=12):
    rng = np.random.default_rng(seed)
    return rng.random((n, D)), rng.random((40, D))


def test_resume_from_every_checkpoint_equals_the_uninterrupted_run(tmp_path):
    """Checkpoints every 0.25 epoch of 12 steps, mid-epoch and at epoch boundaries; resuming from
    each ends bit for bit where the uninterrupted run ends: parameters, Adagrad state, the chains
    z (N, J) and the tuned step size, and the history."""
    x, xt = _toy()
    kw = dict(M=10, seed=3, eval_points=6, progress=False, checkpoint_every=0.25)
    make_step = lambda model: MCEM(model, Adagrad(0.05), n_data=len(x), weight_decay=1.0 / len(x))
    whole = VAE(12, 6, 2, random_state=1)
    saved = []

    def keep(path):
        saved.append(tmp_path / f"ck{len(saved):02d}.npz")
        shutil.copy(path, saved[-1])

    ck = tmp_path / "whole.npz"
    fit(whole, make_step(whole), x, xt, samples=370, checkpoint=ck, on_checkpoint=keep, **kw)   # 37 steps
    final = load_checkpoint(ck)
    assert len(saved) == 13 and int(final["loop"]["step"]) == 37
    assert final["step_state"]["extra/z"].shape == (120, 2) and "extra/log_step_size" in final["step_state"]
    assert any(int(load_checkpoint(p)["loop"]["batch"]) == 12 for p in saved)          # an epoch boundary
    for path in saved:
        resumed = VAE(12, 6, 2, random_state=99)                # another init: everything must come from the file
        fit(resumed, make_step(resumed), x, xt, samples=370, checkpoint=path, resume=True, **kw)
        state = load_checkpoint(path)
        for name in whole.params:
            np.testing.assert_array_equal(whole.params[name], resumed.params[name], err_msg=name)
        assert set(final["step_state"]) == set(state["step_state"])
        for key in final["step_state"]:
            np.testing.assert_array_equal(final["step_state"][key], state["step_state"][key], err_msg=key)
        ha, hb = dict(final["history"]), dict(state["history"])
        ha.pop("seconds"), hb.pop("seconds")
        assert ha == hb


def test_a_non_finite_loss_in_the_mstep_leaves_everything_unchanged(monkeypatch):
    """The third of five M-step losses is made infinite: theta, the optimiser's state, the chains
    and the step size are those from before the step, and the step reports the loss."""
    x, _ = _toy()
    model = VAE(12, 6, 2, random_state=1)
    step = MCEM(model, Adagrad(0.05), n_data=len(x))
    rng = np.random.default_rng(0)
    idx = np.arange(10)
    step(x[idx], idx, rng)                                       # the chains exist, Adagrad has state
    before = ({k: p.copy() for k, p in model.params.items()}, step.z.copy(), step.log_step_size,
              {k: np.array(v, copy=True) for k, v in step.optimizer.state_dict().items()})
    calls = []
    real = minivae.baselines.mcem.mstep_loss_and_grads

    def poisoned(*args):
        calls.append(1)
        return float("inf") if len(calls) == 3 else real(*args)

    monkeypatch.setattr(minivae.baselines.mcem, "mstep_loss_and_grads", poisoned)
    result = step(x[idx], idx, rng)
    assert result.loss == float("inf") and result.elbo is None and len(calls) == 3
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[0][name], err_msg=name)
    np.testing.assert_array_equal(step.z, before[1])
    assert step.log_step_size == before[2]
    after = step.optimizer.state_dict()
    assert set(after) == set(before[3])
    for key, v in before[3].items():
        np.testing.assert_array_equal(after[key], v, err_msg=key)


def test_settings_and_checkpoint_state_are_checked_with_one_clear_sentence():
    model = VAE(12, 6, 2, random_state=1)
    with pytest.raises(TypeError, match="optimizer must be a minivae.optim.Optimizer"):
        MCEM(model, "adagrad", n_data=10)
    with pytest.raises(ValueError, match=r"target_acceptance must be a number in \(0, 1\)"):
        MCEM(model, SGD(0.1), n_data=10, target_acceptance=90)
    step = MCEM(model, SGD(0.1), n_data=10)
    x, _ = _toy(n=20)
    with pytest.raises(ValueError, match=r"one index in \[0, 10\).*build it with n_data=len\(x_train\)"):
        step(x[:5], np.arange(15, 20), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"MCEM chains of shape \(20, 2\), but this step has n_data = 10"):
        step.load_extra_state({"z": np.zeros((20, 2)), "log_step_size": np.array(-2.0)})
    with pytest.raises(ValueError, match="it needs log_step_size"):
        step.load_extra_state({"chains": np.zeros((10, 2))})
    d = step.describe()
    assert d["algorithm"] == "mcem" and d["optimizers"]["theta"]["type"] == "SGD"
    assert (d["n_leapfrog"], d["target_acceptance"], d["updates_per_estep"]) == (10, 0.9, 5)
