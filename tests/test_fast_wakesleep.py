"""The fast wake-sleep step is a twin beside the readable one, under the rules of tests/test_fast.py.

- :func:`minivae.fast.wake_sleep_step` (and ``build_step`` for ``wake-sleep``) gives
  :class:`FastWakeSleep` only for the library's own, unchanged code; for anything else the
  readable :class:`WakeSleep`, with one warning naming the reason, and the readable code trains.
- Where it runs, it computes what the readable step computes: the loss, every gradient and
  parameter, the optimisers' state to 1e-12 relative in float64 (1e-5 in float32), over one step
  and over 20, and it leaves ``rng`` exactly where the readable step leaves it (same draws, same order).
- The list of readable functions it stands in for is the readable step's (traced), no more, no less.
"""

import ast
import itertools
import warnings

import numpy as np
import pytest

from minivae.baselines import wakesleep
from minivae.baselines.wakesleep import WakeSleep, dream, sleep_loss_and_grads, wake_loss_and_grads
from minivae.fast import FastPathWarning, eligibility, jit_enabled, kernels, wake_sleep_step
from minivae.fast.eligibility import FastPathUnavailable, why_not_wake_sleep
from minivae.fast.wakesleep import FastWakeSleep
from minivae.gradcheck import relative_error
from minivae.model import VAE, GaussianDecoder
from minivae.optim import SGD, Adagrad
from minivae.run.algorithms import build_step
from minivae.run.config import Config
from test_fast import (DECODER_IDS, DECODERS, OPTIMIZERS, _Calls, _copy_of, _every_model, _halve_what_it_returns,
                       _minivae_calls, _small)


def _pair(opt="adagrad"):
    return OPTIMIZERS[opt](), OPTIMIZERS[opt]()


# --- which step the builders give ---------------------------------------------------------------

def test_the_stock_model_gets_the_fast_wake_sleep_step():
    if not jit_enabled():
        with pytest.warns(FastPathWarning, match="JIT is disabled"):
            assert type(wake_sleep_step(_small(), *_pair())) is WakeSleep
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(wake_sleep_step(_small(), *_pair())) is FastWakeSleep
        cfg = Config(algorithm="wake-sleep", L=2)
        step = build_step(cfg, _small(), 1000)
        assert type(step) is FastWakeSleep and step.L == 2 and step.weight_decay == 1e-3
    assert type(wake_sleep_step(_small(), *_pair(), fast=False)) is WakeSleep
    assert type(build_step(Config(algorithm="wake-sleep"), _small(), 1000, fast=False)) is WakeSleep


def test_without_the_jit_the_builder_gives_the_readable_step(monkeypatch):
    import minivae.fast
    monkeypatch.setattr(minivae.fast, "jit_enabled", lambda: False)
    with pytest.warns(FastPathWarning) as record:
        step = build_step(Config(algorithm="wake-sleep"), _small(), 1000)
    assert type(step) is WakeSleep and len(record) == 1 and "NUMBA_DISABLE_JIT" in str(record[0].message)


def test_the_fast_step_is_the_readable_one_to_checkpoints_and_descriptions():
    fast, slow = FastWakeSleep(_small(), *_pair(), 1e-3, 2), WakeSleep(_small(), *_pair(), 1e-3, 2)
    assert isinstance(fast, WakeSleep) and fast.name == slow.name == "wake-sleep"
    assert fast.describe() == slow.describe() and fast.code_path.startswith("fast")
    x, rng = np.random.default_rng(0).random((4, 6)), np.random.default_rng(1)
    fast(x, None, rng)
    slow.load_state_dict(fast.state_dict())                     # either path continues the other's run
    assert set(slow.state_dict()) == set(fast.state_dict())


# --- the list of functions it stands in for is the readable step's ----------------------------------

def test_verified_wake_sleep_fingerprints_are_those_of_the_code_as_it_stands():
    """If this fails, a readable function the fast wake-sleep step replaces was changed: check the twin
    (this file), then record it: python -m minivae.fast.eligibility --write."""
    now = eligibility.current_fingerprints(eligibility.WAKE_SLEEP_REPLACED)
    assert None not in now.values()
    assert now == eligibility.WAKE_SLEEP_VERIFIED


