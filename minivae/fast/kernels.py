"""Numba kernels for one training step, each with a NumPy twin of the same signature.

The readable code is in :mod:`minivae.layers`, :mod:`minivae.estimator`,
:mod:`minivae.model` and :mod:`minivae.optim`; this module is its fast twin
(beside it, never inside it: nothing readable imports this package). Each jitted kernel ``k`` has a reference ``k_numpy``
built from the readable functions, with the same arguments and the same
effect, and ``TWINS`` pairs them for the tests (``tests/test_kernels.py``).
The kernels know nothing of the model: they take arrays and write into
arrays the caller owns, so a training step allocates nothing large. They
draw no random numbers: ``eps`` always comes from outside.

What is fused (one pass over the data each):

- ``bias_act``: bias add and activation, ``a += b; h = act(a)``.
- ``bias_act_backward``: activation derivative and the bias gradient (column sum).
- ``bernoulli_head``: bias add, log p(x|z) from the logits and its gradient,
  and the bias gradient (Appendix C.1); exact for any logit, no clipping.
- ``gaussian_head``: the same for the Gaussian decoder (Appendix C.2).
- ``reparameterize_kl``: the encoder heads' bias, z = mu + sigma * eps, and the
  analytic KL (Appendix B, estimator B) or log p(z) - log q(z|x) (estimator A).
- ``reparameterize_kl_backward``: dz through the reparameterisation, plus the
  KL (estimator B) or log p(z) - log q(z|x) (estimator A) terms, and the
  heads' bias gradients.
- ``sgd_step``, ``adagrad_step``, ``adam_step``: in-place updates with the weight
  decay added to the gradient, one pass; ``sgd_part``, ``adagrad_part``,
  ``adam_part``: the same for a range of elements, on the calling thread alone.
- ``count_bad``: finite and in-range data check without a temporary;
  ``count_nonzero``: the nonzero entries (np.count_nonzero is 5x slower on float32).
- ``sparse_index`` (``sparse_rows`` then ``sparse_columns``), ``sparse_matmul``,
  ``sparse_matmul_t``: the two products with a mostly-zero input x (``x @ W``
  and ``x.T @ G``) from an index of its nonzero entries, built once per minibatch;
  ``sparse_matmul_rows``, ``sparse_matmul_t_rows``: the same numbers for a range of
  rows of the product, reading x itself (the two-thread step: one range per thread).
- ``elbo_from_terms``: the bound per datapoint (estimator A or B) from the
  log-likelihoods, the KL or log p(z) - log q(z|x).

Other matrix products are *not* jitted: the model calls NumPy's BLAS (OpenBLAS
here) as ``np.matmul(a, b, out=buffer)``, with transposes passed as views
(``h.T``), which BLAS reads without a copy. A jitted loop (i-k-j order,
vectorised, fastmath) takes 2.3 ms for the 100 x 784 x 500 float32 product on
one core, OpenBLAS 0.78 ms (float64: 4.4 and 1.5 ms); ``np.dot`` inside Numba
would call SciPy's second copy of OpenBLAS, with its own thread pool. The
products are the floor of a step (see ``docs/performance.md``); everything
else is in the kernels below.

Transcendental functions: without Intel SVML, Numba calls the scalar libm
``tanh``/``exp``/``log1p``, which are 10-40x slower than NumPy's SIMD loops.
``exp_``, ``tanh_`` and ``log1p_unit`` here are written with arithmetic only
(Cody-Waite range reduction and polynomials, fdlibm's log coefficients) so
LLVM vectorises them; they are within a few ulp of NumPy in float64 (tested).
A float32 model's kernels compute in float32 (twice the SIMD lanes), with
float32 versions of the three functions (shorter polynomials, within a few
float32 ulp); sums of many terms (log-likelihoods, the parameter prior) are
accumulated in float64.

Threads: a Numba thread launch costs 20-50 us here, and for the paper's
MNIST step one thread per kernel (with OpenBLAS's two for the products) was
measured faster over a whole step than two. So kernels run serially below
``PARALLEL_MIN_SIZE`` elements (``PARALLEL_MIN_SIZE_FLAT`` for the
arithmetic-only, memory-bound ones), adding rows in order as ``a.sum(axis=0)``
does; larger arrays are split into a fixed number of row chunks, each with its
own partial column sum, so results never depend on the thread count. Numba's
"workqueue" layer is the default (``NUMBA_THREADING_LAYER`` overrides it): the
OpenMP layer's idle threads spin and fight OpenBLAS's for the cores (a launch
took 4-8 ms instead of 1.4 us on a busy machine). The workqueue layer does not
let two Python threads run parallel kernels at the same time.
"""

from __future__ import annotations

import math

import numpy as np

from .. import estimator as est
from ..evaluate import logmeanexp
from ..layers import ACTIVATIONS
from ..optim import adagrad_update, adam_update, decayed_gradient, sgd_update
from ..run.threads import choose_threading_layer

try:  # numba is a dependency; without it the kernels still run, as (slow) Python
    import numba
    from numba import njit, prange
    _DISABLE_JIT = bool(numba.config.DISABLE_JIT)
    choose_threading_layer(numba)  # workqueue unless NUMBA_THREADING_LAYER says otherwise (module docstring)
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None
    _DISABLE_JIT = True
    prange = range

    def njit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f

__all__ = [
    "ACT_CODES", "TWINS", "JIT_ENABLED",
    "bias_act", "bias_act_backward", "bernoulli_head", "gaussian_head",
    "reparameterize_kl", "reparameterize_kl_backward", "elbo_from_terms",
    "sgd_step", "adagrad_step", "adam_step", "sgd_part", "adagrad_part", "adam_part", "count_bad",
    "sparse_index", "sparse_rows", "sparse_columns", "sparse_matmul", "sparse_matmul_t", "count_nonzero",
    "sparse_matmul_rows", "sparse_matmul_t_rows",
    "bernoulli_ll", "gaussian_ll", "log_mean_exp_accumulate",
    "exp_", "tanh_", "log1p_unit", "exp_array", "tanh_array", "log1p_unit_array",
]

JIT_ENABLED = not _DISABLE_JIT

# cache: compiled code is kept on disk; error_model="numpy": a / 0 gives inf
# instead of raising, which is also what lets LLVM vectorise loops with a division.
_OPTS = dict(cache=True, error_model="numpy", nogil=True)

IDENTITY, TANH, SIGMOID, RELU, SOFTPLUS = 0, 1, 2, 3, 4
ACT_CODES = {"identity": IDENTITY, "tanh": TANH, "sigmoid": SIGMOID, "relu": RELU, "softplus": SOFTPLUS}
ACT_NAMES = {code: name for name, code in ACT_CODES.items()}

_CHUNKS = 8         # row chunks (and blocks of flat arrays): a fixed number, so results
_MAX_BLOCKS = _CHUNKS  # do not depend on the thread count
# Smaller arrays run on one thread (see the module docstring).
PARALLEL_MIN_SIZE = 262144        # kernels with exp / tanh / log1p (1-5 ns per element)
PARALLEL_MIN_SIZE_FLAT = 4194304  # arithmetic-only kernels (0.2-1 ns per element, memory-bound)


# --- vectorisable elementary functions ----------------------------------------------
#
# float64: exp_, tanh_, log1p_unit (within a few ulp of NumPy). float32: the same
# algorithms with float32 constants and shorter polynomials (within a few float32
# ulp), twice as many SIMD lanes. _exp, _tanh and _log1p_unit pick the one of their
# argument's precision; kernels call those.

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01   # ln 2 split in two (fdlibm): k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951
# exp(r) - 1 on |r| <= ln(2)/2 by its Taylor series to r^13: truncation error < 1e-17
_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13 = (1.0 / math.factorial(k) for k in range(2, 14))
# log(1 + f) = f - s (f - R(s^2)), s = f / (2 + f): fdlibm e_log.c, error < 1 ulp
_LG1, _LG2, _LG3, _LG4 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01, 2.222219843214978396e-01
_LG5, _LG6, _LG7 = 1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01

