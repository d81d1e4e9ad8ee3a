"""Every Numba kernel against its NumPy twin (``minivae.fast.kernels.TWINS``), on the same inputs.

Tolerances: float64 to 1e-12 relative; float32 to 2e-5 relative (both compute in
float32, but the kernels use their own float32 exp/tanh/log1p polynomials and sum
in another order, so they differ by a few float32 ulp, 6e-8 each). Entries that cancel to nearly
zero (1 - tanh(a)^2 for large |a|, a column sum of terms of both signs) keep
only the absolute accuracy of their inputs, so each comparison also allows
``rtol * max|expected|`` in absolute terms. Sizes: one below and one above
``PARALLEL_MIN_SIZE`` (or ``PARALLEL_MIN_SIZE_FLAT``), so the serial and the
threaded branch are both held to the twin. The same tests run as Python under
``NUMBA_DISABLE_JIT=1``, except the threaded sizes (no threads there, and
millions of elements in Python loops).
"""

import importlib
import inspect
import pkgutil
import re

import numpy as np
import pytest

from minivae import estimator as est
from minivae.fast import kernels

RTOL = {np.float64: 1e-12, np.float32: 2e-5}
DTYPES = [np.float64, np.float32]
ACTS = sorted(kernels.ACT_CODES.items())
_JIT_ONLY = pytest.mark.skipif(not kernels.JIT_ENABLED, reason="threads exist only for jitted code")
# (rows, columns): small (serial branch) and above PARALLEL_MIN_SIZE (threaded branch)
SHAPES = [(7, 45), pytest.param((256, 1040), marks=_JIT_ONLY)]
SHAPES_FLAT = [(7, 45), pytest.param((2048, 2056), marks=_JIT_ONLY)]   # arithmetic-only kernels
assert 256 * 1040 >= kernels.PARALLEL_MIN_SIZE > 7 * 45 and 2048 * 2056 >= kernels.PARALLEL_MIN_SIZE_FLAT


def _close(actual, expected, rtol):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    assert np.isfinite(actual).all() == np.isfinite(expected).all()
    scale = float(np.abs(expected[np.isfinite(expected)]).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _both(kernel, *args):
    """Run kernel and twin on separate copies of ``args``; return (args after, result) for each."""
    out = []
    for f in (kernel, kernels.TWINS[kernel]):
        copies = [np.copy(a) if isinstance(a, np.ndarray) else a for a in args]
        out.append((copies, f(*copies)))
    return out


def _check(kernel, args, dtype):
    """Every array argument (inputs changed in place, outputs) and the result agree."""
    (a1, r1), (a2, r2) = _both(kernel, *args)
    for i, (u, v) in enumerate(zip(a1, a2)):
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype, f"argument {i} changed dtype"
            _close(u, v, RTOL[dtype])
    if r2 is not None:
        _close(r1, r2, RTOL[dtype])
    return a1, r1


def _empty(dtype, *shape):
    return np.full(shape, np.nan, dtype=dtype)  # NaN: an entry the kernel forgets to write shows


# --- the module's promises ------------------------------------------------------------------

def test_every_kernel_has_a_twin_with_the_same_signature():
    scalar_helpers = {"exp_", "tanh_", "log1p_unit"}
    jitted = {getattr(kernels, n) for n in kernels.__all__ if callable(getattr(kernels, n)) and n not in scalar_helpers}
    assert jitted == set(kernels.TWINS)
    for kernel, twin in kernels.TWINS.items():
        py = getattr(kernel, "py_func", kernel)
        assert inspect.signature(py) == inspect.signature(twin), py.__name__
        assert twin.__name__ == py.__name__ + "_numpy"


MODULES = [kernels] + [importlib.import_module(f"minivae.fast.kernels.{m.name}")
                       for m in pkgutil.iter_modules(kernels.__path__)]


def test_the_tests_below_read_every_kernel_module():
    names = {m.__name__.rsplit(".", 1)[1] for m in MODULES[1:]}
    assert names >= {"activations", "heads", "latent", "updates", "evaluation", "counts", "sparse", "elementary"}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_kernels_draw_no_random_numbers(module):
    source = inspect.getsource(module)
    assert "random" not in source.replace("draw no random numbers", "")


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_kernels_do_not_import_the_model(module):
    assert "model" not in {name for name, value in vars(module).items() if inspect.ismodule(value)}
    imports = [line for line in inspect.getsource(module).splitlines() if line.startswith(("import ", "from "))]
    assert imports and not [line for line in imports if re.search(r"\bmodel\b", line)]


# --- elementary functions ---------------------------------------------------------------------

def _ulps(actual, expected):
    return float((np.abs(actual - expected) / np.spacing(np.abs(expected))).max())


def test_exp_within_one_ulp_with_underflow_and_overflow():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.uniform(-708, 709, 20000), rng.standard_normal(5000), [0.0, -0.0, 1e-300, -1e-300]])
    out = np.empty_like(y)
    kernels.exp_array(y, out)
    assert _ulps(out, np.exp(y)) <= 1
    # subnormal results, underflow to 0 and overflow to inf, as NumPy gives them
    y = np.array([-709.5, -720.0, -740.0, -744.4, -745.2, -746.0, -1000.0, -1e300, 709.7, 709.8, 1000.0, 1e300])
    out = np.empty_like(y)
    with np.errstate(over="ignore"):  # (only the Python run of the kernel, NUMBA_DISABLE_JIT=1, warns)
        kernels.exp_array(y, out)
        expected = np.exp(y)
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    finite = np.isfinite(expected)
    assert np.all(np.abs(out[finite] - expected[finite]) <= np.spacing(expected[finite]))