def test_every_function_the_readable_wake_sleep_step_runs_is_replaced_or_shared():
    """The readable wake-sleep step, traced for every decoder, activation and optimiser: each minivae
    function it runs is in WAKE_SLEEP_REPLACED (fingerprinted) or WAKE_SLEEP_SHARED (run by the fast
    step as well), and each function of WAKE_SLEEP_REPLACED is run."""
    called = set()
    for (model, x), opt in itertools.product(_every_model(), sorted(OPTIMIZERS)):
        step = WakeSleep(model, *_pair(opt), weight_decay=1e-3, L=2)
        called |= _minivae_calls(lambda: step(x, None, np.random.default_rng(1)))
    assert called - set(eligibility.WAKE_SLEEP_REPLACED) - set(eligibility.WAKE_SLEEP_SHARED) == set()
    assert set(eligibility.WAKE_SLEEP_REPLACED) - called == set()
    assert {"minivae.baselines.wakesleep.sleep_loss_and_grads", "minivae.model.VAE.theta"} <= called


def test_the_fast_wake_sleep_step_runs_the_shared_functions_itself_and_no_other_readable_one():
    called = set()
    for (model, x), opt in itertools.product(_every_model(), sorted(OPTIMIZERS)):
        step = FastWakeSleep(model, *_pair(opt), weight_decay=1e-3, L=2)
        called |= _minivae_calls(lambda: step(x, None, np.random.default_rng(1)))
    assert set(eligibility.WAKE_SLEEP_SHARED) <= called
    assert called <= set(eligibility.WAKE_SLEEP_REPLACED) | set(eligibility.WAKE_SLEEP_SHARED)


# --- an edited function turns it off; the readable step trains ---------------------------------------

def _one_step_parts(x, seed):
    """The readable step's wake and sleep losses on ``_small()``, by its own functions and draws."""
    model, rng = _small(), np.random.default_rng(seed)
    wake = wake_loss_and_grads(model, x, model.sample_eps(len(x), 1, rng))
    return wake, sleep_loss_and_grads(model, *dream(model, len(x), rng))


@pytest.mark.parametrize("name", ["wake_loss_and_grads", "sleep_loss_and_grads"])
def test_an_edited_phase_trains_on_the_readable_path(monkeypatch, tmp_path, name):
    """A phase edited on a copy to return half its loss: the builder names it in one warning, returns the
    readable step, and the step's loss is the edited code's (the unedited phases' losses, one halved)."""
    x = np.random.default_rng(0).random((4, 6))
    wake, sleep = _one_step_parts(x, 1)
    expected = 0.5 * wake + sleep if name.startswith("wake") else wake + 0.5 * sleep
    monkeypatch.setattr(wakesleep, name, _copy_of(getattr(wakesleep, name), _halve_what_it_returns, tmp_path))
    model, opts = _small(), _pair()
    assert why_not_wake_sleep(model, *opts).startswith(f"minivae.baselines.wakesleep.{name} is not the code")
    with pytest.warns(FastPathWarning) as record:
        step = wake_sleep_step(model, *opts)
    assert type(step) is WakeSleep and len(record) == 1
    assert str(record[0].message) == (f"the fast path is off: {why_not_wake_sleep(model, *opts)}; training runs "
                                      "the readable NumPy code.")
    assert step(x, None, np.random.default_rng(1)).loss == expected


@pytest.mark.parametrize("target,replacement", [
    ("minivae.layers.Tanh.backward", lambda self, dout: dout),
    ("minivae.estimator.log_diag_gaussian_grad", lambda z, mu, lv: (z, mu, lv)),
    ("minivae.model.BernoulliDecoder.log_likelihood_grad", lambda self, x, out, d: (0 * out[0],)),
    ("minivae.optim.Adagrad._update", lambda self, name, p, g: None),
])
def test_an_edited_function_the_step_runs_switches_the_fast_wake_sleep_step_off(monkeypatch, target, replacement):
    module, _, attr = target.rpartition(".")
    monkeypatch.setattr(eligibility._resolve(module), attr, replacement)
    with pytest.warns(FastPathWarning) as record:
        step = build_step(Config(algorithm="wake-sleep"), _small(), 1000)
    assert type(step) is WakeSleep and len(record) == 1
    assert target in str(record[0].message) and "readable" in str(record[0].message)


