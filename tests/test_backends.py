"""The NumPy path and the Numba path compute the same training step.

A step is the training loop's sequence: ``loss, elbo = model.loss_and_grads(x,
eps, estimator)`` then ``optimizer.step(model.params, model.grads,
weight_decay=1/N)``; the steps here also pass ``n_data``, so the model's own
route for the parameter prior is held to the same standard.
In float64 the two backends agree to 1e-12 relative (each array compared as a
whole, :func:`minivae.gradcheck.relative_error`; they differ only by the
rounding of the same operations done in another order, about 1e-16); in
float32 to 1e-5. The end-to-end gradient checks of ``tests/test_model.py`` run
here again under the Numba backend, whatever MINIVAE_BACKEND says.
"""

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import test_model as model_tests  # its checks, rerun below under the numba backend
from minivae import kernels
from minivae.backend import BACKENDS, get_backend, set_backend, use_backend
from minivae.gradcheck import relative_error
from minivae.model import VAE
from minivae.optim import SGD, Adagrad, Adam

DECODERS = [("bernoulli", True), ("gaussian", True), ("gaussian", False)]
DECODER_IDS = ["bernoulli", "gauss-sigmoid", "gauss-linear"]
OPTIMIZERS = {"sgd": lambda: SGD(0.05), "adagrad": lambda: Adagrad(0.05), "adam": lambda: Adam(0.01)}


# --- the switch --------------------------------------------------------------------------

DEFAULT = "numba" if kernels.JIT_ENABLED else "numpy"       # (kernels as Python are too slow to train with)


def test_backend_switch():
    if "MINIVAE_BACKEND" not in os.environ:
        assert get_backend() == DEFAULT
    start = get_backend()
    with use_backend("numpy") as name:
        assert name == get_backend() == "numpy"
        with use_backend("numba"):
            assert get_backend() == "numba"
        assert get_backend() == "numpy"
    assert get_backend() == start
    with pytest.raises(RuntimeError), use_backend("numpy"):  # restored on error too
        raise RuntimeError
    assert get_backend() == start
    with pytest.raises(ValueError, match="backend must be one of"):
        set_backend("cuda")
    assert get_backend() == start and BACKENDS == ("numba", "numpy")