def test_tanh_within_a_few_ulp_everywhere():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(5000) * s for s in (1e-300, 1e-8, 1e-3, 0.3, 1.0, 3.0, 10.0)]
                       + [np.linspace(-25.0, 25.0, 5001), [0.0, 1e4, -1e4, 1e300, -1e300, np.inf, -np.inf]])
    out = np.empty_like(x)
    kernels.tanh_array(x, out)
    assert _ulps(out, np.tanh(x)) <= 4
    assert np.signbit(out[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()


def test_log1p_on_the_unit_interval_within_a_few_ulp():
    rng = np.random.default_rng(2)
    e = np.concatenate([rng.random(20000), rng.random(2000) * 1e-10, np.exp(-rng.uniform(0, 740, 5000)),
                        [0.0, 1.0, 5e-324, 1e-17, 1.1102230246251565e-16, 2.3e-16, np.sqrt(2) - 1]])
    out = np.empty_like(e)
    kernels.log1p_unit_array(e, out)
    assert _ulps(out[e > 0], np.log1p(e[e > 0])) <= 3
    assert out[e == 0].tolist() == [0.0]


def _ulps32(actual, exact):
    """Error in float32 ulps of the exact (float64) value."""
    return float((np.abs(actual.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(np.float32))).max())


def test_float32_functions_within_a_few_float32_ulp():
    """A float32 model's kernels compute in float32 (twice the SIMD lanes) with their own polynomials."""
    rng = np.random.default_rng(14)
    x = np.concatenate([rng.standard_normal(5000) * s for s in (1e-30, 1e-4, 0.3, 1.0, 3.0, 10.0)]
                       + [np.linspace(-12, 12, 2001)]).astype(np.float32)
    out = np.empty_like(x)
    kernels.tanh_array(x, out)
    assert _ulps32(out, np.tanh(x.astype(np.float64))) <= 4
    y = np.concatenate([rng.uniform(-87, 88, 10000), rng.standard_normal(2000)]).astype(np.float32)
    out = np.empty_like(y)
    kernels.exp_array(y, out)
    assert _ulps32(out, np.exp(y.astype(np.float64))) <= 2
    y = np.array([-100.0, -103.9, -110.0, -1e30, 88.8, 1e30], np.float32)  # subnormal, 0 and inf ends
    out = np.empty_like(y)
    with np.errstate(over="ignore"):
        kernels.exp_array(y, out)
        np.testing.assert_array_equal(out, np.exp(y))
    e = np.concatenate([rng.random(10000), rng.random(1000) * 1e-6, np.exp(-rng.uniform(0, 100, 2000))]).astype(np.float32)
    out = np.empty_like(e)
    kernels.log1p_unit_array(e, out)
    assert _ulps32(out, np.log1p(e.astype(np.float64))) <= 3


# --- hidden layers --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=["serial", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("act_name,act", ACTS, ids=[n for n, _ in ACTS])
def test_bias_act(act_name, act, dtype, shape):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(shape) * 3).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    (a_after, _, _, h), _ = _check(kernels.bias_act, (a, b, act, _empty(dtype, *shape)), dtype)
    np.testing.assert_array_equal(a_after, a + b)                  # the pre-activation is kept
    assert np.isfinite(h).all()


@pytest.mark.parametrize("shape", SHAPES_FLAT, ids=["serial", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("act_name,act", ACTS, ids=[n for n, _ in ACTS])
def test_bias_act_backward(act_name, act, dtype, shape):
    rng = np.random.default_rng(4)
    a = (rng.standard_normal(shape) * 3).astype(dtype)
    h = np.empty_like(a)
    kernels.activations.bias_act_numpy(a, np.zeros(shape[1], dtype), act, h)
    dh = rng.standard_normal(shape).astype(dtype)
    (_, _, _, _, da, db), _ = _check(kernels.bias_act_backward, (dh, a, h, act, _empty(dtype, *shape),
                                                          _empty(dtype, shape[1])), dtype)
    _close(db, da.astype(np.float64).sum(axis=0), RTOL[dtype])


# --- decoder heads ---------------------------------------------------------------------------

@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=["serial", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_bernoulli_head(dtype, shape, L):
    rng = np.random.default_rng(5)
    M, D = shape
    x = rng.random((M, D))
    x[: M // 2] = x[: M // 2] < 0.5                                  # binary and grey rows
    a = (rng.standard_normal((L * M, D)) * 4).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    w = dtype(-1.0 / (M * L))
    args = (a, b, x.astype(dtype), w, _empty(dtype, L * M), _empty(dtype, L * M, D), _empty(dtype, D))
    _check(kernels.bernoulli_head, args, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_bernoulli_head_is_exact_for_extreme_logits(dtype):
    """No clipping: log p and its gradient stay finite and right for logits of any size."""
    big = 1e300 if dtype == np.float64 else 1e38
    t = np.array([big, -big, 1e30, -1e30, 1e4, -1e4, 1000, -1000, 745, -745, 710, -710, 89, -89,
                  40, -40, 36.7, -36.7, 17, -17, 1, -1, 1e-300, -1e-300, 0.0], dtype=dtype)
    for xv in (0.0, 1.0, 0.25):
        x = np.full((1, t.size), xv, dtype=dtype)
        args = (t[None, :].copy(), np.zeros(t.size, dtype), x, dtype(-1.0),
                _empty(dtype, 1), _empty(dtype, 1, t.size), _empty(dtype, t.size))
        (_, _, _, _, ll, da, db), _ = _check(kernels.bernoulli_head, args, dtype)
        assert np.isfinite(ll).all() and np.isfinite(da).all()
        # the gradient of -log p is sigmoid(t) - x: exactly 1 - x and -x at the two ends
        assert da[0, 0] == dtype(1.0 - xv) and da[0, 1] == dtype(-xv)
    # each log p term alone: x = 1 gives -softplus(-t), which is -|t| for very negative t
    x = np.ones((1, 2), dtype)
    ll = np.empty(1, dtype)
    kernels.bernoulli_head(np.array([[-1e4, 1e4]], dtype), np.zeros(2, dtype), x, dtype(-1.0), ll,
                     np.empty((1, 2), dtype), np.empty(2, dtype))
    assert ll[0] == dtype(-1e4)


@pytest.mark.parametrize("sigmoid_mean", [True, False], ids=["sigmoid-mean", "linear-mean"])
@pytest.mark.parametrize("shape", SHAPES, ids=["serial", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_gaussian_head(dtype, shape, sigmoid_mean):
    rng = np.random.default_rng(6)
    M, D = shape
    L = 2
    am, alv = (rng.standard_normal((2, L * M, D)) * 2).astype(dtype)
    bm, blv = rng.standard_normal((2, D)).astype(dtype)
    x = rng.random((M, D)).astype(dtype)
    args = (am, bm, alv, blv, x, sigmoid_mean, dtype(-1.0 / (M * L)), _empty(dtype, L * M),
            _empty(dtype, L * M, D), _empty(dtype, L * M, D), _empty(dtype, D), _empty(dtype, D))
    _check(kernels.gaussian_head, args, dtype)


# --- reparameterisation and KL ------------------------------------------------------------------

def _heads_and_eps(dtype, M=9, J=4, L=3, seed=7):
    rng = np.random.default_rng(seed)
    heads = np.concatenate([rng.standard_normal((M, J)), rng.standard_normal((M, J)) - 1.0], axis=1).astype(dtype)
    b_mu, b_lv = (0.3 * rng.standard_normal((2, J))).astype(dtype)
    eps = rng.standard_normal((L, M, J)).astype(dtype)
    return heads, b_mu, b_lv, eps


@pytest.mark.parametrize("estimator_a", [False, True], ids=["B", "A"])
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_reparameterize_kl(dtype, L, estimator_a):
    heads, b_mu, b_lv, eps = _heads_and_eps(dtype, L=L)
    M, J = heads.shape[0], heads.shape[1] // 2
    args = (heads, b_mu, b_lv, eps, estimator_a, _empty(dtype, L * M, J), _empty(dtype, M), _empty(dtype, L * M))
    (heads_after, _, _, _, _, z, kl, log_ratio), _ = _check(kernels.reparameterize_kl, args, dtype)
    if estimator_a:                            # only the term the estimator uses is written
        assert np.isnan(kl).all() and np.isfinite(log_ratio).all()
    else:
        assert np.all(kl >= 0) and np.isnan(log_ratio).all()
    # z really is mu + sigma * eps with sigma = exp(log_var / 2) (not exp(log_var))
    mu, lv = heads_after[:, :J].astype(np.float64), heads_after[:, J:].astype(np.float64)
    _close(z.reshape(L, M, J), mu + np.exp(0.5 * lv) * eps, RTOL[dtype])


@pytest.mark.parametrize("estimator_a", [False, True], ids=["B", "A"])
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_reparameterize_kl_backward(dtype, L, estimator_a):
    heads, b_mu, b_lv, eps = _heads_and_eps(dtype, L=L, seed=8)
    M, J = heads.shape[0], heads.shape[1] // 2
    z = np.empty((L * M, J), dtype)
    kernels.latent.reparameterize_kl_numpy(heads, b_mu, b_lv, eps, estimator_a, z, np.empty(M, dtype),
                                           np.empty(L * M, dtype))
    dz = np.random.default_rng(9).standard_normal((L * M, J)).astype(dtype)
    dout = dtype(-1.0 / M)
    args = (dz, eps, heads, z, dout, dout / L, estimator_a, _empty(dtype, M, 2 * J), _empty(dtype, J), _empty(dtype, J))
    _check(kernels.reparameterize_kl_backward, args, dtype)


# --- optimisers --------------------------------------------------------------

SIZES = [37, pytest.param(kernels.PARALLEL_MIN_SIZE_FLAT + 1001, marks=_JIT_ONLY)]


@pytest.mark.parametrize("n", SIZES, ids=["serial", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_optimizer_steps(dtype, n):
    rng = np.random.default_rng(11)
    p, g = rng.standard_normal((2, n)).astype(dtype)
    G, v = (rng.random((2, n)) + 0.01).astype(dtype)
    m = (0.1 * rng.standard_normal(n)).astype(dtype)
    for decay in (0.0, 1 / 60000, 0.5):
        _check(kernels.sgd_step, (p, g, 0.1, decay), dtype)
        _check(kernels.adagrad_step, (p, g, G, 0.02, 1e-10, decay), dtype)
        _check(kernels.adam_step, (p, g, m, v, 3, 1e-3, 0.9, 0.999, 1e-8, decay), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_optimizer_parts(dtype):
    """sgd_part, adagrad_part and adam_part against their twins, and each equal to the whole-array
    kernel on its range (so two halves make one whole update); outside the range nothing changes."""
    rng = np.random.default_rng(12)
    n, lo, hi = 41, 9, 30
    p, g = rng.standard_normal((2, n)).astype(dtype)
    G, v = (rng.random((2, n)) + 0.01).astype(dtype)
    m = (0.1 * rng.standard_normal(n)).astype(dtype)
    cases = [(kernels.sgd_part, kernels.sgd_step, (p, g), (0.1, 0.5)),
             (kernels.adagrad_part, kernels.adagrad_step, (p, g, G), (0.02, 1e-10, 0.5)),
             (kernels.adam_part, kernels.adam_step, (p, g, m, v), (3, 1e-3, 0.9, 0.999, 1e-8, 0.5))]
    for part, whole, arrays, scalars in cases:
        after, _ = _check(part, arrays + scalars + (lo, hi), dtype)
        ranged = [a[lo:hi].copy() for a in arrays]
        whole(*ranged, *scalars)
        for a_before, a_after, a_whole in zip(arrays, after, ranged):
            np.testing.assert_array_equal(a_after[lo:hi], a_whole)
            np.testing.assert_array_equal(a_after[:lo], a_before[:lo])
            np.testing.assert_array_equal(a_after[hi:], a_before[hi:])


def test_optimizer_kernels_update_in_place():
    p, g, G = np.ones(5), np.full(5, 0.5), np.zeros(5)
    kernels.adagrad_step(p, g, G, 0.1, 0.0, 0.0)
    np.testing.assert_allclose(p, 0.9, rtol=1e-15)               # the first Adagrad step is lr * sign(g)
    np.testing.assert_allclose(G, 0.25, rtol=1e-15)
    np.testing.assert_array_equal(g, 0.5)                        # the gradient is only read
    kernels.adagrad_step(p, g, G, 0.1, 0.0, 1.0)                       # g' = 0.5 + 0.9 = 1.4; G = 0.25 + 1.96
    np.testing.assert_allclose(G, 2.21, rtol=1e-15)
    np.testing.assert_allclose(p, 0.9 - 0.1 * 1.4 / np.sqrt(2.21), rtol=1e-15)
    np.testing.assert_array_equal(g, 0.5)


# --- data check ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_count_bad(dtype):
    x = np.random.default_rng(12).random((10, 7)).astype(dtype)
    assert kernels.count_bad(x, 0.0, 1.0) == kernels.counts.count_bad_numpy(x, 0.0, 1.0) == 0
    x[2, 3], x[4, 4], x[5, 5], x[6, 6] = np.nan, 2.0, -np.inf, -0.5
    assert kernels.count_bad(x, 0.0, 1.0) == kernels.counts.count_bad_numpy(x, 0.0, 1.0) == 4
    assert kernels.count_bad(x, -np.inf, np.inf) == kernels.counts.count_bad_numpy(x, -np.inf, np.inf) == 2


# --- results do not depend on the number of threads -------------------------------------------------

@pytest.mark.skipif(not kernels.JIT_ENABLED, reason="threads exist only for jitted code")
def test_results_do_not_depend_on_the_thread_count():
    import numba

    rng = np.random.default_rng(13)
    R, D = 256, 1040
    a, b, x = rng.standard_normal((R, D)), rng.standard_normal(D), rng.random((R, D))
    p = rng.standard_normal(kernels.PARALLEL_MIN_SIZE_FLAT * 2)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            ll, da, db = np.empty(R), np.empty((R, D)), np.empty(D)
            kernels.bernoulli_head(a, b, x, -0.01, ll, da, db)
            q, G = p.copy(), np.ones_like(p)
            kernels.adagrad_step(q, np.ones_like(p), G, 0.1, 1e-10, 0.1)
            results.append((ll, da, db, q, G))
    finally:
        numba.set_num_threads(before)
    for first, other in zip(results[0], results[-1]):
        np.testing.assert_array_equal(first, other)


@pytest.mark.parametrize("twin,readable", [
    (kernels.updates.sgd_step_numpy, "sgd_update"), (kernels.updates.adagrad_step_numpy, "adagrad_update"),
    (kernels.updates.adam_step_numpy, "adam_update"),
    (kernels.activations.bias_act_numpy, "ACTIVATIONS"), (kernels.activations.bias_act_backward_numpy, "ACTIVATIONS"),
    (kernels.heads.bernoulli_head_numpy, "bernoulli_log_likelihood_grad"),
    (kernels.heads.gaussian_head_numpy, "gaussian_log_likelihood_grad"),
    (kernels.latent.reparameterize_kl_numpy, "est.reparameterize"),
    (kernels.latent.reparameterize_kl_backward_numpy, "estimator_a_backward"),
])
def test_twins_are_built_from_the_readable_functions(twin, readable):
    """A twin calls the readable code (so the kernel is held to what trains), not a copy of its arithmetic."""
    assert readable in inspect.getsource(twin)
    for kernel_twin in (kernels.updates.sgd_step_numpy, kernels.updates.adagrad_step_numpy,
                        kernels.updates.adam_step_numpy):
        assert "decayed_gradient" in inspect.getsource(kernel_twin)


# --- forward only: the evaluation's kernels ------------------------------------------------------

@pytest.mark.parametrize("r0", [0, 5])
@pytest.mark.parametrize("shape", SHAPES, ids=["serial", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_bernoulli_ll(dtype, shape, r0):
    """A block of rows r0, r0 + 1, ... of the sample-major decoder output, row i reading x[(r0 + i) % M]."""
    rng = np.random.default_rng(15)
    R, D = shape
    M = 3 if R < 100 else 100
    x = rng.random((M, D))
    x[: M // 2] = x[: M // 2] < 0.5
    a = (rng.standard_normal((R, D)) * 4).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    (_, _, _, _, ll), _ = _check(kernels.bernoulli_ll, (a, b, x.astype(dtype), r0, _empty(dtype, R)), dtype)
    # the same numbers as the training kernel's log-likelihood (which also computes the gradient)
    ll_train = np.empty(R, dtype)
    xs = x.astype(dtype)[(r0 + np.arange(R)) % M]
    kernels.bernoulli_head(a, b, xs, dtype(-1.0), ll_train, np.empty((R, D), dtype), np.empty(D, dtype))
    _close(ll, ll_train, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_bernoulli_ll_is_exact_for_extreme_logits(dtype):
    big = 1e300 if dtype == np.float64 else 1e38
    t = np.array([[-1e4, 1e4, big, -big, 0.0]], dtype)
    ll = np.empty(1, dtype)
    kernels.bernoulli_ll(t, np.zeros(5, dtype), np.array([[1.0, 1.0, 1.0, 0.0, 1.0]], dtype), 0, ll)
    assert ll[0] == dtype(-1e4 - np.log(2.0))                  # -softplus(1e4) ... exactly: -1e4, 0, 0, 0, -log 2


@pytest.mark.parametrize("sigmoid_mean", [True, False], ids=["sigmoid-mean", "linear-mean"])
@pytest.mark.parametrize("shape", SHAPES, ids=["serial", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_gaussian_ll(dtype, shape, sigmoid_mean):
    rng = np.random.default_rng(16)
    R, D = shape
    M = 4
    am, alv = (rng.standard_normal((2, R, D)) * 2).astype(dtype)
    bm, blv = rng.standard_normal((2, D)).astype(dtype)
    x = rng.random((M, D)).astype(dtype)
    args = (am, bm, alv, blv, x, sigmoid_mean, 3, _empty(dtype, R))
    _check(kernels.gaussian_ll, args, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_log_mean_exp_accumulate(dtype):
    """Chunk after chunk, the running log sum_k w_k of the importance-sampled log p(x)."""
    rng = np.random.default_rng(17)
    k, M = 300, 7
    log_w = (rng.standard_normal((k, M)) * 30 - 100).astype(dtype)
    log_w[:, 3] = -np.inf                                         # every weight 0: log(0) = -inf, no NaN
    log_w[5, 4] = 700.0                                           # one dominant weight: exp would overflow unshifted
    total = np.full(M, -np.inf)
    for chunk in (log_w[:120], log_w[120:]):                      # two chunks, a -inf start, then a finite one
        (_, total_kernel), _ = _check(kernels.log_mean_exp_accumulate, (chunk, total), np.float64)
        total = total_kernel
    assert total[3] == -np.inf and np.isfinite(np.delete(total, 3)).all()
    # the meaning: log sum_k exp(log_w), against a sum taken in extended precision
    ref = np.log(np.sum(np.exp(log_w[:, [0, 1, 2, 5, 6]].astype(np.longdouble)), axis=0))
    np.testing.assert_allclose(total[[0, 1, 2, 5, 6]], ref.astype(np.float64), rtol=1e-13)
    assert abs(total[4] - 700.0) < 1e-12                          # the other weights are nothing beside e^700


# --- a sparse input --------------------------------------------------------------------------------

def _sparse_x(dtype, M=13, D=47, density=0.2, seed=17):
    rng = np.random.default_rng(seed)
    x = (rng.random((M, D)) * (rng.random((M, D)) < density)).astype(dtype)
    x[7, :] = rng.random(D)                             # a full row: the four-at-a-time loop and its rest
    x[3], x[:, 5] = 0, 0                                # an empty row and an empty column
    return x


def _index_arrays(x):
    M, D = x.shape
    z = lambda n, t: np.zeros(n, t)  # noqa: E731 - zeros: both write only the first nnz entries
    return [z(M + 1, np.int64), z(M * D, np.int32), z(M * D, x.dtype),
            z(D + 1, np.int64), z(M * D, np.int32), z(M * D, x.dtype)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sparse_index(dtype):
    x = _sparse_x(dtype)
    (_, rptr, rcol, rval, cptr, crow, cval), n = _check(kernels.sparse_index, (x, *_index_arrays(x)), dtype)
    assert n == np.count_nonzero(x)
    for m in range(len(x)):                             # row m, from either index, is x's row m
        row = np.zeros(x.shape[1], dtype)
        row[rcol[rptr[m]:rptr[m + 1]]] = rval[rptr[m]:rptr[m + 1]]
        np.testing.assert_array_equal(row, x[m])
    for d in range(x.shape[1]):
        col = np.zeros(len(x), dtype)
        col[crow[cptr[d]:cptr[d + 1]]] = cval[cptr[d]:cptr[d + 1]]
        np.testing.assert_array_equal(col, x[:, d])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sparse_index_is_its_row_half_then_its_column_half(dtype):
    """sparse_rows then sparse_columns against their twins, and together sparse_index's arrays;
    count_nonzero is the count."""
    x = _sparse_x(dtype)
    whole = _index_arrays(x)
    n = kernels.sparse_index(x, *whole)
    (_, rptr, rcol, rval), m = _check(kernels.sparse_rows, (x, *_index_arrays(x)[:3]), dtype)
    (_, _, _, cptr, crow, cval), _ = _check(kernels.sparse_columns, (rptr, rcol, rval, *_index_arrays(x)[3:]), dtype)
    assert m == n == kernels.count_nonzero(x) == kernels.counts.count_nonzero_numpy(x) == np.count_nonzero(x)
    for a, b in zip((rptr, rcol, rval, cptr, crow, cval), whole):
        np.testing.assert_array_equal(a[:n + 1], b[:n + 1])


# (M, D, C): small, and MNIST's first layer (too slow as Python: with the JIT only)
SPARSE_SHAPES = [(13, 47, 29), pytest.param((100, 784, 500), marks=_JIT_ONLY)]


@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=["small", "mnist"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sparse_matmul_is_the_dense_product(dtype, shape):
    M, D, C = shape
    x = _sparse_x(dtype, M, D)
    rptr, rcol, rval, cptr, crow, cval = _index_arrays(x)
    kernels.sparse_index(x, rptr, rcol, rval, cptr, crow, cval)
    rng = np.random.default_rng(18)
    W, G = rng.standard_normal((D, C)).astype(dtype), rng.standard_normal((M, C)).astype(dtype)
    (*_, out), _ = _check(kernels.sparse_matmul, (rptr, rcol, rval, W, _empty(dtype, M, C)), dtype)
    _close(out, x.astype(np.float64) @ W, RTOL[dtype])
    assert not out[3].any()                             # the empty row
    (*_, out_t), _ = _check(kernels.sparse_matmul_t, (cptr, crow, cval, G, _empty(dtype, D, C)), dtype)
    _close(out_t, x.T.astype(np.float64) @ G, RTOL[dtype])
    assert not out_t[5].any()                           # the empty column's row of x.T @ G


@pytest.mark.parametrize("shape", SPARSE_SHAPES, ids=["small", "mnist"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sparse_products_by_rows_need_no_index_and_give_the_indexed_numbers(dtype, shape):
    """sparse_matmul_rows and sparse_matmul_t_rows (the two-thread step's: each thread reads its rows of x,
    or its columns) against their twins; in two halves, bit for bit the indexed kernels' results; rows
    outside the range are left as they were."""
    M, D, C = shape
    x = _sparse_x(dtype, M, D)
    index = _index_arrays(x)
    kernels.sparse_index(x, *index)
    rng = np.random.default_rng(19)
    W, G = rng.standard_normal((D, C)).astype(dtype), rng.standard_normal((M, C)).astype(dtype)
    whole, whole_t = np.empty((M, C), dtype), np.empty((D, C), dtype)
    kernels.sparse_matmul(*index[:3], W, whole)
    kernels.sparse_matmul_t(*index[3:], G, whole_t)
    out, out_t = _empty(dtype, M, C), _empty(dtype, D, C)
    out = _check(kernels.sparse_matmul_rows, (x, W, out, 0, M // 2), dtype)[0][2]
    assert np.isnan(out[M // 2:]).all()                 # only the rows asked for
    kernels.sparse_matmul_rows(x, W, out, M // 2, M)
    np.testing.assert_array_equal(out, whole)
    out_t = _check(kernels.sparse_matmul_t_rows, (x, G, out_t, D // 2, D), dtype)[0][2]
    assert np.isnan(out_t[:D // 2]).all()
    kernels.sparse_matmul_t_rows(x, G, out_t, 0, D // 2)
    np.testing.assert_array_equal(out_t, whole_t)
    _close(out_t, x.T.astype(np.float64) @ G, RTOL[dtype])


@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("estimator_a", [False, True], ids=["B", "A"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_elbo_from_terms_is_the_estimator(dtype, estimator_a, L):
    """Against its twin, and the meaning: estimator B bit for bit as ``estimator.estimator_b`` from the
    same log-likelihoods and the KL; estimator A as ``estimator.estimator_a`` (the same terms, added
    in another order)."""
    M, J = 11, 3
    rng = np.random.default_rng(23)
    mu, lv = rng.standard_normal((M, J)).astype(dtype), rng.standard_normal((M, J)).astype(dtype)
    z = (mu + np.exp(lv / 2) * rng.standard_normal((L, M, J))).astype(dtype)
    ll = (-50 * rng.random((L, M))).astype(dtype)
    kl = est.kl_standard_normal(mu, lv)
    log_ratio = (est.log_standard_normal(z) - est.log_diag_gaussian(z, mu, lv)).reshape(-1)
    elbo = _check(kernels.elbo_from_terms, (ll.reshape(-1), kl, log_ratio, estimator_a, _empty(dtype, M)), dtype)[0][-1]
    if estimator_a:
        _close(elbo, est.estimator_a(ll, z, mu, lv), RTOL[dtype])
    else:
        np.testing.assert_array_equal(elbo, est.estimator_b(ll, mu, lv))
