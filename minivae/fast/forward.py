"""The fast step's forward pass, written once: from x to the bound, for a range of datapoints.

:func:`forward_rows` is what :meth:`minivae.model.VAE.loss_and_grads` computes before its first
gradient, on the fast path: the encoder's hidden layers (a product, then bias and activation), the
heads ``[mu | log_var]`` in one product, z and the KL (or log p(z) - log q(z|x)), the decoder on the
L samples of each datapoint, the log-likelihood with its gradient (and the output biases'
gradients), and the bound per datapoint. The same lines run three ways:

- as Python, for the one-thread step (``whole``): each kernel takes the whole array (with Numba's
  threads for a big one), all L*M decoder rows in each product, and x's sparse product uses the
  index of its nonzero entries made for the step;
- as Python, on each thread of the two-thread step (:mod:`minivae.fast.pair`), for its half of the
  minibatch: the serial ``_<kernel>_rows`` kernels on those rows, the decoder one sample at a time;
- compiled, without the GIL, for each half of the two-thread step (:mod:`minivae.fast.fused` says
  when): the same kernels on the same rows, and each product by the ``?gemm`` call ``np.matmul``
  makes (:func:`minivae.fast.blas.matmul_into`), so the numbers are the Python run's, bit for bit.

As Python it finds each kernel in :mod:`minivae.fast.kernels` when it runs, so a kernel replaced
there (a test's spy, a reader's experiment) is what runs. Compiled, the branches on ``None``
arguments are settled when it is compiled (``flags``, ``whole``, ``index`` and the decoder it does
not have are None), so only what the two-thread step runs is compiled.
"""

from __future__ import annotations

from . import kernels
from .blas import matmul_into
from .kernels.common import njit
from .pair import mark_started

__all__ = ["forward_rows", "forward_rows_python"]