def test_an_edit_to_a_function_the_aevb_step_alone_runs_keeps_the_fast_wake_sleep_step(monkeypatch):
    monkeypatch.setattr(eligibility._resolve("minivae.estimator"), "kl_standard_normal", lambda mu, lv: 0 * mu)
    assert "kl_standard_normal" in eligibility.why_not(_small(), Adagrad(0.1))
    assert why_not_wake_sleep(_small(), *_pair()) is None


def _dim_the_dream(tree):
    """``return z, x`` becomes ``return z, 0.5 * x``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            node.value.elts[1] = ast.BinOp(ast.Constant(0.5), ast.Mult(), node.value.elts[1])


def test_an_edited_dream_trains_on_the_readable_path(monkeypatch, tmp_path):
    """dream edited on a copy (dreams of half the brightness): one warning names it, and the readable
    step trains on the edited dream."""
    x = np.random.default_rng(0).random((4, 6))
    wake, _ = _one_step_parts(x, 1)
    model, rng = _small(), np.random.default_rng(1)
    model.sample_eps(4, 1, rng)
    z, x_dream = dream(model, 4, rng)
    expected = wake + sleep_loss_and_grads(model, z, 0.5 * x_dream)
    monkeypatch.setattr(wakesleep, "dream", _copy_of(dream, _dim_the_dream, tmp_path))
    with pytest.warns(FastPathWarning, match="minivae.baselines.wakesleep.dream is not the code") as record:
        step = wake_sleep_step(_small(), *_pair())
    assert type(step) is WakeSleep and len(record) == 1
    assert step(x, None, np.random.default_rng(1)).loss == expected


def test_an_edited_gaussian_sample_reaches_both_steps(monkeypatch, tmp_path):
    """GaussianDecoder.sample is shared: the fast step calls it on the mean and log-variance it computes,
    so an edit (dreams of half the brightness) trains on both paths alike, and the fast path stays on."""
    def readable_loss(edited):
        model = _small(decoder="gaussian")
        with monkeypatch.context() as m:
            if edited:
                m.setattr(GaussianDecoder, "sample", _copy_of(GaussianDecoder.sample, _halve_what_it_returns,
                                                              tmp_path))
            return WakeSleep(model, *_pair())(x, None, np.random.default_rng(1)).loss
    x = np.random.default_rng(0).random((4, 6))
    before, expected = readable_loss(False), readable_loss(True)
    assert abs(before - expected) > 0.1                         # the edit changes the sleep loss
    monkeypatch.setattr(GaussianDecoder, "sample", _copy_of(GaussianDecoder.sample, _halve_what_it_returns, tmp_path))
    assert why_not_wake_sleep(_small(decoder="gaussian"), *_pair()) is None
    loss = FastWakeSleep(_small(decoder="gaussian"), *_pair())(x, None, np.random.default_rng(1)).loss
    assert abs(loss - expected) <= 1e-12 * abs(expected)


@pytest.mark.parametrize("change,reason", [
    (lambda m, o: m.encoder.trunk.layers.append(m.encoder.trunk.layers[1]), "has 3 layers, not pairs"),
    (lambda m, o: setattr(m.decoder, "sample", lambda out, rng: out[0]), "the decoder has its own sample"),
    (lambda m, o: setattr(o[1], "__class__", type("Momentum", (SGD,), {})), "the optimiser is a Momentum"),
], ids=["odd-trunk", "instance-sample", "unknown-opt-phi"])
def test_an_unsupported_model_or_optimiser_is_refused_with_the_reason(change, reason):
    model, opts = _small(), (SGD(0.1), SGD(0.1))
    change(model, opts)
    assert reason in why_not_wake_sleep(model, *opts)
    with pytest.raises(FastPathUnavailable, match=reason):
        FastWakeSleep(model, *opts)
    with pytest.warns(FastPathWarning, match=reason):
        assert type(wake_sleep_step(model, *opts)) is WakeSleep


# --- it computes what the readable step computes --------------------------------------------------

def _ws_steps(fast, decoder, sigmoid_mean, L, optimizer, dtype="float64", sizes=(30, 20, 4, 16), n_steps=1,
              density=1.0, dim_dreams=False, seed=0, **fast_kw):
    """``n_steps`` steps of one path: per step the loss and every gradient, then the parameters, the
    optimisers' state and the Generator's state. ``density`` < 1: x mostly zeros (MNIST: 0.19 nonzero);
    ``dim_dreams``: the Bernoulli decoder's output biases at -4, so its dreams are mostly zeros too."""
    D, H, J, M = sizes
    model = VAE(D=D, H=H, J=J, decoder=decoder, sigmoid_mean=sigmoid_mean, init="glorot", dtype=dtype,
                random_state=seed)
    if dim_dreams:
        model.params["dec.logits.b"][...] = -4.0                     # sigmoid(-4) = 0.018
    opts = _pair(optimizer)
    step = FastWakeSleep(model, *opts, 1e-3, L, **fast_kw) if fast else WakeSleep(model, *opts, 1e-3, L)
    rng = np.random.default_rng(seed + 1)
    record = []
    for _ in range(n_steps):
        x = rng.random((M, D)).astype(dtype)
        if density < 1:
            x *= rng.random((M, D)) < density
            x[1], x[:, 2] = 0, 0                                     # an empty row and an empty column
        loss = step(x, None, rng).loss
        record.append((loss, {k: g.copy() for k, g in model.grads.items()}))
    return record, {k: p.copy() for k, p in model.params.items()}, step.state_dict(), rng.bit_generator.state