_f4 = np.float32
_LOG2E_F, _LN2_HI_F, _LN2_LO_F = _f4(_LOG2E), _f4(6.9314575195e-01), _f4(1.4286067653e-06)  # FreeBSD e_expf.c
_LN2_HI_LOGF, _LN2_LO_LOGF = _f4(6.9313812256e-01), _f4(9.0580006145e-06)                # FreeBSD e_logf.c
_F2, _F3, _F4, _F5, _F6, _F7 = (_f4(1.0 / math.factorial(k)) for k in range(2, 8))     # Taylor to r^7: < 6e-9
_LGF1, _LGF2 = _f4(0xAAAAAA / 2.0**24), _f4(0xCCCE13 / 2.0**25)                          # FreeBSD e_logf.c
_LGF3, _LGF4 = _f4(0x91E9EE / 2.0**25), _f4(0xF89E26 / 2.0**26)
_ZERO_F, _HALF_F, _ONE_F, _TWO_F, _SQRT2_F = _f4(0.0), _f4(0.5), _f4(1.0), _f4(2.0), _f4(_SQRT2)

if _DISABLE_JIT:
    def _pow2(n):
        """2.0 ** n for an integer -1022 <= n <= 1023."""
        return math.ldexp(1.0, int(n))

    def _pow2_f(n):
        """np.float32(2.0 ** n) for an integer -126 <= n <= 127."""
        return _f4(math.ldexp(1.0, int(n)))
else:
    from llvmlite import ir as _llvm_ir
    from numba import types as _nb_types
    from numba.extending import intrinsic, overload

    @intrinsic
    def _bits_as_float64(typingctx, bits):
        """Reinterpret the 64 bits of an int64 as a float64 (a no-op LLVM bitcast)."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _llvm_ir.DoubleType())
        return _nb_types.float64(_nb_types.int64), codegen

    @intrinsic
    def _bits_as_float32(typingctx, bits):
        """Reinterpret the 32 bits of an int32 as a float32."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _llvm_ir.FloatType())
        return _nb_types.float32(_nb_types.int32), codegen

    @njit(**_OPTS)
    def _pow2(n):
        """2.0 ** n for an integer -1022 <= n <= 1023, built from its exponent bits."""
        return _bits_as_float64((n + 1023) << 52)

    @njit(**_OPTS)
    def _pow2_f(n):
        """np.float32(2.0 ** n) for an integer -126 <= n <= 127, built from its exponent bits."""
        return _bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(**_OPTS)
def _exp_reduce(y):
    """y = k ln 2 + r with |r| <= ln(2)/2; returns (k as a float, exp(r) - 1)."""
    k = np.floor(y * _LOG2E + 0.5)
    r = (y - k * _LN2_HI) - k * _LN2_LO
    p = _E12 + r * _E13                          # Horner, from the highest power down
    p = _E11 + r * p
    p = _E10 + r * p
    p = _E9 + r * p
    p = _E8 + r * p
    p = _E7 + r * p
    p = _E6 + r * p
    p = _E5 + r * p
    p = _E4 + r * p
    p = _E3 + r * p
    p = _E2 + r * p
    return k, r * (1.0 + r * p)


@njit(**_OPTS)
def exp_(y):
    """exp(y) for a float64, within 1 ulp; 0 below -745, inf above 709.78 (no NaN input)."""
    y = min(max(y, -1100.0), 710.0)
    k, q = _exp_reduce(y)
    n = np.int64(k)
    n1 = n >> 1                                  # 2^n as 2^n1 * 2^(n - n1): both normal numbers,
    return ((1.0 + q) * _pow2(n1)) * _pow2(n - n1)  # so subnormal and overflowing results come out right


@njit(**_OPTS)
def tanh_(x):
    """tanh(x) = expm1(2|x|) / (expm1(2|x|) + 2), signed; within a few ulp for every x."""
    y = min(2.0 * abs(x), 40.0)                  # tanh(20) is 1.0 in float64
    k, q = _exp_reduce(y)
    s = _pow2(np.int64(k))
    em = s * q + (s - 1.0)                       # expm1(y), accurate also for tiny y (then k = 0)
    return math.copysign(em / (em + 2.0), x)


@njit(**_OPTS)
def _log_1_2(u):
    """log(u) for 1 <= u <= 2 (fdlibm's algorithm, without the special cases)."""
    big = u > _SQRT2
    dk = 1.0 if big else 0.0
    f = (u * 0.5 if big else u) - 1.0            # in [sqrt(2)/2 - 1, sqrt(2) - 1]
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    R = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7))) + w * (_LG2 + w * (_LG4 + w * _LG6))
    hfsq = 0.5 * f * f
    return dk * _LN2_HI - ((hfsq - (s * (hfsq + R) + dk * _LN2_LO)) - f)


@njit(**_OPTS)
def log1p_unit(e):
    """log(1 + e) for 0 <= e <= 1, within a few ulp (Kahan: log(u) * e / (u - 1), u = 1 + e)."""
    u = 1.0 + e
    d = u - 1.0                                  # exact
    tiny = d == 0.0
    r = _log_1_2(u) * (e / (1.0 if tiny else d))
    return e if tiny else r


@njit(**_OPTS)
def _exp_reduce_f(y):
    """float32 :func:`_exp_reduce`."""
    k = np.floor(y * _LOG2E_F + _HALF_F)
    r = (y - k * _LN2_HI_F) - k * _LN2_LO_F
    p = _F6 + r * _F7
    p = _F5 + r * p
    p = _F4 + r * p
    p = _F3 + r * p
    p = _F2 + r * p
    return k, r * (_ONE_F + r * p)


@njit(**_OPTS)
def _exp_f(y):
    """float32 :func:`exp_`: 0 below -104, inf above 88.73."""
    y = min(max(y, _f4(-110.0)), _f4(89.0))
    k, q = _exp_reduce_f(y)
    n = np.int32(k)
    n1 = n >> np.int32(1)
    return ((_ONE_F + q) * _pow2_f(n1)) * _pow2_f(n - n1)


@njit(**_OPTS)
def _tanh_f(x):
    """float32 :func:`tanh_`."""
    y = min(_TWO_F * abs(x), _f4(20.0))        # tanh(10) is 1.0 in float32
    k, q = _exp_reduce_f(y)
    s = _pow2_f(np.int32(k))
    em = s * q + (s - _ONE_F)
    return _f4(math.copysign(em / (em + _TWO_F), x))


@njit(**_OPTS)
def _log1p_unit_f(e):
    """float32 :func:`log1p_unit` (FreeBSD logf's polynomial)."""
    u = _ONE_F + e
    d = u - _ONE_F
    tiny = d == _ZERO_F
    big = u > _SQRT2_F
    dk = _ONE_F if big else _ZERO_F
    f = (u * _HALF_F if big else u) - _ONE_F
    s = f / (_TWO_F + f)
    z = s * s
    w = z * z
    R = z * (_LGF1 + w * _LGF3) + w * (_LGF2 + w * _LGF4)
    hfsq = _HALF_F * f * f
    log_u = dk * _LN2_HI_LOGF - ((hfsq - (s * (hfsq + R) + dk * _LN2_LO_LOGF)) - f)
    r = log_u * (e / (_ONE_F if tiny else d))
    return e if tiny else r


# Precision dispatch: float32 arguments get the float32 functions. As Python
# (NUMBA_DISABLE_JIT=1) by isinstance; jitted, by an overload on the argument's type.

def _exp(y):
    return _exp_f(y) if isinstance(y, np.float32) else exp_(y)


def _tanh(x):
    return _tanh_f(x) if isinstance(x, np.float32) else tanh_(x)


def _log1p_unit(e):
    return _log1p_unit_f(e) if isinstance(e, np.float32) else log1p_unit(e)


if not _DISABLE_JIT:
    def _by_precision(python_func, f64, f32):
        @overload(python_func)
        def _typed(x):
            return (lambda x: f32(x)) if x == _nb_types.float32 else (lambda x: f64(x))

    _by_precision(_exp, exp_, _exp_f)
    _by_precision(_tanh, tanh_, _tanh_f)
    _by_precision(_log1p_unit, log1p_unit, _log1p_unit_f)