@njit(cache=True, nogil=True, error_model="numpy")
def forward_rows(flags, blas, whole, index, x, sparse, encoder, W_heads, heads, b_mu, b_lv, eps, estimator_a, z, kl,
                 log_ratio, decoder, bernoulli, gaussian, w, ll, out_a, out_da, out_a2, out_da2, elbo, db, db2, m0, m1):
    """The forward pass of datapoints [m0, m1) and of their L samples, from x to the bound.

    Parameters
    ----------
    flags : int64 array or None
        The pair's flags, marked first (:func:`minivae.fast.pair.mark_started`): the worker's
        compiled half. None as Python.
    blas : (address, ilp64) or None
        NumPy's ``?gemm`` for the compiled products (:data:`minivae.fast.blas.ADDRESS`); None as Python.
    whole : True or None
        True: the one-thread step (``m0, m1 = 0, M``), whole-array kernels. None: rows [m0, m1)
        and their decoder rows, by the serial row kernels.
    index : (rptr, rcol, rval) or None
        The one-thread step's index of x's nonzero entries
        (:func:`~minivae.fast.kernels.sparse.sparse_index`); None: x's rows are read for them.
    x : (M, D) data; ``sparse``: the first layer's product takes x's nonzero entries only.
    encoder, decoder : tuples of ``(W, b, act, a, h)``, one per hidden layer
        The weights (in, out), the bias, the activation's code, and the buffers written:
        ``a = inp W + b`` and ``h = act(a)``.
    W_heads, heads : (H, 2J) ``[W_mu | W_lv]``; (M, 2J) written: ``[mu | log_var]``.
    b_mu, b_lv : (J,) the heads' biases.
    eps : (L, M, J); ``estimator_a``: which term the estimator needs.
    z, kl, log_ratio : (L*M, J), (M,), (L*M,)
        Written (:func:`~minivae.fast.kernels.latent.reparameterize_kl`).
    bernoulli, gaussian : the decoder's output layer(s), one of them None
        ``(W, b)`` of the logits; or ``(W_mean, b_mean, W_lv, b_lv, sigmoid_mean)``.
    w : float, d loss / d log p(x|z_l).
    ll, out_a, out_da : (L*M,), (L*M, D), (L*M, D) written: log p(x|z), the output layer's
        pre-activation, and the gradient reaching it; ``out_a2``, ``out_da2``: the same for the
        Gaussian decoder's log-variance (None for the Bernoulli decoder).
    elbo : (M,) written: the bound per datapoint.
    db, db2 : (D,) written: the output biases' gradients (``whole``), or the column sums of these
        rows' gradients (from zero); ``db2`` for the Gaussian log-variance, else None.
    m0, m1 : int, the datapoints.

    Returns
    -------
    bool
        False if a compiled product could not be made (where ``np.matmul`` would not call
        ``?gemm``: one row, say), having written nothing that a second run would not write again.
    """
    if flags is not None:
        mark_started(flags)
    L, M = eps.shape[0], eps.shape[1]

    def bias_act(a, b, act, h, r0, r1):         # a += b; h = act(a), rows [r0, r1) (whole: every row)
        if whole is not None:
            kernels.bias_act(a, b, act, h)
        else:
            kernels._bias_act_rows(a, b, act, h, r0, r1)

    # encoder: h = act(x W + b), layer by layer
    inp = x
    for k in range(len(encoder)):
        W, b, act, a, h = encoder[k]
        if sparse and k == 0:
            if index is not None:
                kernels.sparse_matmul(index[0], index[1], index[2], W, a)
            else:
                kernels.sparse_matmul_rows(x, W, a, m0, m1)
        elif not matmul_into(blas, inp[m0:m1], W, a[m0:m1]):      # (M, H)
            return False
        bias_act(a, b, act, h, m0, m1)
        inp = h
    # [mu | log_var] = h [W_mu | W_lv] + b; z = mu + sigma * eps; the KL or log p(z) - log q(z|x)
    if not matmul_into(blas, inp[m0:m1], W_heads, heads[m0:m1]):  # (M, 2J)
        return False
    kernels._reparameterize_kl_rows(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio, m0, m1)
    # decoder: row l M + m is sample l of datapoint m; the one-thread step takes all L*M rows at once
    if whole is None:
        db[:] = 0.0
        if gaussian is not None:
            db2[:] = 0.0
    blocks, width = (1, L * M) if whole is not None else (L, m1 - m0)
    for l in range(blocks):
        r0 = l * M + m0
        r1 = r0 + width
        inp = z
        for k in range(len(decoder)):
            W, b, act, a, h = decoder[k]
            if not matmul_into(blas, inp[r0:r1], W, a[r0:r1]):  # (L*M, H)
                return False
            bias_act(a, b, act, h, r0, r1)
            inp = h
        # the likelihood and its gradient, in one pass
        if bernoulli is not None:
            W, b = bernoulli
            if not matmul_into(blas, inp[r0:r1], W, out_a[r0:r1]):  # (L*M, D)
                return False
            if whole is not None:
                kernels.bernoulli_head(out_a, b, x, w, ll, out_da, db)
            else:
                kernels._bernoulli_rows(out_a, b, x, w, ll, out_da, db, r0, r1)
        if gaussian is not None:
            W, b, W2, b2, sigmoid_mean = gaussian
            if not (matmul_into(blas, inp[r0:r1], W, out_a[r0:r1])
                    and matmul_into(blas, inp[r0:r1], W2, out_a2[r0:r1])):
                return False
            if whole is not None:
                kernels.gaussian_head(out_a, b, out_a2, b2, x, sigmoid_mean, w, ll, out_da, out_da2, db, db2)
            else:
                kernels._gaussian_rows(out_a, b, out_a2, b2, x, sigmoid_mean, w, ll, out_da, out_da2, db, db2, r0, r1)
    kernels._elbo_rows(ll, kl, log_ratio, estimator_a, elbo, m0, m1)
    return True


#: :func:`forward_rows` as Python (the function itself, without the JIT).
forward_rows_python = getattr(forward_rows, "py_func", forward_rows)
