"""The fast path: twins of the readable AEVB and wake-sleep steps, beside them and never inside them.

Nothing in the readable modules (layers, estimator, model, optim, steps, train)
imports this package; it imports them. The command line uses it for
``minivae train`` and ``minivae evaluate``; a notebook or a script asks for it
by name::

    from minivae.fast import aevb_step
    step = aevb_step(model, Adagrad(0.02), estimator="B", L=1, weight_decay=1 / N)
    history = fit(model, step, x_train, x_test, epochs=10)

:func:`aevb_step` returns :class:`FastAEVB` when the fast path computes exactly
what the readable step would (:func:`minivae.fast.eligibility.why_not`), and
otherwise the readable :class:`minivae.steps.AEVB` with one
:class:`FastPathWarning` naming the reason: an edited or replaced readable
function, a subclass, an unsupported layer, Numba's JIT switched off.
:func:`wake_sleep_step` does the same for the wake-sleep baseline
(:class:`FastWakeSleep`, or :class:`minivae.baselines.wakesleep.WakeSleep`),
by :func:`minivae.fast.eligibility.why_not_wake_sleep`.

The twins
---------
Every kernel in :mod:`minivae.fast.kernels` has a NumPy twin ``<kernel>_numpy``
beside it in its module, with the same signature and effect, built from the
readable functions where the arithmetic allows; ``tests/test_kernels.py`` holds
each kernel to its twin, ``tests/test_fast.py`` whole fast steps and a
fixed-seed epoch to the readable step.

=============================  ======================================  =========================================  =====================================
readable function              kernel (its module)                     twin (what it calls)                       test
=============================  ======================================  =========================================  =====================================
``Tanh``/``Sigmoid``/...       ``activations.bias_act``                ``bias_act_numpy`` (the layer's forward)   test_kernels::test_bias_act
``.forward`` + ``Linear`` b
``*.backward`` (activations)   ``activations.bias_act_backward``       ``bias_act_backward_numpy`` (the layer)    test_kernels::test_bias_act_backward
``bernoulli_log_likelihood``   ``heads.bernoulli_head``                ``bernoulli_head_numpy`` (both functions)  test_kernels::test_bernoulli_head
and its ``_grad``
``gaussian_log_likelihood``    ``heads.gaussian_head``                 ``gaussian_head_numpy`` (both + Sigmoid)   test_kernels::test_gaussian_head
and its ``_grad``
``reparameterize``,            ``latent.reparameterize_kl``            ``reparameterize_kl_numpy``                test_kernels::test_reparameterize_kl
``kl_standard_normal``,
``log_standard_normal``,
``log_diag_gaussian``
``reparameterize_backward``,   ``latent.reparameterize_kl_backward``   ``reparameterize_kl_backward_numpy``       test_kernels::test_reparameterize_kl_backward
``estimator_a_backward``,                                              (``estimator_a_backward``,
``estimator_b_backward``                                               ``estimator_b_backward``, ...)
``estimator_b``,               ``latent.elbo_from_terms``              ``elbo_from_terms_numpy``                  test_kernels::test_elbo_from_terms_is_the_estimator
``estimator_a`` (from the
terms above)
``decayed_gradient`` +         ``updates.sgd_step``                    ``sgd_step_numpy``                         test_kernels::test_optimizer_steps
``sgd_update``
``decayed_gradient`` +         ``updates.adagrad_step``                ``adagrad_step_numpy``                     test_kernels::test_optimizer_steps
``adagrad_update``
``decayed_gradient`` +         ``updates.adam_step``                   ``adam_step_numpy``                        test_kernels::test_optimizer_steps
``adam_update``
(the three updates above,      ``updates.sgd_part``,                   ``sgd_step_numpy`` etc. on the range       test_kernels::test_optimizer_parts
on a range of the elements)    ``updates.adagrad_part``,
                               ``updates.adam_part``
``bernoulli_log_likelihood``   ``evaluation.bernoulli_ll``             ``bernoulli_ll_numpy``                     test_kernels::test_bernoulli_ll
(forward only, evaluation)
``gaussian_log_likelihood``    ``evaluation.gaussian_ll``              ``gaussian_ll_numpy`` (+ Sigmoid)          test_kernels::test_gaussian_ll
(forward only, evaluation)
``evaluate.logmeanexp`` and    ``evaluation.log_mean_exp_accumulate``  ``log_mean_exp_accumulate_numpy``          test_kernels::test_log_mean_exp_accumulate
``np.logaddexp``
``utils.check_matrix``         ``counts.count_bad``                    ``count_bad_numpy``                        test_kernels::test_count_bad
``np.count_nonzero``           ``counts.count_nonzero``                ``count_nonzero_numpy``                    test_kernels::test_sparse_index_is_its_row_half_then_its_column_half
``x @ W``, ``x.T @ G`` for a   ``sparse.sparse_index``,                ``sparse_index_numpy`` etc.                test_kernels::test_sparse_index,
mostly-zero x (``np.matmul``)  ``sparse.sparse_rows``,                 (``np.nonzero``, ``np.matmul`` of the      test_kernels::test_sparse_matmul_is_the_dense_product
                               ``sparse.sparse_columns``,              dense x)
                               ``sparse.sparse_matmul(_t)``
(the same, by a range of rows  ``sparse.sparse_matmul_rows``,          ``sparse_matmul_rows_numpy`` etc.          test_kernels::test_sparse_products_by_rows_need_no_index_and_give_the_indexed_numbers
of x or of x.T, no index)      ``sparse.sparse_matmul_t_rows``         (``np.matmul`` of the rows)
``np.exp``/``tanh``/``log1p``  ``elementary.exp_``,                    ``exp_array_numpy`` etc.                   test_kernels::test_exp_within_one_ulp_with_underflow_and_overflow
                               ``elementary.tanh_``,
                               ``elementary.log1p_unit``
=============================  ======================================  =========================================  =====================================

Two threads
-----------
With BLAS on two threads, :class:`FastAEVB` runs each step on two threads of
its own (:mod:`minivae.fast.pair`): the forward pass by halves of the
minibatch, the big layers' backward by halves of their weights' rows, each
thread calling BLAS on one thread. The arithmetic is the one-thread step's,
row for row; the tests run every agreement test both ways
(``tests/test_fast.py``, ``tests/test_pair.py``). For the paper's shape (one
hidden layer each side, a Bernoulli decoder), each thread's forward half and
each backward half is one call without the GIL (:mod:`minivae.fast.fused`):
the forward pass of :mod:`minivae.fast.forward` and the backward rows, compiled,
with NumPy's own ``?gemm`` called from Numba the way ``np.matmul`` calls it
(:mod:`minivae.fast.blas`), so the numbers are bit for bit those of the same
functions run as Python (``tests/test_fused.py``). If a kernel of
:mod:`minivae.fast.kernels` has been replaced, the step runs them as Python,
so the replacement is what runs.

Evaluation
----------
:mod:`minivae.fast.evaluate` has the twins of :func:`minivae.train.dataset_elbo`
(``fast_dataset_elbo``, what ``fit`` records when ``minivae train`` runs the fast
step) and :func:`minivae.evaluate.log_likelihood` (``fast_log_likelihood``, for
``minivae evaluate``): the same draws from the Generator, the same numbers, for
models the fast path accepts; the readable functions otherwise.

What stays arithmetic of its own in the kernels, and why: the loops themselves
(fused so each array is read once), the vectorisable ``exp_``/``tanh_``/``log1p_unit``
(Numba's scalar libm calls are 10-40x slower), and the sums over samples and rows
in a fixed order; each is held to its twin by the tests above.
"""