@njit(**_OPTS)
def _sigmoid_from(t, e, one):
    """sigmoid(t) given e = exp(-|t|), as :func:`minivae.layers.sigmoid` writes it (one: 1 in t's dtype)."""
    return (one if t >= 0 else e) / (one + e)


@njit(**_OPTS)
def _sigmoid(t, one):
    return _sigmoid_from(t, _exp(-abs(t)), one)


@njit(**_OPTS)
def _softplus(t, zero):
    """log(1 + exp(t)) = max(t, 0) + log1p(exp(-|t|)), as np.logaddexp(0, t) computes it."""
    return max(t, zero) + _log1p_unit(_exp(-abs(t)))


@njit(**_OPTS)
def exp_array(a, out):
    """out = exp(a) elementwise, 1-D, in a's precision (to test the elementary functions)."""
    for i in range(a.shape[0]):
        out[i] = _exp(a[i])


@njit(**_OPTS)
def tanh_array(a, out):
    """out = tanh(a) elementwise, 1-D, in a's precision."""
    for i in range(a.shape[0]):
        out[i] = _tanh(a[i])


@njit(**_OPTS)
def log1p_unit_array(a, out):
    """out = log1p(a) elementwise for a in [0, 1], 1-D, in a's precision."""
    for i in range(a.shape[0]):
        out[i] = _log1p_unit(a[i])


def exp_array_numpy(a, out):
    np.exp(a, out=out)


def tanh_array_numpy(a, out):
    np.tanh(a, out=out)


def log1p_unit_array_numpy(a, out):
    np.log1p(a, out=out)


@njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "nsz"})
def _sum(v):
    """Sum of a 1-D array, in any order (vectorised); used only where no terms cancel."""
    s = 0.0
    for i in range(v.shape[0]):
        s += v[i]
    return s


@njit(**_OPTS)
def _chunk(c, n_chunks, n):
    """Bounds [lo, hi) of chunk c of n_chunks over range(n)."""
    return c * n // n_chunks, (c + 1) * n // n_chunks


@njit(**_OPTS)
def _n_chunks(n):
    return max(1, min(_CHUNKS, n))


@njit(**_OPTS)
def _column_sums(part, out):
    """out = part.sum(axis=0), chunk after chunk."""
    for j in range(out.shape[0]):
        out[j] = part[0, j]
    for c in range(1, part.shape[0]):
        pc = part[c]
        for j in range(out.shape[0]):
            out[j] += pc[j]


# --- hidden layers: bias + activation, and back --------------------------------------

@njit(**_OPTS)
def _bias_act_rows(a, b, act, h, r0, r1):
    """Rows [r0, r1) of :func:`bias_act`; the branch on ``act`` sits outside the vectorised loops."""
    n = a.shape[1]
    zero, one = a.dtype.type(0.0), a.dtype.type(1.0)   # constants in a's dtype keep float32 math float32
    for i in range(r0, r1):
        ai, hi_ = a[i], h[i]
        if act == TANH:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = _tanh(v)
        elif act == SIGMOID:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = _sigmoid(v, one)
        elif act == RELU:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = max(v, zero)
        elif act == SOFTPLUS:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = _softplus(v, zero)
        else:
            for j in range(n):
                v = ai[j] + b[j]
                ai[j] = v
                hi_[j] = v


@njit(parallel=True, **_OPTS)
def bias_act(a, b, act, h):
    """Bias add fused with the activation: ``a += b`` (the pre-activation), ``h = act(a)``.

    Parameters
    ----------
    a : (R, C) array, the product ``x @ W``; overwritten with ``x @ W + b``.
    b : (C,) bias.
    act : int, one of ``ACT_CODES``.
    h : (R, C) array, written; must not be ``a``.
    """
    R = a.shape[0]
    nc = _n_chunks(R)
    if a.size < PARALLEL_MIN_SIZE:
        _bias_act_rows(a, b, act, h, 0, R)
    else:
        for c in prange(nc):
            r0, r1 = _chunk(c, nc, R)
            _bias_act_rows(a, b, act, h, r0, r1)


def bias_act_numpy(a, b, act, h):
    a += b
    h[...] = ACTIVATIONS[ACT_NAMES[act]]().forward(a)      # the readable layer's own forward


@njit(**_OPTS)
def _act_backward_rows(dh, a, h, act, da, part, r0, r1):
    """Rows [r0, r1) of :func:`bias_act_backward`; their column sums of da go to part."""
    n = dh.shape[1]
    zero, one = dh.dtype.type(0.0), dh.dtype.type(1.0)
    for j in range(n):
        part[j] = zero
    for i in range(r0, r1):
        dhi, ai, hi_, dai = dh[i], a[i], h[i], da[i]
        if act == TANH:
            for j in range(n):
                g = dhi[j] * (one - hi_[j] * hi_[j])
                dai[j] = g
                part[j] += g
        elif act == SIGMOID:
            for j in range(n):
                g = dhi[j] * hi_[j] * (one - hi_[j])
                dai[j] = g
                part[j] += g
        elif act == RELU:
            for j in range(n):
                g = dhi[j] * (one if ai[j] > zero else zero)
                dai[j] = g
                part[j] += g
        elif act == SOFTPLUS:
            for j in range(n):
                g = dhi[j] * _sigmoid(ai[j], one)
                dai[j] = g
                part[j] += g
        else:
            for j in range(n):
                g = dhi[j]
                dai[j] = g
                part[j] += g


@njit(parallel=True, **_OPTS)
def bias_act_backward(dh, a, h, act, da, db):
    """Activation derivative fused with the bias gradient.

    Parameters
    ----------
    dh : (R, C) gradient reaching the activation's output h.
    a, h : (R, C) pre-activation and activation from :func:`bias_act`.
    act : int, one of ``ACT_CODES``.
    da : (R, C) written: gradient reaching the pre-activation; must not be ``dh``.
    db : (C,) written: ``da.sum(axis=0)``, the bias gradient.
    """
    R = dh.shape[0]
    if dh.size < PARALLEL_MIN_SIZE_FLAT:                  # rows in order: db as da.sum(axis=0) adds them
        _act_backward_rows(dh, a, h, act, da, db, 0, R)
    else:
        nc = _n_chunks(R)
        part = np.empty((nc, dh.shape[1]), dtype=dh.dtype)
        for c in prange(nc):
            r0, r1 = _chunk(c, nc, R)
            _act_backward_rows(dh, a, h, act, da, part[c], r0, r1)
        _column_sums(part, db)


def bias_act_backward_numpy(dh, a, h, act, da, db):
    layer = ACTIVATIONS[ACT_NAMES[act]]()
    layer.forward(a)                                        # the readable layer's forward and backward
    da[...] = layer.backward(dh)
    db[...] = da.sum(axis=0)


# --- decoder heads: log-likelihood and its gradient ----------------------------------

@njit(**_OPTS)
def _bernoulli_terms(a, b, x, t, e, terms):
    """For one row: the logits t = a + b, e = exp(-|t|), and the log-likelihood terms
    x t - softplus(t) = x t - (max(t, 0) + log1p(e)), in two passes (see :func:`_bernoulli_rows`)."""
    zero = a.dtype.type(0.0)
    for j in range(a.shape[0]):
        tj = a[j] + b[j]
        t[j] = tj
        e[j] = _exp(-abs(tj))
    for j in range(a.shape[0]):
        tj = t[j]
        terms[j] = x[j] * tj - (max(tj, zero) + _log1p_unit(e[j]))


