"""NumPy's own BLAS, called from compiled kernels: a matrix product that needs no GIL.

``np.matmul`` lets go of the GIL around its BLAS call, but each call starts and
ends in Python. On the two-thread step that is what the worker waits for: a
thread back from BLAS has to take the GIL again, and if the other thread holds
it, the worker sleeps and is woken only 30-80 us later on the virtual machines
measured. :func:`gemm_into` makes the same ``?gemm`` call ``np.matmul`` makes
(the same library, found through threadpoolctl; the same transpose flags and
leading dimensions for the same views) from inside a Numba kernel, so a run of
products and kernels can be one call without the GIL. :func:`matmul_into` is the product a
function written once for both (:mod:`minivae.fast.forward`) calls: ``np.matmul`` when the
function runs as Python, :func:`gemm_into` when it runs compiled.

``ADDRESS`` holds, per dtype, the address of NumPy's ``cblas_sgemm`` /
``cblas_dgemm`` and whether its integers are 64-bit; it is empty when no
such library is found (or without the JIT), and then nothing here is used.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .kernels import JIT_ENABLED

__all__ = ["ADDRESS", "gemm_into", "matmul_into", "available"]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112     # the CBLAS enums


def _find():
    """{dtype: (address, ilp64)} of NumPy's cblas_sgemm / cblas_dgemm, or {} when not found."""
    try:
        from threadpoolctl import ThreadpoolController
        libs = ThreadpoolController().select(user_api="blas", internal_api="openblas").lib_controllers
    except Exception:  # noqa: BLE001 - no threadpoolctl, or it cannot read the libraries: not used
        return {}
    found = {}
    for lib in libs:
        if "numpy" not in (lib.filepath or ""):        # NumPy's own copy (wheels), not SciPy's
            continue
        handle = ctypes.CDLL(lib.filepath)
        for dtype, name in ((np.dtype(np.float32), "sgemm"), (np.dtype(np.float64), "dgemm")):
            for symbol, ilp64 in ((f"scipy_cblas_{name}64_", True), (f"cblas_{name}64_", True),
                                  (f"scipy_cblas_{name}", False), (f"cblas_{name}", False)):
                fn = getattr(handle, symbol, None)
                if fn is not None:
                    found[dtype] = (ctypes.cast(fn, ctypes.c_void_p).value, ilp64)
                    break
        break
    return found if len(found) == 2 else {}


ADDRESS = _find() if JIT_ENABLED else {}


def available(dtype):
    """Whether :func:`gemm_into` can run for arrays of ``dtype`` here."""
    return np.dtype(dtype) in ADDRESS


def matmul_into(blas, a, b, out):
    """``out = a @ b``; return whether it was made. From Python: ``np.matmul(a, b, out=out)``
    (``blas`` is not read). From compiled code: :func:`gemm_into` with ``blas`` = ``ADDRESS[dtype]``,
    the same ``?gemm`` call, which returns False, doing nothing, where ``np.matmul`` would not
    call ``?gemm``."""
    np.matmul(a, b, out=out)
    return True


if JIT_ENABLED:
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload

    @intrinsic
    def _cblas_gemm(typingctx, address, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """``cblas_?gemm(RowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`` through the
        function at ``address``; the integers (m, ..., ldc) have the width of ``m``'s type."""
        def codegen(context, builder, signature, args):
            (address_, ta_, tb_, m_, n_, k_, alpha_, a_, lda_, b_, ldb_, beta_, c_, ldc_) = args
            blasint = context.get_value_type(signature.args[3])
            real = context.get_value_type(signature.args[6])
            enum = ir.IntType(32)
            ptr = real.as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [enum, enum, enum, blasint, blasint, blasint, real, ptr,
                                                   blasint, ptr, blasint, real, ptr, blasint])
            fn = builder.inttoptr(address_, fnty.as_pointer())

            def data(ty, val):
                return builder.bitcast(context.make_array(ty)(context, builder, val).data, ptr)
            builder.call(fn, [ir.Constant(enum, ROW_MAJOR), builder.trunc(ta_, enum), builder.trunc(tb_, enum),
                              m_, n_, k_, alpha_, data(signature.args[7], a_), lda_,
                              data(signature.args[9], b_), ldb_, beta_, data(signature.args[12], c_), ldc_])
            return context.get_dummy_value()
        return types.none(address, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), codegen

    @njit(cache=True, nogil=True)
    def _layout(s0, s1, d0, d1, size):
        """NumPy's choice for a (d0, d1) operand of strides (s0, s1): (transposed, leading dimension),
        or (-1, 0) when BLAS cannot take it (matmul.c.src, is_blasable2d)."""
        if s1 == size and s0 % size == 0 and s0 // size >= d1:
            return 0, s0 // size
        if s0 == size and s1 % size == 0 and s1 // size >= d0:
            return 1, s1 // size
        return -1, 0

    @njit(cache=True, nogil=True)
    def gemm_into(address, ilp64, a, b, out):
        """``out = a @ b`` by the ``?gemm`` call ``np.matmul`` makes for these views (2-D, one float
        dtype, ``out`` with unit stride along its rows); return False, doing nothing, for a shape or
        layout ``np.matmul`` would not give to ``?gemm`` (a dimension of 1 or 0, other strides)."""
        m, k = a.shape
        n = b.shape[1]
        if m <= 1 or n <= 1 or k <= 1:
            return False
        size = a.itemsize
        ta, lda = _layout(a.strides[0], a.strides[1], m, k, size)
        tb, ldb = _layout(b.strides[0], b.strides[1], k, n, size)
        to, ldc = _layout(out.strides[0], out.strides[1], m, n, size)
        if ta < 0 or tb < 0 or to != 0:
            return False
        one, zero = a.dtype.type(1.0), a.dtype.type(0.0)
        flag_a, flag_b = np.int32(TRANS if ta else NO_TRANS), np.int32(TRANS if tb else NO_TRANS)
        if ilp64:
            _cblas_gemm(address, flag_a, flag_b, np.int64(m), np.int64(n), np.int64(k), one, a, np.int64(lda),
                        b, np.int64(ldb), zero, out, np.int64(ldc))
        else:
            _cblas_gemm(address, flag_a, flag_b, np.int32(m), np.int32(n), np.int32(k), one, a, np.int32(lda),
                        b, np.int32(ldb), zero, out, np.int32(ldc))
        return True

    @overload(matmul_into)
    def _matmul_into_compiled(blas, a, b, out):
        return lambda blas, a, b, out: gemm_into(blas[0], blas[1], a, b, out)
else:  # pragma: no cover - without the JIT nothing calls it
    def gemm_into(address, ilp64, a, b, out):
        return False
