"""exp, tanh and log1p written so that LLVM vectorises them, and the sigmoid and softplus built on them.

Without Intel SVML, Numba calls the scalar libm ``tanh``/``exp``/``log1p``, which are 10-40x
slower than NumPy's SIMD loops. :func:`exp_`, :func:`tanh_` and :func:`log1p_unit` are written
with arithmetic only (Cody-Waite range reduction and polynomials, fdlibm's log coefficients), so
LLVM vectorises them; they are within a few ulp of NumPy in float64 (tested). A float32 model's
kernels compute in float32 (twice the SIMD lanes), with float32 versions of the three functions
(shorter polynomials, within a few float32 ulp); ``_exp``, ``_tanh`` and ``_log1p_unit`` pick the
one of their argument's precision, and the kernels call those. Sums of many terms
(log-likelihoods, the parameter prior) are accumulated in float64.

``exp_array``, ``tanh_array`` and ``log1p_unit_array`` apply them to a 1-D array, so that the
tests can hold them to NumPy.
"""

from __future__ import annotations

import math

import numpy as np

from .common import _DISABLE_JIT, _OPTS, njit

__all__ = ["exp_", "tanh_", "log1p_unit", "exp_array", "tanh_array", "log1p_unit_array"]

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
    """sigmoid(t) given e = exp(-|t|), as :func:`minivae.layers.sigmoid` computes it: (1 or e) / (1 + e),
    its numerator exp(min(t, 0)) (one: 1 in t's dtype)."""
    return (one if t >= 0 else e) / (one + e)


@njit(**_OPTS)
def _sigmoid(t, one):
    return _sigmoid_from(t, _exp(-abs(t)), one)


@njit(**_OPTS)
def _softplus(t, zero):
    """log(1 + exp(t)) = max(t, 0) + log1p(exp(-|t|)), as :func:`minivae.layers.softplus` writes it."""
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


TWINS = {exp_array: exp_array_numpy, tanh_array: tanh_array_numpy, log1p_unit_array: log1p_unit_array_numpy}