@pytest.mark.parametrize("value,expected", [("numpy", "numpy"), (" Numba ", "numba"), ("", DEFAULT)])
def test_environment_variable_is_read_at_import(value, expected):
    env = dict(os.environ, MINIVAE_BACKEND=value)
    out = subprocess.run([sys.executable, "-c", "from minivae.backend import get_backend; print(get_backend())"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected


def test_bad_environment_variable_says_what_is_wrong():
    env = dict(os.environ, MINIVAE_BACKEND="cuda")
    proc = subprocess.run([sys.executable, "-c", "import minivae.backend"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "MINIVAE_BACKEND='cuda'" in proc.stderr and "backend must be one of" in proc.stderr


def test_the_switch_decides_which_code_runs(monkeypatch):
    calls = []
    for name in ("bernoulli_head", "adagrad_step"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    model = VAE(D=6, H=5, J=2, random_state=0)
    opt, x, rng = Adagrad(0.1), np.full((3, 6), 0.5), np.random.default_rng(0)
    with use_backend("numpy"):
        model.loss_and_grads(x, model.sample_eps(3, 1, rng))
        opt.step(model.params, model.grads)
    assert calls == []
    with use_backend("numba"):
        model.loss_and_grads(x, model.sample_eps(3, 1, rng))
        opt.step(model.params, model.grads)
    assert calls[0] == "bernoulli_head" and calls.count("adagrad_step") == len(model.params)


# --- one training step, both backends -----------------------------------------------------------

def _steps(backend, decoder, sigmoid_mean, estimator, L, optimizer, dtype="float64", sizes=(30, 20, 4, 16),
           n_steps=2, seed=0):
    """Run n_steps training steps; return what each step produced and the final parameters."""
    D, H, J, M = sizes
    model = VAE(D=D, H=H, J=J, decoder=decoder, sigmoid_mean=sigmoid_mean, init="glorot", dtype=dtype,
                random_state=seed)
    opt = OPTIMIZERS[optimizer]()
    rng = np.random.default_rng(seed + 1)
    record = []
    with use_backend(backend):
        for _ in range(n_steps):
            x = rng.random((M, D)).astype(dtype)
            eps = model.sample_eps(M, L, rng)
            loss, elbo = model.loss_and_grads(x, eps, estimator, n_data=1000)
            record.append((loss, elbo.copy(), {k: g.copy() for k, g in model.grads.items()}))
            opt.step(model.params, model.grads, weight_decay=1e-3)   # both routes of the prior at once
    return record, {k: p.copy() for k, p in model.params.items()}


def _assert_same_steps(a, b, tol):
    (rec_a, params_a), (rec_b, params_b) = a, b
    for (loss_a, elbo_a, grads_a), (loss_b, elbo_b, grads_b) in zip(rec_a, rec_b):
        assert abs(loss_a - loss_b) <= tol * abs(loss_a)
        assert elbo_a.dtype == elbo_b.dtype and relative_error(elbo_a, elbo_b) <= tol
        assert set(grads_a) == set(grads_b)
        for k in grads_a:
            assert relative_error(grads_a[k], grads_b[k]) <= tol, k
    for k in params_a:
        assert params_a[k].dtype == params_b[k].dtype
        assert relative_error(params_a[k], params_b[k]) <= tol, k


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("estimator", ["A", "B"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_training_steps_agree_in_float64(decoder, sigmoid_mean, estimator, L, optimizer):
    args = (decoder, sigmoid_mean, estimator, L, optimizer)
    _assert_same_steps(_steps("numpy", *args), _steps("numba", *args), 1e-12)


@pytest.mark.parametrize("H", [(), (12, 8)], ids=["linear", "two-hidden"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_other_depths_agree(decoder, sigmoid_mean, H):
    args = (decoder, sigmoid_mean, "A", 2, "adam")
    kw = dict(sizes=(10, H, 3, 5))
    _assert_same_steps(_steps("numpy", *args, **kw), _steps("numba", *args, **kw), 1e-12)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_paper_sized_and_large_steps_agree(decoder, sigmoid_mean, dtype, tol):
    """The MNIST model's sizes (784-500, M = 100); with the JIT, a batch large enough for the
    threaded branch of the heads and of bias + activation (the flat kernels' threaded branch
    needs millions of parameters: test_kernels holds it to the twin).

    float32 takes an SGD step: Adagrad's first step is lr * sign(g), which jumps at g = 0,
    so among 400k weights the float32 rounding of g (about 1e-7) flips one now and then.
    """
    D, H, M = (784, 500, 100) if not kernels.JIT_ENABLED else (784, 500, 600)
    if kernels.JIT_ENABLED:
        assert min(M * D, M * H) >= kernels.PARALLEL_MIN_SIZE
    args = (decoder, sigmoid_mean, "B", 1, "adagrad" if dtype == "float64" else "sgd")
    kw = dict(dtype=dtype, sizes=(D, H, 10, M), n_steps=1)
    _assert_same_steps(_steps("numpy", *args, **kw), _steps("numba", *args, **kw), tol)


def test_changing_minibatch_size_between_steps():
    """Buffers are kept per minibatch shape; a last, shorter batch must not reuse the wrong ones."""
    results = {}
    for backend in BACKENDS:
        model = VAE(D=8, H=6, J=2, init="glorot", random_state=3)
        rng = np.random.default_rng(4)
        with use_backend(backend):
            results[backend] = [model.loss_and_grads(rng.random((M, 8)), model.sample_eps(M, L, rng))[1]
                                for M, L in [(5, 1), (3, 1), (5, 2), (5, 1), (3, 1)]]
    for a, b in zip(results["numpy"], results["numba"]):
        assert a.shape == b.shape and relative_error(a, b) < 1e-12


def test_bad_input_gets_the_same_error_from_both_backends():
    model = VAE(D=6, H=5, J=3, random_state=0)
    bad = [np.full((4, 6), np.nan), np.full((4, 6), 255.0), np.zeros((4, 5)), np.zeros((4, 6), np.uint8),
           np.zeros((4, 2, 3)), [[0.0] * 6] * 4]
    for x in bad:
        messages = []
        for backend in BACKENDS:
            with use_backend(backend), pytest.raises((ValueError, TypeError)) as err:
                model.loss_and_grads(x, model.sample_eps(4))
            messages.append(str(err.value))
        assert messages[0] == messages[1]
    with use_backend("numba"), pytest.raises(ValueError, match="estimator must be"):
        model.loss_and_grads(np.zeros((1, 6)), np.zeros((1, 1, 3)), estimator="C")
    with use_backend("numba"), pytest.raises(ValueError, match="eps must have shape"):
        model.loss_and_grads(np.zeros((4, 6)), np.zeros((1, 5, 3)))


def test_optimizer_falls_back_for_arrays_it_cannot_flatten():
    """A strided view cannot be updated through a flat view: the NumPy update runs instead."""
    results = []
    for backend in BACKENDS:
        base = np.arange(12.0).reshape(3, 4)
        params = {"w": base[:, ::2]}                                   # not contiguous
        opt = Adam(0.1)
        with use_backend(backend):
            for _ in range(2):
                opt.step(params, {"w": np.full((3, 2), 0.5)})
        results.append(base)
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], np.arange(12.0).reshape(3, 4))


@pytest.mark.skipif(not kernels.JIT_ENABLED, reason="as Python (NUMBA_DISABLE_JIT=1) this model takes a minute")
def test_a_numba_step_allocates_nothing_large():
    """Buffers are allocated once per minibatch shape: a step's Python-side peak is a few small arrays."""
    model = VAE(D=784, H=500, J=20, random_state=0)
    x = (np.random.default_rng(0).random((100, 784)) < 0.3).astype(np.float64)
    opt, rng = Adagrad(0.02), np.random.default_rng(1)

    def step():
        eps = model.sample_eps(100, 1, rng)
        model.loss_and_grads(x, eps, "B", 60000)
        opt.step(model.params, model.grads)

    peaks = {}
    for backend in BACKENDS:
        with use_backend(backend):
            step()
            step()                                                     # warm: buffers and state exist
            tracemalloc.start()
            step()
            peaks[backend] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    # eps (16 kB), elbo and a few (M,) arrays; one (M, D) float64 array alone is 627 kB
    assert peaks["numba"] < 64_000, peaks
    assert peaks["numpy"] > 20 * peaks["numba"], peaks                 # the readable path does allocate


# --- the end-to-end gradient checks of tests/test_model.py, under the numba backend ---------------

@pytest.mark.parametrize("n_data", [None, 50], ids=["no-prior", "prior"])
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("estimator", ["A", "B"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_end_to_end_gradient_under_numba(decoder, sigmoid_mean, estimator, L, n_data):
    with use_backend("numba"):
        model_tests.test_end_to_end_gradient(decoder, sigmoid_mean, estimator, L, n_data)


@pytest.mark.parametrize("check", [
    model_tests.test_deeper_and_relu_models_are_checked_too,
    model_tests.test_full_size_model_along_a_random_direction,
    model_tests.test_gradient_uses_the_forward_eps,
    model_tests.test_float32_model_stays_float32,
    model_tests.test_gaussian_decoder_accepts_values_outside_the_unit_interval,
], ids=lambda f: f.__name__)
def test_model_checks_under_numba(check):
    with use_backend("numba"):
        check()


# --- real data: a fixed-seed epoch, per-step bounds ---------------------------------------------------

@pytest.mark.realdata
@pytest.mark.slow
def test_fixed_seed_epoch_on_mnist_gives_the_same_bounds(data_dir):
    """The paper's MNIST model (784-500-20, Adagrad 0.02, estimator B, weight decay), float64.

    One epoch over the first 10000 training images (100 steps of M = 100), not all
    60000: the float64 NumPy path would add half a minute to the suite. The whole
    epoch is compared by ``python benchmarks/bench_train.py --check-epoch``.
    Without the JIT (NUMBA_DISABLE_JIT=1) the kernels run as Python: 3 steps.
    """
    from minivae.data import load_mnist, minibatches

    X, _ = load_mnist("train", data_dir=data_dir)
    X = X[:10000] if kernels.JIT_ENABLED else X[:300]
    bounds = {}
    for backend in BACKENDS:
        model = VAE(D=784, H=500, J=20, dtype="float64", random_state=0)
        opt, rng = Adagrad(0.02), np.random.default_rng(1)
        per_step = []
        with use_backend(backend):
            for x in minibatches(X, 100, rng):
                loss, elbo = model.loss_and_grads(x, model.sample_eps(100, 1, rng), "B")
                opt.step(model.params, model.grads, weight_decay=1 / 60000)   # the prior, as fit applies it
                per_step.append(elbo.mean())
        bounds[backend] = np.array(per_step)
    assert len(bounds["numpy"]) == len(X) // 100
    if kernels.JIT_ENABLED:
        assert bounds["numpy"][-1] > bounds["numpy"][0] + 50          # it learns (nats per datapoint)
    np.testing.assert_allclose(bounds["numba"], bounds["numpy"], rtol=1e-6, atol=0)
