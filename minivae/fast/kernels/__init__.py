"""Numba kernels for one training step, each with a NumPy twin of the same signature.

The readable code is in :mod:`minivae.layers`, :mod:`minivae.estimator`, :mod:`minivae.model` and
:mod:`minivae.optim`; these kernels are its fast twin (beside it, never inside it: nothing
readable imports this package). Each jitted kernel ``k`` has a reference ``k_numpy`` built from
the readable functions, with the same arguments and the same effect, and ``TWINS`` pairs them for
the tests (``tests/test_kernels.py``). The kernels know nothing of the model: they take arrays and
write into arrays the caller owns, so a training step allocates nothing large. They
draw no random numbers: ``eps`` always comes from outside.

What is fused (one pass over the data each), module by module:

- :mod:`~minivae.fast.kernels.activations`: ``bias_act`` (bias add and activation,
  ``a += b; h = act(a)``); ``bias_act_backward`` (activation derivative and the bias gradient).
- :mod:`~minivae.fast.kernels.heads`: ``bernoulli_head`` (bias add, log p(x|z) from the logits
  and its gradient, and the bias gradient; exact for any logit, no clipping); ``gaussian_head``
  (the same for the Gaussian decoder).
- :mod:`~minivae.fast.kernels.latent`: ``reparameterize_kl`` (the encoder heads' bias,
  z = mu + sigma * eps, and the analytic KL or log p(z) - log q(z|x)); ``reparameterize_kl_backward``
  (dz through the reparameterisation, plus the KL or log p(z) - log q(z|x) terms, and the heads'
  bias gradients); ``elbo_from_terms`` (the bound per datapoint).
- :mod:`~minivae.fast.kernels.updates`: ``sgd_step``, ``adagrad_step``, ``adam_step`` (in-place
  updates with the weight decay added to the gradient); ``sgd_part``, ``adagrad_part``,
  ``adam_part`` (the same for a range of elements, on the calling thread alone).
- :mod:`~minivae.fast.kernels.evaluation`: ``bernoulli_ll``, ``gaussian_ll``,
  ``log_mean_exp_accumulate`` (forward only, for the recorded bound and log p(x)).
- :mod:`~minivae.fast.kernels.counts`: ``count_bad`` (the data check without a temporary);
  ``count_nonzero``.
- :mod:`~minivae.fast.kernels.sparse`: the two products with a mostly-zero input x, by an index of
  its nonzero entries or by ranges of rows.
- :mod:`~minivae.fast.kernels.elementary`: ``exp_``, ``tanh_``, ``log1p_unit`` (vectorisable,
  within a few ulp of NumPy) and what the kernels build on them;
  :mod:`~minivae.fast.kernels.common`: Numba, the compile options and the threads.

The underscored ``_<kernel>_rows`` functions are the kernels' work on a range of rows, on the
calling thread: the two-thread step (:mod:`minivae.fast.step`) calls them through this package,
so a test's spy put here sees its calls.

Other matrix products are *not* jitted: the step calls NumPy's BLAS (OpenBLAS here) as
``np.matmul(a, b, out=buffer)``, with transposes passed as views (``h.T``), which BLAS reads
without a copy. A jitted loop (i-k-j order, vectorised, fastmath) takes 2.3 ms for the
100 x 784 x 500 float32 product on one core, OpenBLAS 0.78 ms (float64: 4.4 and 1.5 ms);
``np.dot`` inside Numba would call SciPy's second copy of OpenBLAS, with its own thread pool. The
products are the floor of a step (see ``docs/performance.md``); everything else is in the kernels.
"""

from __future__ import annotations

from . import activations, counts, elementary, evaluation, heads, latent, sparse, updates
from .activations import _act_backward_rows, _bias_act_rows, bias_act, bias_act_backward
from .common import ACT_CODES, JIT_ENABLED, PARALLEL_MIN_SIZE, PARALLEL_MIN_SIZE_FLAT
from .counts import count_bad, count_nonzero
from .elementary import exp_, exp_array, log1p_unit, log1p_unit_array, tanh_, tanh_array
from .evaluation import bernoulli_ll, gaussian_ll, log_mean_exp_accumulate
from .heads import _bernoulli_rows, _gaussian_rows, bernoulli_head, gaussian_head
from .latent import _elbo_rows, _reparameterize_kl_rows, elbo_from_terms, reparameterize_kl, reparameterize_kl_backward
from .sparse import (sparse_columns, sparse_index, sparse_matmul, sparse_matmul_rows, sparse_matmul_t,
                     sparse_matmul_t_rows, sparse_rows)
from .updates import adagrad_part, adagrad_step, adam_part, adam_step, sgd_part, sgd_step

__all__ = [
    "ACT_CODES", "TWINS", "JIT_ENABLED", "PARALLEL_MIN_SIZE", "PARALLEL_MIN_SIZE_FLAT",
    "bias_act", "bias_act_backward", "bernoulli_head", "gaussian_head",
    "reparameterize_kl", "reparameterize_kl_backward", "elbo_from_terms",
    "sgd_step", "adagrad_step", "adam_step", "sgd_part", "adagrad_part", "adam_part", "count_bad",
    "sparse_index", "sparse_rows", "sparse_columns", "sparse_matmul", "sparse_matmul_t", "count_nonzero",
    "sparse_matmul_rows", "sparse_matmul_t_rows",
    "bernoulli_ll", "gaussian_ll", "log_mean_exp_accumulate",
    "exp_", "tanh_", "log1p_unit", "exp_array", "tanh_array", "log1p_unit_array",
]

#: Every public kernel and its NumPy reference (same signature, same effect).
TWINS = {**activations.TWINS, **heads.TWINS, **latent.TWINS, **updates.TWINS, **evaluation.TWINS, **counts.TWINS,
         **sparse.TWINS, **elementary.TWINS}