@njit(**_OPTS)
def _bernoulli_rows(a, b, x, w, ll, da, part, r0, r1):
    """Rows [r0, r1) of :func:`bernoulli_head`; their column sums of da are added to part.

    Each row in three passes over its D entries (the logits and exp(-|t|); the log-likelihood
    terms; the gradient): the same operations on each entry as in one pass, but shorter chains of
    dependent instructions per loop, which the CPU overlaps across entries (1.15-1.2x faster)."""
    D = a.shape[1]
    M = x.shape[0]
    one = a.dtype.type(1.0)
    terms, ts, es = np.empty(D, dtype=a.dtype), np.empty(D, dtype=a.dtype), np.empty(D, dtype=a.dtype)
    for r in range(r0, r1):
        ar, xr, dar = a[r], x[r % M], da[r]
        _bernoulli_terms(ar, b, xr, ts, es, terms)
        for j in range(D):
            g = w * (xr[j] - _sigmoid_from(ts[j], es[j], one))
            dar[j] = g
            part[j] += g
        ll[r] = _sum(terms)                      # accumulated in float64


@njit(parallel=True, **_OPTS)
def bernoulli_head(a, b, x, w, ll, da, db):
    """Bernoulli log-likelihood from the logits, its gradient and the bias gradient (Appendix C.1).

    With t = a + b (the logits), per row r (sample l, datapoint m = r % M):
    ``ll[r] = sum_d x[m,d] t[r,d] - softplus(t[r,d])`` (exact for any logit) and
    ``da[r,d] = w * (x[m,d] - sigmoid(t[r,d]))``, the gradient of
    ``w * sum_r ll[r]``; ``db = da.sum(axis=0)``.

    Parameters
    ----------
    a : (L*M, D) the product ``h @ W``, rows ordered sample-major (l, then m). Read only.
    b : (D,) bias.
    x : (M, D) data; row m serves rows m, M + m, 2M + m, ... (no (L, M, D) copy).
    w : float, d loss / d log p(x|z_l) (the same for every row).
    ll : (L*M,) written.
    da : (L*M, D) written; must not be ``a``.
    db : (D,) written.
    """
    R = a.shape[0]
    if a.size < PARALLEL_MIN_SIZE:
        db[:] = 0.0
        _bernoulli_rows(a, b, x, w, ll, da, db, 0, R)
    else:
        nc = _n_chunks(R)
        part = np.zeros((nc, a.shape[1]), dtype=a.dtype)
        for c in prange(nc):
            r0, r1 = _chunk(c, nc, R)
            _bernoulli_rows(a, b, x, w, ll, da, part[c], r0, r1)
        _column_sums(part, db)


def bernoulli_head_numpy(a, b, x, w, ll, da, db):
    M, D = x.shape
    t = (a + b).reshape(-1, M, D)                                     # (L, M, D) logits
    ll[...] = est.bernoulli_log_likelihood(x, t).reshape(-1)
    da[...] = (w * est.bernoulli_log_likelihood_grad(x, t)).reshape(-1, D)
    db[...] = da.sum(axis=0)


@njit(**_OPTS)
def _gaussian_rows(am, bm, alv, blv, x, sigmoid_mean, w, ll, dam, dalv, part_m, part_lv, r0, r1):
    """Rows [r0, r1) of :func:`gaussian_head`; their column sums of dam and dalv are added to the parts."""
    D = am.shape[1]
    M = x.shape[0]
    half, one = am.dtype.type(0.5), am.dtype.type(1.0)
    log_2pi = am.dtype.type(est.LOG_2PI)
    terms = np.empty(D, dtype=am.dtype)
    for r in range(r0, r1):
        amr, alvr, xr, damr, dalvr = am[r], alv[r], x[r % M], dam[r], dalv[r]
        for j in range(D):
            pre = amr[j] + bm[j]
            mean = _sigmoid(pre, one) if sigmoid_mean else pre
            lv = alvr[j] + blv[j]
            diff = xr[j] - mean
            prec = _exp(-lv)
            terms[j] = log_2pi + lv + diff * diff * prec
            gm = w * (diff * prec)
            if sigmoid_mean:
                gm = gm * mean * (one - mean)
            glv = w * (half * (diff * diff * prec - one))
            damr[j] = gm
            dalvr[j] = glv
            part_m[j] += gm
            part_lv[j] += glv
        ll[r] = -0.5 * _sum(terms)


@njit(parallel=True, **_OPTS)
def gaussian_head(am, bm, alv, blv, x, sigmoid_mean, w, ll, dam, dalv, dbm, dblv):
    """Gaussian log-likelihood, its gradients and both bias gradients (Appendix C.2).

    mean = sigmoid(am + bm) if ``sigmoid_mean`` else am + bm; log_var = alv + blv;
    ``ll[r] = -1/2 sum_d (log 2 pi + log_var + (x - mean)^2 exp(-log_var))``;
    ``dam``, ``dalv``: gradients of ``w * sum_r ll[r]`` with respect to the
    pre-activations ``am + bm`` and ``alv + blv``; ``dbm``, ``dblv`` their column sums.

    Parameters
    ----------
    am, alv : (L*M, D) products ``h @ W_mean``, ``h @ W_lv``. Read only.
    bm, blv : (D,) biases.
    x : (M, D) data, row m serving rows m, M + m, ...
    sigmoid_mean : bool
    w : float
    ll : (L*M,) written.
    dam, dalv : (L*M, D) written.
    dbm, dblv : (D,) written.
    """
    R, D = am.shape
    if am.size < PARALLEL_MIN_SIZE:
        dbm[:] = 0.0
        dblv[:] = 0.0
        _gaussian_rows(am, bm, alv, blv, x, sigmoid_mean, w, ll, dam, dalv, dbm, dblv, 0, R)
    else:
        nc = _n_chunks(R)
        part_m = np.zeros((nc, D), dtype=am.dtype)
        part_lv = np.zeros((nc, D), dtype=am.dtype)
        for c in prange(nc):
            r0, r1 = _chunk(c, nc, R)
            _gaussian_rows(am, bm, alv, blv, x, sigmoid_mean, w, ll, dam, dalv, part_m[c], part_lv[c], r0, r1)
        _column_sums(part_m, dbm)
        _column_sums(part_lv, dblv)


def gaussian_head_numpy(am, bm, alv, blv, x, sigmoid_mean, w, ll, dam, dalv, dbm, dblv):
    M, D = x.shape
    squash = ACTIVATIONS["sigmoid"]() if sigmoid_mean else ACTIVATIONS["identity"]()   # the readable layer
    mean = squash.forward(am + bm)
    lv = alv + blv
    m3, lv3 = mean.reshape(-1, M, D), lv.reshape(-1, M, D)            # (L, M, D)
    ll[...] = est.gaussian_log_likelihood(x, m3, lv3).reshape(-1)
    dmean, dlv = est.gaussian_log_likelihood_grad(x, m3, lv3)
    dam[...] = squash.backward((w * dmean).reshape(-1, D))
    dalv[...] = (w * dlv).reshape(-1, D)
    dbm[...] = dam.sum(axis=0)
    dblv[...] = dalv.sum(axis=0)


# --- reparameterisation, KL and estimator A's terms -------------------------------------

@njit(**_OPTS)
def reparameterize_kl(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio):
    """Encoder heads' bias, z = mu + sigma * eps, and the KL or log p(z) - log q(z|x).

    Parameters
    ----------
    heads : (M, 2J) the product ``h @ [W_mu | W_lv]``; overwritten with
        ``[mu | log_var]`` (bias added).
    b_mu, b_lv : (J,) biases.
    eps : (L, M, J) the pre-drawn noise.
    estimator_a : bool, which term the estimator needs (the other output is left as it is).
    z : (L*M, J) written: mu + exp(log_var / 2) * eps, sample-major.
    kl : (M,) written for estimator B: KL(q(z|x) || N(0, I)), Appendix B.
    log_ratio : (L*M,) written for estimator A: log p(z_l) - log q(z_l|x) (eq. 6).
    """
    _reparameterize_kl_rows(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio, 0, eps.shape[1])