def _assert_same_steps(a, b, tol):
    (rec_a, params_a, state_a, rng_a), (rec_b, params_b, state_b, rng_b) = a, b
    assert rng_a == rng_b                                            # the same draws, in the same order
    for (loss_a, grads_a), (loss_b, grads_b) in zip(rec_a, rec_b):
        assert abs(loss_a - loss_b) <= tol * abs(loss_a)
        for k in grads_a:
            assert relative_error(grads_a[k], grads_b[k]) <= tol, k
    for k in params_a:
        assert params_a[k].dtype == params_b[k].dtype and relative_error(params_a[k], params_b[k]) <= tol, k
    assert set(state_a) == set(state_b)
    for k in state_a:
        assert relative_error(state_a[k], state_b[k]) <= tol, k


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_a_step_agrees_in_float64(decoder, sigmoid_mean, L, optimizer):
    args = (decoder, sigmoid_mean, L, optimizer)
    _assert_same_steps(_ws_steps(False, *args), _ws_steps(True, *args), 1e-12)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("L", [1, 2])
def test_mostly_zero_data_and_dreams_take_the_sparse_products_and_agree(monkeypatch, L, sparse):
    """x with 15 % nonzero pixels and dreams with about 2 %: with sparse products, the wake encoder's
    product with x (reading x's rows, no index: x is in one product) and the sleep encoder's two products
    with the dream (through its index) skip the zeros; with dense ones, none does; both are the readable
    step to 1e-12."""
    calls = {name: _Calls(getattr(kernels, name)) for name in ("sparse_matmul_rows", "sparse_matmul",
                                                               "sparse_matmul_t")}
    for name, spy in calls.items():
        monkeypatch.setattr(kernels, name, spy)
    args = ("bernoulli", True, L, "adagrad")
    kw = dict(density=0.15, dim_dreams=True, n_steps=3)
    _assert_same_steps(_ws_steps(False, *args, **kw), _ws_steps(True, *args, **kw, sparse_input=sparse), 1e-12)
    assert [spy.n for spy in calls.values()] == ([3, 3, 3] if sparse else [0, 0, 0])


