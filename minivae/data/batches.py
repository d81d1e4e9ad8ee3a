"""Minibatches for stochastic gradient ascent on the ELBO, and seeded hold-out splits.

The paper's Algorithm 1 draws "a random minibatch of M datapoints" at each
step; :func:`minibatches` makes one pass (epoch) over a fresh random
permutation of the data, M rows at a time, optionally drawing a fresh binary
image from each grey-level one ("dynamic binarisation").
"""

from __future__ import annotations

import numpy as np

from ..utils import as_generator, check_scalar

__all__ = ["minibatches", "holdout_indices"]


def binarize_dynamic(x, rng):
    """One Bernoulli draw of every pixel with its grey level as the mean, in x's dtype.

    Dynamic binarisation calls this each time a minibatch is used, so the
    model sees a fresh binary image every time. x: (M, D) in [0, 1].
    """
    return (rng.random(x.shape, dtype=x.dtype) < x).astype(x.dtype)


def holdout_indices(n: int, n_holdout: int, seed=0):
    """Split ``range(n)`` into a held-out set and the rest, by a seeded permutation.

    Parameters
    ----------
    n : int
        Number of datapoints N.
    n_holdout : int
        Size of the held-out set, 0 <= n_holdout <= n.
    seed : int or np.random.Generator
        The same seed always gives the same split.

    Returns
    -------
    held : ndarray of int64, shape (n_holdout,)
    rest : ndarray of int64, shape (n - n_holdout,)
        Disjoint, together exactly ``range(n)``, each sorted so the rows keep
        the order of the file.
    """
    if not 0 <= n_holdout <= n:
        raise ValueError(f"cannot hold out {n_holdout} of {n} datapoints; choose 0 <= n_holdout <= {n}.")
    perm = as_generator(seed).permutation(n)  # (N,)
    return np.sort(perm[:n_holdout]), np.sort(perm[n_holdout:])


def minibatches(X: np.ndarray, M: int, rng: np.random.Generator, binarize: bool = False, drop_last: bool = True):
    """Yield the minibatches of one epoch, in a fresh random order.

    Parameters
    ----------
    X : ndarray, shape (N, D)
        The data set, one datapoint per row. It is never copied as a whole:
        each step gathers its M rows through the index permutation.
    M : int
        Minibatch size (the paper uses M = 100).
    rng : np.random.Generator
        Draws the permutation (a new one on every call, so every epoch is
        shuffled differently) and, with ``binarize``, the binary pixels.
    binarize : bool
        Dynamic binarisation: each batch is replaced by a fresh Bernoulli draw,
        pixel = 1 with probability equal to its grey level,
        ``(rng.random((M, D)) < batch)`` cast to ``X.dtype``. Needs values in [0, 1].
    drop_last : bool
        When M does not divide N, the last ``N % M`` datapoints of the
        permutation form a smaller batch. ``True`` (default) drops it, so every
        step averages over exactly M points, as in the paper; since the
        permutation changes each epoch, a different remainder is left out
        each time. ``False`` yields it as a final batch of shape (N % M, D).

    Returns
    -------
    generator of ndarray of X.dtype, shape (M, D)
        One epoch. Each batch is a new array (safe to keep or modify).
        Argument errors are raised here, at the call, not at the first step.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator (e.g. np.random.default_rng(0)), not {type(rng).__name__}; "
            "a seed would repeat the same order every epoch."
        )
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D array of shape (N, D), one datapoint per row; got {np.shape(X)}.")
    N = len(X)
    M = check_scalar(int(M), "the minibatch size M", int, min_val=1)
    if drop_last and M > N:
        raise ValueError(f"M={M} is larger than the data set (N={N}), so drop_last=True would yield no batch.")
    # Checked above, at the call; the epoch itself starts at the first next().
    return _epoch(X, M, rng, binarize, drop_last)


def _epoch(X, M, rng, binarize, drop_last):
    """The generator behind :func:`minibatches` (arguments already checked)."""
    N = len(X)
    perm = rng.permutation(N)  # (N,)
    stop = N - N % M if drop_last else N
    for start in range(0, stop, M):
        batch = X[perm[start:start + M]]  # (M, D), a gathered copy of M rows
        if binarize:
            lo, hi = batch.min(), batch.max()
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"binarize=True needs values in [0, 1] (they are Bernoulli probabilities), "
                    f"but this batch has values in [{lo:g}, {hi:g}]; rescale X first."
                )
            batch = binarize_dynamic(batch, rng)  # (M, D) in {0, 1}
        yield batch