@njit(**_OPTS)
def _reparameterize_kl_rows(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio, m0, m1):
    """Datapoints [m0, m1) of :func:`reparameterize_kl` (their rows of heads and kl; their rows
    l * M + m of z and log_ratio, for every sample l)."""
    L, M, J = eps.shape
    one, half = heads.dtype.type(1.0), heads.dtype.type(0.5)
    log_2pi = heads.dtype.type(est.LOG_2PI)
    terms = np.empty(J, dtype=heads.dtype)       # per-unit terms, summed afterwards (vectorised loops)
    terms_q = np.empty(J, dtype=heads.dtype)
    for m in range(m0, m1):
        hm = heads[m]
        for j in range(J):
            mu = hm[j] + b_mu[j]
            lv = hm[J + j] + b_lv[j]
            hm[j] = mu
            hm[J + j] = lv
            terms[j] = one + lv - mu * mu - _exp(lv)
        if not estimator_a:
            kl[m] = -0.5 * _sum(terms)
    for l in range(L):
        for m in range(m0, m1):
            r = l * M + m
            hm, el, zr = heads[m], eps[l, m], z[r]
            for j in range(J):
                zr[j] = hm[j] + _exp(half * hm[J + j]) * el[j]
            if estimator_a:
                for j in range(J):
                    mu, lv, zv = hm[j], hm[J + j], zr[j]
                    diff = zv - mu
                    terms[j] = log_2pi + zv * zv
                    terms_q[j] = log_2pi + lv + diff * diff * _exp(-lv)
                log_ratio[r] = -0.5 * _sum(terms) - (-0.5 * _sum(terms_q))


def reparameterize_kl_numpy(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio):
    L, M, J = eps.shape
    heads[:, :J] += b_mu
    heads[:, J:] += b_lv
    mu, lv = heads[:, :J], heads[:, J:]
    z3 = est.reparameterize(mu, lv, eps)                             # (L, M, J)
    z[...] = z3.reshape(-1, J)
    z3 = z.reshape(L, M, J)
    if estimator_a:
        log_ratio[...] = (est.log_standard_normal(z3) - est.log_diag_gaussian(z3, mu, lv)).reshape(-1)
    else:
        kl[...] = est.kl_standard_normal(mu, lv)


@njit(**_OPTS)
def reparameterize_kl_backward(dz, eps, heads, z, dout, w, estimator_a, dheads, db_mu, db_lv):
    """Gradients reaching mu and log_var: through z and through the KL (B) or log p/q (A).

    With estimator B: ``dmu = sum_l dz + dout_kl * mu`` and
    ``dlog_var = sigma / 2 * sum_l dz * eps + dout_kl * (sigma^2 - 1) / 2``, where
    dout_kl = -dout. With estimator A the direct gradients of log p(z) - log q(z|x)
    (weight ``w`` per sample) are added to dz first and to (mu, log_var) directly,
    as :func:`minivae.estimator.estimator_a_backward` does.

    Parameters
    ----------
    dz : (L*M, J) gradient reaching z from the decoder. Read only.
    eps : (L, M, J)
    heads : (M, 2J) ``[mu | log_var]`` from :func:`reparameterize_kl`.
    z : (L*M, J) from :func:`reparameterize_kl`.
    dout : float, d loss / d elbo_i (the same for every i).
    w : float, ``dout / L``.
    estimator_a : bool
    dheads : (M, 2J) written: ``[dmu | dlog_var]``.
    db_mu, db_lv : (J,) written: the heads' bias gradients (column sums).
    """
    L, M, J = eps.shape
    zero, half, one = heads.dtype.type(0.0), heads.dtype.type(0.5), heads.dtype.type(1.0)
    sdz = np.empty(J, dtype=heads.dtype)         # sums over the L samples, per latent unit
    sdze = np.empty(J, dtype=heads.dtype)
    smu = np.empty(J, dtype=heads.dtype)
    slv = np.empty(J, dtype=heads.dtype)
    for j in range(J):
        db_mu[j] = zero
        db_lv[j] = zero
    for m in range(M):
        hm, dm = heads[m], dheads[m]
        for j in range(J):
            sdz[j] = zero
            sdze[j] = zero
            smu[j] = zero
            slv[j] = zero
        for l in range(L):
            r = l * M + m
            dzr, el, zr = dz[r], eps[l, m], z[r]
            if estimator_a:                      # log p(z) - log q(z|x): its own gradient reaches z, mu, log_var
                for j in range(J):
                    mu, lv, zv = hm[j], hm[J + j], zr[j]
                    prec = _exp(-lv)
                    diff = zv - mu
                    dz_total = dzr[j] + w * ((-zv) - (-diff) * prec)
                    sdz[j] += dz_total
                    sdze[j] += dz_total * el[j]
                    smu[j] += w * (diff * prec)
                    slv[j] += w * (half * (diff * diff * prec - one))
            else:
                for j in range(J):
                    sdz[j] += dzr[j]
                    sdze[j] += dzr[j] * el[j]
        for j in range(J):
            mu, lv = hm[j], hm[J + j]
            if estimator_a:
                dmu_direct, dlv_direct = -smu[j], -slv[j]
            else:                                # the KL's gradient (estimator B)
                dmu_direct, dlv_direct = -dout * mu, -dout * (half * (_exp(lv) - one))
            dmu = sdz[j] + dmu_direct                       # through z and directly: two paths meet
            dlv = half * _exp(half * lv) * sdze[j] + dlv_direct
            dm[j] = dmu
            dm[J + j] = dlv
            db_mu[j] += dm[j]
            db_lv[j] += dm[J + j]


def reparameterize_kl_backward_numpy(dz, eps, heads, z, dout, w, estimator_a, dheads, db_mu, db_lv):
    L, M, J = eps.shape
    mu, lv = heads[:, :J], heads[:, J:]
    dz3 = dz.reshape(L, M, J)
    dvec = np.full(M, dout, dtype=heads.dtype)
    if estimator_a:
        _, dz_direct, dmu_d, dlv_d = est.estimator_a_backward(dvec, z.reshape(L, M, J), mu, lv)
        dz3 = dz3 + dz_direct
    else:
        _, dmu_d, dlv_d = est.estimator_b_backward(dvec, L, mu, lv)
    dmu_z, dlv_z = est.reparameterize_backward(dz3, lv, eps)
    dheads[:, :J] = dmu_z + dmu_d
    dheads[:, J:] = dlv_z + dlv_d
    db_mu[...] = dheads[:, :J].sum(axis=0)
    db_lv[...] = dheads[:, J:].sum(axis=0)


@njit(**_OPTS)
def elbo_from_terms(ll, kl, log_ratio, estimator_a, elbo):
    """The bound per datapoint from the step's terms: estimator B (eq. 7),
    ``elbo[m] = mean_l ll[l M + m] - kl[m]``; estimator A (eq. 6), ``mean_l (ll + log_ratio)[l M + m]``.

    Parameters
    ----------
    ll : (L*M,) log p(x|z) per sample, sample-major (:func:`bernoulli_head`, :func:`gaussian_head`).
    kl : (M,) for estimator B; log_ratio : (L*M,) for estimator A (:func:`reparameterize_kl`).
    estimator_a : bool
    elbo : (M,) written.
    """
    _elbo_rows(ll, kl, log_ratio, estimator_a, elbo, 0, elbo.shape[0])


@njit(**_OPTS)
def _elbo_rows(ll, kl, log_ratio, estimator_a, elbo, m0, m1):
    """Datapoints [m0, m1) of :func:`elbo_from_terms`: the samples added in order, then divided by L
    in float64 and rounded, as ``np.mean(axis=0)`` does."""
    M = elbo.shape[0]
    L = ll.shape[0] // M
    for m in range(m0, m1):
        s = ll[m] + log_ratio[m] if estimator_a else ll[m]
        for l in range(1, L):
            s += ll[l * M + m] + log_ratio[l * M + m] if estimator_a else ll[l * M + m]
        if L > 1:
            s = elbo.dtype.type(np.float64(s) / L)
        elbo[m] = s if estimator_a else s - kl[m]