@pytest.mark.parametrize("H", [(), (12, 8)], ids=["linear", "two-hidden"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_other_depths_agree(decoder, sigmoid_mean, H):
    args = (decoder, sigmoid_mean, 2, "adam")
    kw = dict(sizes=(10, H, 3, 5), n_steps=2)
    _assert_same_steps(_ws_steps(False, *args, **kw), _ws_steps(True, *args, **kw), 1e-12)


@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS[:2], ids=DECODER_IDS[:2])
def test_twenty_adagrad_steps_agree(decoder, sigmoid_mean):
    """A trajectory: 20 steps, each from the parameters the last one left, MNIST-like x for the
    Bernoulli decoder, every number of every step to 1e-12."""
    args = (decoder, sigmoid_mean, 1, "adagrad")
    kw = dict(n_steps=20, density=0.2 if decoder == "bernoulli" else 1.0)
    _assert_same_steps(_ws_steps(False, *args, **kw), _ws_steps(True, *args, **kw), 1e-12)


@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_paper_sized_steps_agree_in_float32(decoder, sigmoid_mean):
    """The MNIST model's sizes (784-500, M = 100) in float32, one SGD step, to the FastAEVB tests'
    1e-5 (Adagrad's first step, lr * sign(g), would jump where the rounding flips a sign of g)."""
    args = (decoder, sigmoid_mean, 1, "sgd")
    kw = dict(dtype="float32", sizes=(784, 500, 10, 100), density=0.19 if decoder == "bernoulli" else 1.0)
    _assert_same_steps(_ws_steps(False, *args, **kw), _ws_steps(True, *args, **kw), 1e-5)


@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS[:2], ids=DECODER_IDS[:2])
def test_a_non_finite_loss_changes_no_parameter_on_either_path(decoder, sigmoid_mean):
    for step_class in (WakeSleep, FastWakeSleep):
        model = _small(decoder=decoder, sigmoid_mean=sigmoid_mean)
        model.params["enc.log_var.b"][...] = -1000.0            # sigma^2 = 0: log q of the dream is -inf
        before = {k: p.copy() for k, p in model.params.items()}
        step = step_class(model, *_pair(), weight_decay=0.1)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = step(np.full((4, 6), 0.5), None, np.random.default_rng(0))
        assert not np.isfinite(result.loss)
        assert step.opt_theta.t == step.opt_phi.t == 0 and not step.opt_theta.state and not step.opt_phi.state
        for k in before:
            np.testing.assert_array_equal(model.params[k], before[k])


def test_fit_with_the_fast_step_resumes_a_readable_wake_sleep_run(tmp_path):
    """Checkpoints are the same for both steps: a wake-sleep run started readable continues fast to the
    uninterrupted run's parameters, and records what the readable step resumed records (float64, 1e-12)."""
    import shutil
    from minivae.train import fit
    rng = np.random.default_rng(0)
    x, xt = rng.random((120, 12)), rng.random((40, 12))
    kw = dict(M=10, seed=3, eval_points=3, progress=False)
    whole = VAE(12, 6, 2, random_state=1)
    fit(whole, WakeSleep(whole, *_pair(), weight_decay=1 / 120), x, xt, samples=300, **kw)
    part = VAE(12, 6, 2, random_state=1)
    fit(part, WakeSleep(part, *_pair(), weight_decay=1 / 120), x, xt, samples=150, checkpoint=tmp_path / "a.npz", **kw)
    shutil.copy(tmp_path / "a.npz", tmp_path / "b.npz")
    histories = []
    for step_class, ck in ((WakeSleep, "a.npz"), (FastWakeSleep, "b.npz")):
        resumed = VAE(12, 6, 2, random_state=7)
        histories.append(fit(resumed, step_class(resumed, *_pair(), weight_decay=1 / 120), x, xt, samples=300,
                             checkpoint=tmp_path / ck, resume=True, **kw))
    for name in whole.params:                                    # (resumed: the fast one)
        assert relative_error(whole.params[name], resumed.params[name]) < 1e-12, name
    assert histories[0]["samples"] == histories[1]["samples"]
    assert relative_error(np.array(histories[0]["test_elbo"]), np.array(histories[1]["test_elbo"])) < 1e-12