from __future__ import annotations

import os
import warnings

from ..steps import AEVB

__all__ = ["aevb_step", "wake_sleep_step", "FastAEVB", "FastWakeSleep", "FastPathWarning", "FastPathUnavailable",
           "why_not", "jit_enabled"]


class FastPathWarning(UserWarning):
    """The fast path stepped aside; training runs the readable code. The message says why."""


def jit_enabled():
    """False when NUMBA_DISABLE_JIT is set (the kernels would then run as slow Python)."""
    return os.environ.get("NUMBA_DISABLE_JIT", "0").strip() in ("", "0")


def __getattr__(name):
    if name == "FastAEVB":                    # imported on first use: loading it compiles nothing, but loads Numba
        from .step import FastAEVB
        return FastAEVB
    if name == "FastWakeSleep":
        from .wakesleep import FastWakeSleep
        return FastWakeSleep
    if name in ("FastPathUnavailable", "why_not"):   # (so python -m minivae.fast.eligibility runs it only once)
        from . import eligibility
        return getattr(eligibility, name)
    raise AttributeError(f"module 'minivae.fast' has no attribute {name!r}")


def aevb_step(model, optimizer, estimator="B", L=1, weight_decay=0.0, fast=True):
    """The AEVB step for ``model``: the fast twin where it is exact, else the readable one.

    Parameters
    ----------
    model, optimizer, estimator, L, weight_decay
        As for :class:`minivae.steps.AEVB`.
    fast : bool
        False always gives the readable step (no warning).

    Returns
    -------
    FastAEVB or minivae.steps.AEVB
        With one :class:`FastPathWarning` naming the reason when ``fast`` was
        asked for and the readable step is returned.
    """
    if fast:
        from .eligibility import why_not
        reason = _refusal(why_not(model, optimizer))
        if reason is None:
            from .step import FastAEVB
            return FastAEVB(model, optimizer, estimator, L, weight_decay)
    return AEVB(model, optimizer, estimator, L, weight_decay)


def wake_sleep_step(model, opt_theta, opt_phi, weight_decay=0.0, L=1, fast=True):
    """The wake-sleep step for ``model``: the fast twin where it is exact, else the readable one.

    Parameters
    ----------
    model, opt_theta, opt_phi, weight_decay, L
        As for :class:`minivae.baselines.wakesleep.WakeSleep`.
    fast : bool
        False always gives the readable step (no warning).

    Returns
    -------
    FastWakeSleep or minivae.baselines.wakesleep.WakeSleep
        With one :class:`FastPathWarning` naming the reason when ``fast`` was
        asked for and the readable step is returned.
    """
    from ..baselines.wakesleep import WakeSleep
    if fast:
        from .eligibility import why_not_wake_sleep
        reason = _refusal(why_not_wake_sleep(model, opt_theta, opt_phi), stacklevel=3)
        if reason is None:
            from .wakesleep import FastWakeSleep
            return FastWakeSleep(model, opt_theta, opt_phi, weight_decay, L)
    return WakeSleep(model, opt_theta, opt_phi, weight_decay, L)


def _refusal(reason, stacklevel=3):
    """``reason`` (from the eligibility check), or Numba's JIT being off; if there is one, the one
    :class:`FastPathWarning` that names it, for the caller of the step's builder."""
    if reason is None and not jit_enabled():
        reason = "Numba's JIT is disabled (NUMBA_DISABLE_JIT), so the kernels would run as slow Python"
    if reason is not None:
        warnings.warn(f"the fast path is off: {reason}; training runs the readable NumPy code.",
                      FastPathWarning, stacklevel=stacklevel)
    return reason