def elbo_from_terms_numpy(ll, kl, log_ratio, estimator_a, elbo):
    M = elbo.shape[0]
    terms = (ll + log_ratio if estimator_a else ll).reshape(-1, M)
    elbo[...] = np.mean(terms, axis=0) if estimator_a else -kl + np.mean(terms, axis=0)   # as est.estimator_b


# --- optimisers ---------------------------------------------------------------------------
#
# Each update first adds ``decay * p`` to the gradient (weight decay: with
# decay = 1/N, the gradient of the N(0, I) parameter prior's -(1/N) log p(theta),
# :func:`minivae.optim.decayed_gradient`) in the same pass, so the prior costs no
# pass of its own. Scalars arrive as Python floats and are rounded to the arrays'
# dtype here, as NumPy rounds a Python float meeting a float32 array.

@njit(**_OPTS)
def _sgd_range(p, g, lr, decay):
    for i in range(p.shape[0]):
        p[i] -= lr * (g[i] + decay * p[i])


@njit(parallel=True, **_OPTS)
def sgd_step(p, g, lr, decay):
    """``p -= lr * (g + decay * p)`` in place. p, g: 1-D contiguous of one dtype."""
    n = p.shape[0]
    f = p.dtype.type
    lr_, decay_ = f(lr), f(decay)
    if n < PARALLEL_MIN_SIZE_FLAT:
        _sgd_range(p, g, lr_, decay_)
    else:
        for c in prange(_MAX_BLOCKS):
            lo, hi = c * n // _MAX_BLOCKS, (c + 1) * n // _MAX_BLOCKS
            _sgd_range(p[lo:hi], g[lo:hi], lr_, decay_)


def sgd_step_numpy(p, g, lr, decay):
    sgd_update(p, decayed_gradient(g, p, decay), lr)


@njit(**_OPTS)
def _adagrad_range(p, g, G, lr, eps, decay):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] + decay * pi
        Gi = G[i] + gi * gi
        G[i] = Gi
        p[i] = pi - lr * gi / (np.sqrt(Gi) + eps)


@njit(parallel=True, **_OPTS)
def adagrad_step(p, g, G, lr, eps, decay):
    """Adagrad in one pass: ``g' = g + decay * p; G += g'^2; p -= lr * g' / (sqrt(G) + eps)``.

    p, g, G: 1-D contiguous arrays of one dtype; g is read only.
    """
    n = p.shape[0]
    f = p.dtype.type
    lr_, eps_, decay_ = f(lr), f(eps), f(decay)
    if n < PARALLEL_MIN_SIZE_FLAT:
        _adagrad_range(p, g, G, lr_, eps_, decay_)
    else:
        for c in prange(_MAX_BLOCKS):
            lo, hi = c * n // _MAX_BLOCKS, (c + 1) * n // _MAX_BLOCKS
            _adagrad_range(p[lo:hi], g[lo:hi], G[lo:hi], lr_, eps_, decay_)


def adagrad_step_numpy(p, g, G, lr, eps, decay):
    adagrad_update(p, decayed_gradient(g, p, decay), G, lr, eps)


@njit(**_OPTS)
def _adam_range(p, g, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2, c1, c2, eps, decay):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] + decay * pi
        mi = m[i] * beta1 + one_minus_beta1 * gi
        vi = v[i] * beta2 + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)


@njit(parallel=True, **_OPTS)
def adam_step(p, g, m, v, t, lr, beta1, beta2, eps, decay):
    """Adam in one pass, as :func:`minivae.optim.adam_update` writes it, at update number t.

    ``g' = g + decay * p``; ``m = beta1 m + (1 - beta1) g'``; ``v = beta2 v + (1 - beta2) g'^2``;
    ``p -= lr * (m / c1) / (sqrt(v / c2) + eps)`` with c1 = 1 - beta1^t, c2 = 1 - beta2^t
    (computed in float64, then rounded to the arrays' dtype, as NumPy does).
    """
    n = p.shape[0]
    f = p.dtype.type
    args = (f(lr), f(beta1), f(beta2), f(1.0 - beta1), f(1.0 - beta2), f(1.0 - beta1 ** t), f(1.0 - beta2 ** t),
            f(eps), f(decay))
    if n < PARALLEL_MIN_SIZE_FLAT:
        _adam_range(p, g, m, v, *args)
    else:
        for c in prange(_MAX_BLOCKS):
            lo, hi = c * n // _MAX_BLOCKS, (c + 1) * n // _MAX_BLOCKS
            _adam_range(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], *args)


def adam_step_numpy(p, g, m, v, t, lr, beta1, beta2, eps, decay):
    adam_update(p, decayed_gradient(g, p, decay), m, v, t, lr, beta1, beta2, eps)



# The same three updates for elements [lo, hi) only, on the calling thread (never Numba's
# threads): the two-thread step (``minivae.fast.pair``) runs them beside other work, where a
# threaded kernel must not start.

@njit(**_OPTS)
def sgd_part(p, g, lr, decay, lo, hi):
    """Elements [lo, hi) of :func:`sgd_step`, on the calling thread."""
    f = p.dtype.type
    _sgd_range(p[lo:hi], g[lo:hi], f(lr), f(decay))


def sgd_part_numpy(p, g, lr, decay, lo, hi):
    sgd_step_numpy(p[lo:hi], g[lo:hi], lr, decay)


@njit(**_OPTS)
def adagrad_part(p, g, G, lr, eps, decay, lo, hi):
    """Elements [lo, hi) of :func:`adagrad_step`, on the calling thread."""
    f = p.dtype.type
    _adagrad_range(p[lo:hi], g[lo:hi], G[lo:hi], f(lr), f(eps), f(decay))


def adagrad_part_numpy(p, g, G, lr, eps, decay, lo, hi):
    adagrad_step_numpy(p[lo:hi], g[lo:hi], G[lo:hi], lr, eps, decay)


@njit(**_OPTS)
def adam_part(p, g, m, v, t, lr, beta1, beta2, eps, decay, lo, hi):
    """Elements [lo, hi) of :func:`adam_step`, on the calling thread."""
    f = p.dtype.type
    _adam_range(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], f(lr), f(beta1), f(beta2), f(1.0 - beta1), f(1.0 - beta2),
                f(1.0 - beta1 ** t), f(1.0 - beta2 ** t), f(eps), f(decay))


def adam_part_numpy(p, g, m, v, t, lr, beta1, beta2, eps, decay, lo, hi):
    adam_step_numpy(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], t, lr, beta1, beta2, eps, decay)

# --- forward only: the evaluation's log-likelihoods and log-mean-exp -----------------------------
#
# The recorded bound and the importance-sampled log p(x) need no gradient: these
# kernels compute log p(x|z) alone, for a block of decoder rows at a time (so a
# block's activations stay in cache between its product and its kernel).

@njit(**_OPTS)
def _bernoulli_ll_rows(a, b, x, r0, ll, i0, i1):
    D = a.shape[1]
    M = x.shape[0]
    terms, ts, es = np.empty(D, dtype=a.dtype), np.empty(D, dtype=a.dtype), np.empty(D, dtype=a.dtype)
    for i in range(i0, i1):
        _bernoulli_terms(a[i], b, x[(r0 + i) % M], ts, es, terms)
        ll[i] = _sum(terms)                      # accumulated in float64


@njit(parallel=True, **_OPTS)
def bernoulli_ll(a, b, x, r0, ll):
    """Bernoulli log p(x|z) from the logits, forward only (Appendix C.1).

    ``ll[i] = sum_d x[m,d] t[i,d] - softplus(t[i,d])`` with t = a + b and
    m = (r0 + i) % M: the block's rows are rows r0, r0 + 1, ... of the
    sample-major (L*M, D) decoder output.

    Parameters
    ----------
    a : (R, D) the product ``h @ W`` for R rows. Read only.
    b : (D,) bias.
    x : (M, D) data.
    r0 : int, the first row's index in the whole (L*M) output.
    ll : (R,) written.
    """
    R = a.shape[0]
    if a.size < PARALLEL_MIN_SIZE:
        _bernoulli_ll_rows(a, b, x, r0, ll, 0, R)
    else:
        nc = _n_chunks(R)
        for c in prange(nc):
            i0, i1 = _chunk(c, nc, R)
            _bernoulli_ll_rows(a, b, x, r0, ll, i0, i1)


