"""A sparse input: the first layer's two products with x, over x's nonzero entries only.

MNIST's pixels are 81 % zeros, and the two products of a step that involve x itself (x W1
forward, x^T dA1 for W1's gradient) spend 81 % of their arithmetic on them. With the nonzero
pixels indexed once per minibatch (``sparse_index``: ``sparse_rows`` then ``sparse_columns``),
each product (``sparse_matmul``, ``sparse_matmul_t``) is one pass of row additions (four rows at
a time, so a row of the output is loaded and stored once per four terms). The terms are the
nonzero ones of the dense product, summed in another order. ``sparse_matmul_rows`` and
``sparse_matmul_t_rows`` give the same numbers for a range of rows of the product, reading x
itself (no index to build before the first product): the two-thread step gives each thread its
range.

They run on one thread: the step takes them when each product runs on one
(:mod:`minivae.fast.step`: BLAS on one thread, or the two-thread step); split in row chunks over
Numba's threads, they made the MNIST step slower than two-threaded BLAS did. Twins: ``np.matmul``
of the dense x.
"""

from __future__ import annotations

import numpy as np

from .common import _OPTS, njit

__all__ = ["sparse_index", "sparse_rows", "sparse_columns", "sparse_matmul", "sparse_matmul_t",
           "sparse_matmul_rows", "sparse_matmul_t_rows"]

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


TWINS = {sparse_index: sparse_index_numpy, sparse_rows: sparse_rows_numpy, sparse_columns: sparse_columns_numpy,
         sparse_matmul: sparse_matmul_numpy, sparse_matmul_t: sparse_matmul_t_numpy,
         sparse_matmul_rows: sparse_matmul_rows_numpy, sparse_matmul_t_rows: sparse_matmul_t_rows_numpy}