def bernoulli_ll_numpy(a, b, x, r0, ll):
    M = x.shape[0]
    rows = (r0 + np.arange(a.shape[0])) % M
    ll[...] = est.bernoulli_log_likelihood(x[rows], a + b)


@njit(**_OPTS)
def _gaussian_ll_rows(am, bm, alv, blv, x, sigmoid_mean, r0, ll, i0, i1):
    D = am.shape[1]
    M = x.shape[0]
    one = am.dtype.type(1.0)
    log_2pi = am.dtype.type(est.LOG_2PI)
    terms = np.empty(D, dtype=am.dtype)
    for i in range(i0, i1):
        ami, alvi, xi = am[i], alv[i], x[(r0 + i) % M]
        for j in range(D):
            pre = ami[j] + bm[j]
            mean = _sigmoid(pre, one) if sigmoid_mean else pre
            lv = alvi[j] + blv[j]
            diff = xi[j] - mean
            terms[j] = log_2pi + lv + diff * diff * _exp(-lv)
        ll[i] = -0.5 * _sum(terms)


@njit(parallel=True, **_OPTS)
def gaussian_ll(am, bm, alv, blv, x, sigmoid_mean, r0, ll):
    """Gaussian log p(x|z), forward only (Appendix C.2), for rows r0, r0 + 1, ... (see :func:`bernoulli_ll`).

    mean = sigmoid(am + bm) if ``sigmoid_mean`` else am + bm; log_var = alv + blv;
    ``ll[i] = -1/2 sum_d (log 2 pi + log_var + (x - mean)^2 exp(-log_var))``.

    Parameters
    ----------
    am, alv : (R, D) products ``h @ W_mean``, ``h @ W_lv``. Read only.
    bm, blv : (D,) biases.
    x : (M, D) data.
    sigmoid_mean : bool
    r0 : int
    ll : (R,) written.
    """
    R = am.shape[0]
    if am.size < PARALLEL_MIN_SIZE:
        _gaussian_ll_rows(am, bm, alv, blv, x, sigmoid_mean, r0, ll, 0, R)
    else:
        nc = _n_chunks(R)
        for c in prange(nc):
            i0, i1 = _chunk(c, nc, R)
            _gaussian_ll_rows(am, bm, alv, blv, x, sigmoid_mean, r0, ll, i0, i1)


def gaussian_ll_numpy(am, bm, alv, blv, x, sigmoid_mean, r0, ll):
    M = x.shape[0]
    rows = (r0 + np.arange(am.shape[0])) % M
    squash = ACTIVATIONS["sigmoid"]() if sigmoid_mean else ACTIVATIONS["identity"]()   # the readable layer
    ll[...] = est.gaussian_log_likelihood(x[rows], squash.forward(am + bm), alv + blv)


@njit(**_OPTS)
def _logaddexp(a, b):
    """log(exp(a) + exp(b)) as np.logaddexp computes it (-inf and equal arguments included)."""
    if a == b:
        return a + math.log(2.0)
    d = a - b
    if d > 0:
        return a + math.log1p(exp_(-d))
    if d <= 0:
        return b + math.log1p(exp_(d))
    return d                                      # NaN


@njit(**_OPTS)
def log_mean_exp_accumulate(log_w, total):
    """``total = logaddexp(total, logmeanexp(log_w, axis=0) + log k)``: a running log sum_k w_k.

    The importance-sampled log p(x) adds up the weights of K samples chunk by
    chunk (:func:`minivae.evaluate.log_likelihood`); this is one chunk's share,
    in float64 whatever the weights' dtype, shifted by each column's maximum
    as :func:`minivae.evaluate.logmeanexp` is.

    Parameters
    ----------
    log_w : (k, M) log importance weights of k samples. Read only.
    total : (M,) float64, updated in place (-inf before the first chunk).
    """
    k, M = log_w.shape
    top = np.full(M, -math.inf)
    for r in range(k):
        row = log_w[r]
        for m in range(M):
            top[m] = max(top[m], np.float64(row[m]))
    for m in range(M):
        if not abs(top[m]) < math.inf:
            top[m] = 0.0                           # as logmeanexp: no shift for an infinite maximum
    s = np.zeros(M)
    for r in range(k):
        row = log_w[r]
        for m in range(M):
            s[m] += exp_(np.float64(row[m]) - top[m])
    for m in range(M):
        lme = top[m] + math.log(s[m] / k) if s[m] > 0 else -math.inf
        total[m] = _logaddexp(total[m], lme + math.log(k))


def log_mean_exp_accumulate_numpy(log_w, total):
    total[...] = np.logaddexp(total, logmeanexp(log_w, axis=0) + np.log(log_w.shape[0]))


# --- data check ------------------------------------------------------------------------------

@njit(**_OPTS)
def count_bad(x, lo, hi):
    """How many entries of the 2-D array x are NaN, infinite, or outside [lo, hi]."""
    n = 0
    for i in range(x.shape[0]):
        xi = x[i]
        for j in range(x.shape[1]):
            v = xi[j]
            # & rather than `and`: no branches, so the loop vectorises; NaN fails every comparison
            n += 0 if (v >= lo) & (v <= hi) & (abs(v) < math.inf) else 1
    return n


def count_bad_numpy(x, lo, hi):
    return int(np.count_nonzero(~np.isfinite(x) | (x < lo) | (x > hi)))


@njit(**_OPTS)
def count_nonzero(x):
    """How many entries of the 2-D array x are not zero (np.count_nonzero, in one vectorised pass)."""
    n = 0
    for i in range(x.shape[0]):
        xi = x[i]
        for j in range(x.shape[1]):
            n += 0 if xi[j] == 0 else 1
    return n


def count_nonzero_numpy(x):
    return int(np.count_nonzero(x))


# --- a sparse input: the first layer's two products with x ------------------------------------------
#
# MNIST's pixels are 81 % zeros, and the two products of a step that involve x
# itself (x W1 forward, x^T dA1 for W1's gradient) spend 81 % of their
# arithmetic on them. With the nonzero pixels indexed once per minibatch, each
# product is one pass of row additions (four rows at a time, so a row of the
# output is loaded and stored once per four terms). The terms are the nonzero
# ones of the dense product, summed in another order. They run on one thread:
# the step takes them when each product runs on one (minivae.fast.step: BLAS on
# one thread, or the two-thread step, which gives each thread half the rows, each
# reading its rows or columns of x itself: no index to build before the first product);
# split in row chunks over Numba's threads, they made the MNIST step slower than
# two-threaded BLAS did.

@njit(**_OPTS)
def sparse_rows(x, rptr, rcol, rval):
    """Index the nonzero entries of the 2-D array x by rows (the first half of :func:`sparse_index`);
    return how many there are."""
    M, D = x.shape
    n = 0
    for m in range(M):
        rptr[m] = n
        xm = x[m]
        for d in range(D):
            v = xm[d]
            if v != 0:
                rcol[n] = d
                rval[n] = v
                n += 1
    rptr[M] = n
    return n


@njit(**_OPTS)
def sparse_columns(rptr, rcol, rval, cptr, crow, cval):
    """The column index of :func:`sparse_index` from its row index (``D = len(cptr) - 1`` columns);
    reads only the row index, so it may run while x's first products are computed."""
    M, D = rptr.shape[0] - 1, cptr.shape[0] - 1
    for d in range(D + 1):
        cptr[d] = 0
    for k in range(rptr[M]):
        cptr[rcol[k] + 1] += 1
    for d in range(D):
        cptr[d + 1] += cptr[d]
    fill = cptr[:D].copy()
    for m in range(M):
        for k in range(rptr[m], rptr[m + 1]):
            d = rcol[k]
            j = fill[d]
            crow[j] = m
            cval[j] = rval[k]
            fill[d] = j + 1


@njit(**_OPTS)
def sparse_index(x, rptr, rcol, rval, cptr, crow, cval):
    """Index the nonzero entries of the 2-D array x, by rows and by columns; return how many there are.

    Parameters
    ----------
    x : (M, D) array. Read only.
    rptr : (M + 1,) int64, written: row m's entries are ``rcol[rptr[m]:rptr[m + 1]]`` (their columns)
        and ``rval[...]`` (their values), in increasing column order.
    rcol, rval : (at least x.size,) int32 and x's dtype, written up to the count.
    cptr : (D + 1,) int64, written: column d's entries are ``crow[cptr[d]:cptr[d + 1]]`` (their rows)
        and ``cval[...]``, in increasing row order.
    crow, cval : as rcol, rval.
    """
    n = sparse_rows(x, rptr, rcol, rval)
    sparse_columns(rptr, rcol, rval, cptr, crow, cval)
    return n


def sparse_rows_numpy(x, rptr, rcol, rval):
    rows, cols = np.nonzero(x)                                   # row-major order
    n = len(rows)
    rptr[...] = np.searchsorted(rows, np.arange(x.shape[0] + 1))
    rcol[:n], rval[:n] = cols, x[rows, cols]
    return n


def sparse_columns_numpy(rptr, rcol, rval, cptr, crow, cval):
    x = _dense_from_index(rptr, rcol, rval, len(cptr) - 1)
    rows, cols = np.nonzero(x.T)                                 # by column, rows increasing within each
    cptr[...] = np.searchsorted(rows, np.arange(len(cptr)))
    crow[:len(rows)], cval[:len(rows)] = cols, x[cols, rows]


def sparse_index_numpy(x, rptr, rcol, rval, cptr, crow, cval):
    n = sparse_rows_numpy(x, rptr, rcol, rval)
    sparse_columns_numpy(rptr, rcol, rval, cptr, crow, cval)
    return n


@njit(**_OPTS)
def _add_terms(o, val, idx, k, end, A):
    """``o = the sum over k' in [k, end) of val[k'] * A[idx[k']]``, four terms at a time (o is written)."""
    C = o.shape[0]
    zero = o.dtype.type(0.0)
    for j in range(C):
        o[j] = zero
    while k + 4 <= end:
        v0, v1, v2, v3 = val[k], val[k + 1], val[k + 2], val[k + 3]
        a0, a1, a2, a3 = A[idx[k]], A[idx[k + 1]], A[idx[k + 2]], A[idx[k + 3]]
        for j in range(C):
            o[j] += (v0 * a0[j] + v1 * a1[j]) + (v2 * a2[j] + v3 * a3[j])
        k += 4
    while k < end:
        v, a = val[k], A[idx[k]]
        for j in range(C):
            o[j] += v * a[j]
        k += 1


@njit(**_OPTS)
def _add_rows(ptr, idx, val, A, out, r0, r1):
    """Rows [r0, r1) of out: row i = the sum over k in [ptr[i], ptr[i + 1]) of val[k] * A[idx[k]]."""
    for i in range(r0, r1):
        _add_terms(out[i], val, idx, ptr[i], ptr[i + 1], A)


@njit(**_OPTS)
def sparse_matmul_rows(x, W, out, r0, r1):
    """Rows [r0, r1) of ``out = x @ W`` over x's nonzero entries, found by reading those rows of x
    (no index): the numbers of :func:`sparse_matmul`, on the calling thread (the two-thread step
    gives each thread its rows). x: (M, D); W: (D, C); out: (M, C), those rows written."""
    D = x.shape[1]
    col, val = np.empty(D, np.int32), np.empty(D, x.dtype)
    for i in range(r0, r1):
        xi, n = x[i], 0
        for d in range(D):
            v = xi[d]
            col[n] = d                           # written always, kept if v != 0 (no branch)
            val[n] = v
            n += v != 0
        _add_terms(out[i], val, col, 0, n, W)


def sparse_matmul_rows_numpy(x, W, out, r0, r1):
    np.matmul(x[r0:r1], W, out=out[r0:r1])


@njit(**_OPTS)
def sparse_matmul_t_rows(x, G, out, d0, d1):
    """Rows [d0, d1) of ``out = x.T @ G`` over x's nonzero entries, found by reading x's columns
    [d0, d1) (no index): the numbers of :func:`sparse_matmul_t`, on the calling thread.
    x: (M, D); G: (M, C); out: (D, C), those rows written."""
    M = x.shape[0]
    width = d1 - d0
    count = np.zeros(width, np.int64)            # column d's nonzero rows: row[(d - d0) * M + k], k < count
    row, val = np.empty(width * M, np.int32), np.empty(width * M, x.dtype)
    for m in range(M):                           # x read row by row, rows increasing in each column
        xm = x[m]
        for c in range(width):
            v = xm[d0 + c]
            if v != 0:
                k = c * M + count[c]
                row[k] = m
                val[k] = v
                count[c] += 1
    for c in range(width):
        _add_terms(out[d0 + c], val, row, c * M, c * M + count[c], G)


def sparse_matmul_t_rows_numpy(x, G, out, d0, d1):
    np.matmul(x[:, d0:d1].T, G, out=out[d0:d1])


@njit(**_OPTS)
def sparse_matmul(rptr, rcol, rval, W, out):
    """``out = x @ W`` from x's row index (:func:`sparse_index`). W: (D, C); out: (M, C), written."""
    _add_rows(rptr, rcol, rval, W, out, 0, out.shape[0])


def sparse_matmul_numpy(rptr, rcol, rval, W, out):
    np.matmul(_dense_from_index(rptr, rcol, rval, W.shape[0]), W, out=out)


@njit(**_OPTS)
def sparse_matmul_t(cptr, crow, cval, G, out):
    """``out = x.T @ G`` from x's column index (:func:`sparse_index`). G: (M, C); out: (D, C), written."""
    _add_rows(cptr, crow, cval, G, out, 0, out.shape[0])


def sparse_matmul_t_numpy(cptr, crow, cval, G, out):
    np.matmul(_dense_from_index(cptr, crow, cval, G.shape[0]), G, out=out)      # x.T, built by columns


def _dense_from_index(ptr, idx, val, width):
    """The (len(ptr) - 1, width) array whose row i holds val[k] at column idx[k], k in [ptr[i], ptr[i + 1])."""
    dense = np.zeros((len(ptr) - 1, width), dtype=val.dtype)
    rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    dense[rows, idx[:ptr[-1]]] = val[:ptr[-1]]
    return dense


TWINS = {
    bias_act: bias_act_numpy,
    bias_act_backward: bias_act_backward_numpy,
    bernoulli_head: bernoulli_head_numpy,
    gaussian_head: gaussian_head_numpy,
    reparameterize_kl: reparameterize_kl_numpy,
    reparameterize_kl_backward: reparameterize_kl_backward_numpy,
    sgd_step: sgd_step_numpy,
    adagrad_step: adagrad_step_numpy,
    adam_step: adam_step_numpy,
    sgd_part: sgd_part_numpy,
    adagrad_part: adagrad_part_numpy,
    adam_part: adam_part_numpy,
    count_bad: count_bad_numpy,
    bernoulli_ll: bernoulli_ll_numpy,
    gaussian_ll: gaussian_ll_numpy,
    log_mean_exp_accumulate: log_mean_exp_accumulate_numpy,
    exp_array: exp_array_numpy,
    tanh_array: tanh_array_numpy,
    log1p_unit_array: log1p_unit_array_numpy,
    elbo_from_terms: elbo_from_terms_numpy,
    sparse_index: sparse_index_numpy,
    sparse_rows: sparse_rows_numpy,
    sparse_columns: sparse_columns_numpy,
    count_nonzero: count_nonzero_numpy,
    sparse_matmul: sparse_matmul_numpy,
    sparse_matmul_t: sparse_matmul_t_numpy,
    sparse_matmul_rows: sparse_matmul_rows_numpy,
    sparse_matmul_t_rows: sparse_matmul_t_rows_numpy,
}
"""Every public kernel and its NumPy reference (same signature, same effect)."""
