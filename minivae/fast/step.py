"""The fast twin of the readable AEVB step: fused kernels around BLAS, buffers reused.

:class:`FastAEVB` computes what :class:`minivae.steps.AEVB` computes for the
stock model (``VAE.loss_and_grads`` then ``optimizer.step``), in the same order,
with four differences: the elementwise work between the matrix products runs
in fused kernels (:mod:`minivae.fast.kernels`); every product writes into a
buffer allocated once per minibatch shape (``np.matmul(..., out=...)``,
transposes as views); and mu and log_var come from one product with
``[W_mu | W_lv]``; and for a mostly-zero input (MNIST), the two products
with x skip its zeros. Parameters and gradients are the layers' own arrays, read
and written in place, so checkpoints, evaluation and plots see one model.

It refuses (:class:`FastPathUnavailable`, with the reason) any model or
optimiser that :func:`minivae.fast.eligibility.why_not` does not recognise as
the library's unchanged code.

One call of :func:`fast_loss_and_grads` reads, in order: ``_Run`` (the checked
inputs, the workspace, how the step runs), ``_forward`` (the forward pass of
:mod:`minivae.fast.forward`, on this thread or by halves on two), the loss, then
``_backward`` (each layer's gradients from the output down, each array's update
right after its gradient: ``_weight_gradient``, on two threads
``_weight_gradient_on_two``).
"""

from __future__ import annotations

import numpy as np

from ..optim import Adagrad, Adam, SGD, decayed_gradient
from ..steps import AEVB, StepResult
from ..run.threads import usable_cores
from . import blas, forward, fused, kernels
from .eligibility import FastPathUnavailable, layer_pairs, why_not
from .pair import process_pair

__all__ = ["FastAEVB", "fast_loss_and_grads", "fast_update", "blas_threads"]

_KEEP_WORKSPACES = 4   # minibatch shapes kept (training, a last short batch, evaluation, ...)
SPARSE_MAX_DENSITY = 0.25  # x's nonzero fraction up to which its products skip the zeros (MNIST: 0.19)
_NO_FLAGS = np.zeros(3, np.int64)  # what the calling thread's half of a compiled task marks (nobody reads it)
PAIR_MIN_WORK = 4_000_000  # rows x weights of a layer from which the two-thread step splits its work


def blas_threads():
    """The thread count of NumPy's BLAS now (threadpoolctl), or None if it cannot be told."""
    from threadpoolctl import threadpool_info
    counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return min(counts) if counts else None


_BLAS = []


class _one_blas_thread:
    """A context in which NumPy's BLAS runs on one thread, the previous counts restored after.

    The BLAS libraries are found once (threadpoolctl), then set directly through
    threadpoolctl's controllers for them: 7 us a step instead of 30 for ``limit()``.
    """

    def __enter__(self):
        if not _BLAS:
            from threadpoolctl import ThreadpoolController
            _BLAS.extend(ThreadpoolController().select(user_api="blas").lib_controllers)
        self.before = [lib.get_num_threads() for lib in _BLAS]
        for lib in _BLAS:
            lib.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        for lib, n in zip(_BLAS, self.before):
            lib.set_num_threads(n)


class _Workspace:
    """Every array one fast step writes, for one minibatch shape (M, L); allocated once."""

    def __init__(self, model, M, L):
        R, D, J, hs = L * M, model.D, model.J, model.H
        self.enc_layers, self.dec_layers = layer_pairs(model.encoder.trunk), layer_pairs(model.decoder.trunk)
        dec = model.decoder
        self.out_layers = [dec.logits] if dec.kind == "bernoulli" else [dec.mean_layer, dec.log_var]
        new = lambda *shape: np.empty(shape, dtype=model.dtype)  # noqa: E731
        last = hs[-1] if hs else D                       # what the encoder heads see
        self.x = new(M, D)                               # x in the model's dtype, when it is not already
        self.enc_a, self.enc_h = [new(M, h) for h in hs], [new(M, h) for h in hs]
        self.enc_dh, self.enc_da = [new(M, h) for h in hs], [new(M, h) for h in hs]
        self.W_heads, self.gW_heads = new(last, 2 * J), new(last, 2 * J)
        self.forward_work = M * (sum(lin.params["W"].size for lin, _ in self.enc_layers + self.dec_layers)
                                 + self.W_heads.size + sum(lin.params["W"].size for lin in self.out_layers))
        self.heads, self.dheads = new(M, 2 * J), new(M, 2 * J)   # [mu | log_var], [dmu | dlog_var]
        self.kl, self.log_ratio = new(M), new(R)
        self.z, self.dz = new(R, J), new(R, J)
        self.dec_a, self.dec_h = [new(R, h) for h in hs], [new(R, h) for h in hs]
        self.dec_dh, self.dec_da = [new(R, h) for h in hs], [new(R, h) for h in hs]
        self.out_a, self.out_da, self.ll = new(R, D), new(R, D), new(R)
        self.parts, self.parts2 = new(2, D), new(2, D)  # the output biases' gradients of each half of the rows
        if model.decoder.kind == "gaussian":
            self.out_a2, self.out_da2 = new(R, D), new(R, D)     # the log-variance head
            self.dh_tmp = new(R, hs[-1] if hs else J)
        self.index = None    # x's nonzero entries (kernels.sparse_index), made at the first one-thread sparse step

    def sparse_index(self, x):
        """Index x's nonzero entries into buffers kept here (:func:`kernels.sparse_index`); return
        (rptr, rcol, rval), (cptr, crow, cval)."""
        if self.index is None:
            M, D = x.shape
            self.index = (np.empty(M + 1, np.int64), np.empty(M * D, np.int32), np.empty(M * D, x.dtype),
                          np.empty(D + 1, np.int64), np.empty(M * D, np.int32), np.empty(M * D, x.dtype))
        kernels.sparse_index(x, *self.index)
        return self.index[:3], self.index[3:]


def _workspace(cache, model, M, L):
    ws = cache.pop((M, L), None)
    if ws is None:
        ws = _Workspace(model, M, L)
        while len(cache) >= _KEEP_WORKSPACES:
            cache.pop(next(iter(cache)))                 # the least recently used
    cache[(M, L)] = ws                                   # re-inserted: now the most recent
    return ws


def _checked_x(model, x):
    """The checks of :meth:`VAE.check_x` without temporaries; on any doubt, the readable check."""
    if (isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype in (np.float32, np.float64) and x.shape[1] == model.D
            and len(x)):
        lo, hi = (0.0, 1.0) if model.decoder.support == "unit" else (-np.inf, np.inf)
        if kernels.count_bad(x if x.flags.c_contiguous else np.ascontiguousarray(x), lo, hi) == 0:
            return x
    return model.check_x(x)  # raises the readable path's one-sentence error


def _checked_eps(model, eps, M):
    """The checks of :meth:`VAE.check_eps` without temporaries, eps C-contiguous in the model's dtype;
    on any doubt, the readable check."""
    if (isinstance(eps, np.ndarray) and eps.ndim == 3 and eps.shape[1:] == (M, model.J) and len(eps)
            and eps.dtype == model.dtype and eps.flags.c_contiguous
            and kernels.count_bad(eps.reshape(-1, model.J), -np.inf, np.inf) == 0):
        return eps
    return np.ascontiguousarray(model.check_eps(eps, M))  # raises the readable path's error, or converts


class _Updates:
    """The optimiser update, applied array by array while each gradient is still in cache.

    ``Optimizer.step`` semantics: ``t`` counts one update for the whole step
    (taken before the first array, as the readable ``step`` does), and every
    array gets the update of :func:`fast_update`. Arrays are independent of
    each other, so the order in which they are updated does not change a
    number; each is updated only after its last use in the step.
    """

    def __init__(self, optimizer, params, weight_decay, views, serial=False):
        self.optimizer, self.weight_decay, self.views, self.serial = optimizer, weight_decay, views, serial
        self.names = {id(p): name for name, p in params.items()}
        self.done = 0
        optimizer.t += 1

    def task(self, p, g, lo=None, hi=None):
        """The update of p (of its flat elements [lo, hi)) as ``(function, args)``; see :func:`_update_task`."""
        return _update_task(self.optimizer, self.names[id(p)], p, g, self.weight_decay, self.views,
                            self.serial, lo, hi)

    def __call__(self, p, g):
        f, args = self.task(p, g)
        f(*args)
        self.done += 1


def _backward_rows(W, h_in, d_out, dx, gW, sparse, updates, compiled, r0, r1, half):
    """W's rows [r0, r1) (input units): their columns of ``dx = d_out W^T`` (if dx is not None), their
    rows of ``gW = h_in^T d_out`` (:func:`fused.backward_rows`), then their update ``updates[half]``
    (a task for their flat elements of W, or None); nothing else of W is read or written.
    ``compiled``: None, or ``(flags, blas)`` to make the products in one call without the GIL (the
    worker's half marks its start in ``flags``)."""
    args = (W, h_in, d_out, gW if dx is None else dx, dx is not None, gW, sparse, r0, r1)
    if compiled is None or not fused.backward_rows(compiled[0] if half else _NO_FLAGS, compiled[1], *args):
        fused.backward_rows_python(None, None, *args)
    if updates[half] is not None:
        f, args = updates[half]
        f(*args)


def _mean(v):
    """``np.mean(v)`` for a 1-D float array, by the same arithmetic (the pairwise sum, then a division
    by the count as an intp, rounded to v's dtype) without its Python layer: 40 us less in a step."""
    return v.dtype.type(np.add.reduce(v) / np.intp(len(v)))


def _bias_grad(parts, split, out):
    """The bias gradient from the column sums of one or two halves of the rows."""
    if split:
        np.add(parts[0], parts[1], out=out)
    else:
        np.copyto(out, parts[0])


def fast_loss_and_grads(model, x, eps, estimator, workspaces, update=None, sparse_input=True, pair=None):
    """:meth:`VAE.loss_and_grads` with fused kernels and reused buffers: same arguments, same results.

    ``workspaces`` is a dict the caller keeps between calls (buffers per minibatch shape).
    ``update``: None, or ``(optimizer, weight_decay)`` to apply
    ``optimizer.step(model.params, model.grads, weight_decay)`` inside the
    backward pass, each array right after its gradient (and its last use), if
    the loss is finite; then the returned loss and bound are those before the update.
    ``sparse_input``: when at most ``SPARSE_MAX_DENSITY`` of the minibatch's
    pixels are nonzero, the two products with x (the first layer's forward
    product and its weight gradient) skip the zeros (:func:`kernels.sparse_matmul`);
    False always takes the dense products.
    ``pair``: None, or a :class:`minivae.fast.pair.Pair` (with BLAS on one thread): the step's
    work on two threads, as that module describes; the numbers are the one-thread step's.
    """
    try:
        run = _Run(model, x, eps, estimator, workspaces, sparse_input, pair)
        _forward(run)
        loss = -float(_mean(run.elbo))   # known before any gradient product: a non-finite loss changes no parameter
        if update is not None and np.isfinite(loss):
            run.updates = _Updates(update[0], model.params, update[1], update[2] if len(update) > 2 else {},
                                   pair is not None)
        _backward(run)
        return loss, run.elbo
    finally:
        if pair is not None:
            pair.join()                  # an update left to the worker (or its work, after an error)


class _Run:
    """One call of :func:`fast_loss_and_grads`: its checked inputs, its workspace and how it runs.

    ``sparse``: the products with x skip its zeros; then ``index`` is x's index (the one-thread step)
    or None (the two-thread step, or ``indexed=False``: the products read x's rows and columns themselves). ``compiled``: None, or
    ``(pair.flags, blas)`` for the two-thread step's compiled calls (:mod:`minivae.fast.fused`).
    ``updates``: None, or the :class:`_Updates` applied during the backward pass.
    """

    def __init__(self, model, x, eps, estimator, workspaces, sparse_input, pair, indexed=True):
        x = _checked_x(model, x)
        eps = _checked_eps(model, eps, len(x))
        L, M, J = eps.shape
        ws = _workspace(workspaces, model, M, L)
        if x.dtype != model.dtype or not x.flags.c_contiguous:
            np.copyto(ws.x, x)
            x = ws.x
        self.model, self.ws, self.eps, self.pair = model, ws, eps, pair
        self.estimator_a = estimator == "A"
        self.read(x, sparse_input, indexed)
        self.dout = model.dtype.type(-1.0 / M)           # d loss / d elbo_i
        self.w = self.dout / L                           # d loss / d log p(x|z_l) for every l
        self.elbo = np.empty(M, model.dtype)             # (M,), new: the caller may keep it
        self.compiled = None
        if pair is not None and blas.available(x.dtype) and fused.intact():
            self.compiled = (pair.flags, blas.ADDRESS[x.dtype])
        self.updates = None
        enc = model.encoder
        np.copyto(ws.W_heads[:, :J], enc.mu.params["W"])      # [W_mu | W_lv]: both heads in one product
        np.copyto(ws.W_heads[:, J:], enc.log_var.params["W"])

    def read(self, x, sparse_input, indexed=True):
        """Take x (M, D), checked, in the model's dtype and C-contiguous, as the encoder's input: whether
        its products skip its zeros (``sparse``), and its ``index`` for the one-thread step if
        ``indexed`` (an x read by one product only, the wake phase's, is read faster without it)."""
        ws = self.ws
        self.x = x
        self.sparse = bool(sparse_input and ws.enc_layers and kernels.count_nonzero(x) <= SPARSE_MAX_DENSITY * x.size)
        self.index = ws.sparse_index(x) if self.sparse and self.pair is None and indexed else None


# --- the forward pass: minivae.fast.forward, on one thread or on two ------------------------------------

def _forward(run):
    """The forward pass (:func:`forward.forward_rows`): on this thread for the whole minibatch; with the
    pair, the two halves of the minibatch at once, from x to the likelihood, without a wait between."""
    ws, M = run.ws, len(run.x)
    args = _forward_arguments(run)
    if run.pair is None:                                 # the output biases' gradients written at once
        db = [lin.grads["b"] for lin in ws.out_layers] + [None]
        rows = None if run.index is None else run.index[0]   # (None: the sparse product reads x's rows)
        forward.forward_rows_python(None, None, True, rows, *args, db[0], db[1], 0, M)
        return
    compiled = run.compiled is not None and fused.compiled_forward(ws.enc_layers, ws.dec_layers, run.model.decoder.kind)
    split = run.pair.rows(_forward_half, (run, args, compiled), M, ws.forward_work >= PAIR_MIN_WORK, marked=compiled)
    for lin, parts in zip(ws.out_layers, (ws.parts, ws.parts2)):
        _bias_grad(parts, split, lin.grads["b"])


def _forward_half(run, args, compiled, m0, m1, half):
    """Datapoints [m0, m1) of the forward pass on this thread (half 0) or the worker (half 1): in one
    compiled call without the GIL if it can be, else as Python. The output biases' gradients of the
    half's rows go to its own row of ``parts`` (and ``parts2``)."""
    ws = run.ws
    db = ws.parts[half], (ws.parts2[half] if run.model.decoder.kind == "gaussian" else None)
    if compiled and forward.forward_rows(run.pair.flags if half else _NO_FLAGS, run.compiled[1], None, None, *args,
                                         *db, m0, m1):
        return
    forward.forward_rows_python(None, None, None, None, *args, *db, m0, m1)


def _layers(pairs, a, h):
    """The ``(W, b, act, a, h)`` of each hidden layer of a trunk, for :func:`forward.forward_rows`."""
    return tuple((lin.params["W"], lin.params["b"], act, a[k], h[k]) for k, (lin, act) in enumerate(pairs))


def _forward_arguments(run):
    """The arguments of :func:`forward.forward_rows` from ``x`` to ``elbo``: parameters and buffers."""
    model, ws = run.model, run.ws
    enc, dec = model.encoder, model.decoder
    bernoulli = gaussian = out_a2 = out_da2 = None
    if dec.kind == "bernoulli":
        bernoulli = (dec.logits.params["W"], dec.logits.params["b"])
    else:
        gaussian = (dec.mean_layer.params["W"], dec.mean_layer.params["b"], dec.log_var.params["W"],
                    dec.log_var.params["b"], dec.sigmoid_mean)
        out_a2, out_da2 = ws.out_a2, ws.out_da2
    return (run.x, run.sparse, _layers(ws.enc_layers, ws.enc_a, ws.enc_h), ws.W_heads, ws.heads, enc.mu.params["b"],
            enc.log_var.params["b"], run.eps, run.estimator_a, ws.z, ws.kl, ws.log_ratio,
            _layers(ws.dec_layers, ws.dec_a, ws.dec_h), bernoulli, gaussian, run.w, ws.ll, ws.out_a, ws.out_da,
            out_a2, out_da2, run.elbo)


# --- the backward pass, the update of each array right after its gradient -----------------------------

def _backward(run):
    """From the likelihood's gradient (``ws.out_da``) back to the encoder's first layer: the decoder
    (:func:`_backward_decoder`), z and the KL, then the encoder (:func:`_backward_encoder`)."""
    ws, enc = run.ws, run.model.encoder
    _backward_decoder(run, ws.dz)
    # through z and the KL (or log p(z) - log q(z|x)) to [mu | log_var]
    kernels.reparameterize_kl_backward(ws.dz, run.eps, ws.heads, ws.z, run.dout, run.w, run.estimator_a,
                                       ws.dheads, enc.mu.grads["b"], enc.log_var.grads["b"])
    _backward_encoder(run)
    if run.updates is not None and run.updates.done != len(run.model.params):   # a parameter beyond these
        raise RuntimeError(f"the fused update reached {run.updates.done} of {len(run.model.params)} parameters.")


def _backward_decoder(run, dz):
    """The decoder's backward pass from the likelihood's gradient (``ws.out_da``, and ``ws.out_da2``):
    each weight's gradient (:func:`_weight_gradient`), and the gradient reaching z written into ``dz``
    ((L*M, J); None: not wanted, as the wake phase of wake-sleep, where z is data)."""
    ws, dec = run.ws, run.model.decoder
    dec_layers = ws.dec_layers
    h_dec = ws.dec_h[-1] if dec_layers else ws.z
    dh = ws.dec_dh[-1] if dec_layers else dz             # gradient reaching h_dec
    if dec.kind == "bernoulli":
        _weight_gradient(run, dec.logits, h_dec, ws.out_da, dh)
    else:
        _weight_gradient(run, dec.mean_layer, h_dec, ws.out_da, dh)
        _weight_gradient(run, dec.log_var, h_dec, ws.out_da2, None if dh is None else ws.dh_tmp)
        if dh is not None:
            dh += ws.dh_tmp                              # two paths meet at h
    for k in reversed(range(len(dec_layers))):
        lin, act = dec_layers[k]
        _act_backward(run, ws.dec_dh[k], ws.dec_a[k], ws.dec_h[k], act, ws.dec_da[k], lin.grads["b"])
        _weight_gradient(run, lin, ws.dec_h[k - 1] if k else ws.z, ws.dec_da[k], ws.dec_dh[k - 1] if k else dz)


def _backward_encoder(run):
    """The encoder's backward pass from ``ws.dheads`` = [dmu | dlog_var] (M, 2J), the heads' bias
    gradients already written: the heads' weight gradients, then each hidden layer's down to x."""
    ws, enc, x = run.ws, run.model.encoder, run.x
    enc_layers, J = ws.enc_layers, run.model.J
    h_enc = ws.enc_h[-1] if enc_layers else x
    np.matmul(h_enc.T, ws.dheads, out=ws.gW_heads)       # (H, 2J)
    np.copyto(enc.mu.grads["W"], ws.gW_heads[:, :J])
    np.copyto(enc.log_var.grads["W"], ws.gW_heads[:, J:])
    if enc_layers:
        np.matmul(ws.dheads, ws.W_heads.T, out=ws.enc_dh[-1])   # both heads meet at h (the copy of W: as before)
    if run.updates is not None:
        for head in (enc.mu, enc.log_var):
            run.updates(head.params["W"], head.grads["W"])
            run.updates(head.params["b"], head.grads["b"])
    for k in reversed(range(len(enc_layers))):
        lin, act = enc_layers[k]
        _act_backward(run, ws.enc_dh[k], ws.enc_a[k], ws.enc_h[k], act, ws.enc_da[k], lin.grads["b"])
        _weight_gradient(run, lin, ws.enc_h[k - 1] if k else x, ws.enc_da[k], ws.enc_dh[k - 1] if k else None)


def _act_backward(run, dh, a, h, act, da, db):
    """kernels.bias_act_backward; with the pair, its serial form (the worker may be running)."""
    if run.pair is None:
        kernels.bias_act_backward(dh, a, h, act, da, db)
    else:
        kernels._act_backward_rows(dh, a, h, act, da, db, 0, len(dh))


def _splits(lin, rows):
    """Whether a layer's work over ``rows`` rows is worth two threads."""
    return rows * lin.params["W"].size >= PAIR_MIN_WORK


def _weight_gradient(run, lin, h_in, d_out, dx=None):
    """dx = d_out W^T (W before its update), then dW = h_in^T d_out, then W and b updated; with the
    pair, a layer worth splitting on two threads (:func:`_weight_gradient_on_two`), the others here,
    beside the worker."""
    if run.pair is not None and _splits(lin, d_out.shape[0]):
        return _weight_gradient_on_two(run, lin, h_in, d_out, dx)
    if dx is not None:
        np.matmul(d_out, lin.params["W"].T, out=dx)
    if run.sparse and h_in is run.x:
        if run.index is not None:
            kernels.sparse_matmul_t(*run.index[1], d_out, lin.grads["W"])
        else:                                            # (no index of x is made with the pair)
            kernels.sparse_matmul_t_rows(run.x, d_out, lin.grads["W"], 0, len(lin.grads["W"]))
    else:
        np.matmul(h_in.T, d_out, out=lin.grads["W"])
    if run.updates is not None:
        run.updates(lin.params["W"], lin.grads["W"])
        run.updates(lin.params["b"], lin.grads["b"])


def _weight_gradient_on_two(run, lin, h_in, d_out, dx):
    """:func:`_weight_gradient` on two threads: each takes half of W's rows (input units): their
    columns of dx, their rows of dW, and their update, which reads and writes those rows alone.
    A split layer below which the step goes on (dx wanted) leaves its update to the worker
    instead, beside the small layers that follow on this thread."""
    pair, upd, compiled = run.pair, run.updates, run.compiled
    W, gW = lin.params["W"], lin.grads["W"]
    n, C = W.shape
    columns = run.sparse and h_in is run.x
    if upd is not None and dx is not None:
        pair.rows(_backward_rows, (W, h_in, d_out, dx, gW, columns, (None, None), compiled), n, True,
                  marked=compiled is not None)
        f, args = upd.task(W, gW)
        if compiled is not None and f is kernels.adagrad_part:
            pair.start((fused.adagrad_part, (pair.flags, *args)), marked=True)
        else:
            pair.start((f, args))                        # W is not read again in this step
        upd.done += 1
        upd(lin.params["b"], lin.grads["b"])
        return
    updates = (None, None)
    if upd is not None:
        h = n // 2 if n >= 2 else n
        updates = (upd.task(W, gW, 0, h * C), upd.task(W, gW, h * C, W.size))
    pair.rows(_backward_rows, (W, h_in, d_out, dx, gW, columns, updates, compiled), n, True,
              marked=compiled is not None)
    if upd is not None:
        if updates[0] is None:                           # the kernels cannot take W: the readable update
            upd(W, gW)
        else:
            upd.done += 1
        upd(lin.params["b"], lin.grads["b"])


def _flat(arrays):
    """1-D views of C-contiguous float arrays of one dtype and shape, or None."""
    p = arrays[0]
    if not (p.dtype.kind == "f" and all(a.dtype == p.dtype and a.shape == p.shape and a.flags.c_contiguous
                                        for a in arrays)):
        return None
    return tuple(a.reshape(-1) for a in arrays)


def _flat_views(views, arrays):
    """:func:`_flat` of ``arrays``, kept in ``views`` (a dict the caller keeps) under the arrays' identities.

    A kept view holds its array, so the identity cannot be reused by another array meanwhile.
    """
    key = tuple(map(id, arrays))
    flat = views.get(key, False)
    if flat is False:
        if len(views) > 64:                      # arrays were replaced (a checkpoint loaded): forget the old ones
            views.clear()
        flat = views[key] = _flat(arrays)
    return flat


def _update_task(optimizer, name, p, g, weight_decay, views=None, serial=False, lo=None, hi=None):
    """One array's share of ``optimizer.step`` as ``(function, args)``: a fused kernel, or the readable
    update if the kernels cannot take the array.

    ``views``: a dict kept between steps, so the flat views of each array set are made once.
    ``serial``: the kernel runs on the calling thread alone (``kernels.adagrad_part``, ...).
    ``lo, hi``: only the flat elements [lo, hi) (serial); None if the kernels cannot take the array
    (the readable update is for whole arrays). The optimiser's state arrays are made here, so
    the task may run on another thread.
    """
    flatten = _flat if views is None else (lambda arrays: _flat_views(views, arrays))
    kind = type(optimizer)
    part = () if not (serial or lo is not None) else ((0, p.size) if lo is None else (lo, hi))
    if kind is Adagrad:
        flat = flatten((p, g, optimizer._slot(name, p)))
        if flat is not None:
            kernel = kernels.adagrad_part if part else kernels.adagrad_step
            return kernel, (*flat, optimizer.lr, optimizer.eps, weight_decay, *part)
    elif kind is Adam:
        flat = flatten((p, g, optimizer._slot(name + ".m", p), optimizer._slot(name + ".v", p)))
        if flat is not None:
            kernel = kernels.adam_part if part else kernels.adam_step
            return kernel, (*flat, optimizer.t, optimizer.lr, optimizer.beta1, optimizer.beta2, optimizer.eps,
                            weight_decay, *part)
    elif kind is SGD:
        flat = flatten((p, g))
        if flat is not None:
            kernel = kernels.sgd_part if part else kernels.sgd_step
            return kernel, (*flat, optimizer.lr, weight_decay, *part)
    if lo is not None and (lo, hi) != (0, p.size):
        return None
    return optimizer._update, (name, p, decayed_gradient(g, p, weight_decay))


def _update_one(optimizer, name, p, g, weight_decay, views=None):
    """One array's share of ``optimizer.step`` (:func:`_update_task`, run here)."""
    f, args = _update_task(optimizer, name, p, g, weight_decay, views)
    f(*args)


def _check_decay(weight_decay):
    if not (isinstance(weight_decay, (int, float, np.floating)) and np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay}.")


def fast_update(optimizer, params, grads, weight_decay, views=None):
    """``optimizer.step(params, grads, weight_decay)`` with one fused pass per array.

    The bookkeeping is the readable ``Optimizer.step``'s (``t`` counts updates,
    state arrays from ``_slot`` under the same names), so the state round-trips
    through checkpoints and either path can continue the other's run. An array
    the kernels cannot take (not contiguous, mixed dtypes) gets the readable update.
    ``views``: None, or a dict the caller keeps between steps (see :func:`_update_task`).
    """
    _check_decay(weight_decay)
    optimizer.t += 1
    for name, p in params.items():
        _update_one(optimizer, name, p, grads[name], weight_decay, views)


class FastAEVB(AEVB):
    """:class:`minivae.steps.AEVB` for the stock model, on the fast path (same arguments, same numbers).

    ``two_threads``: True runs each step on two threads of its own, with BLAS
    on one thread in each (:mod:`minivae.fast.pair`); False on the calling
    thread, with BLAS's own threads for the products; None (the default)
    chooses True when NumPy's BLAS runs on exactly two threads at the first
    step and two cores are usable (:meth:`takes_two_threads`). On a 2-core
    machine the two-thread MNIST step was 1.26x (float32) and 1.22x (float64)
    faster than the one-thread step with two BLAS threads (the row "two threads
    / one + BLAS's" of ``benchmarks/bench_train.py``; ``docs/architecture.md``).
    More BLAS threads than two keep BLAS's threading (not measured against the pair).

    ``sparse_input``: True lets the two products with a mostly-zero x skip its
    zeros (see :func:`fast_loss_and_grads`); False keeps them dense; None (the
    default) chooses True when each product runs on one thread: the two-thread
    step, or BLAS on one thread at the first step, as in the sweeps and on a
    busy machine (:meth:`takes_sparse_products`). Against one BLAS thread the sparse products
    made the MNIST step 1.05x (float32) and 1.09x (float64) faster; against
    two, 0.95x and 0.99x, so they are not taken there (``docs/performance.md``).

    Raises
    ------
    FastPathUnavailable
        With the reason, for anything :func:`minivae.fast.eligibility.why_not` refuses.
    """

    code_path = "fast (fused Numba kernels)"

    def __init__(self, model, optimizer, estimator="B", L=1, weight_decay=0.0, sparse_input=None, two_threads=None):
        super().__init__(model, optimizer, estimator, L, weight_decay)
        self.sparse_input = None if sparse_input is None else bool(sparse_input)   # None: chosen at the first step
        self.two_threads = None if two_threads is None else bool(two_threads)
        reason = why_not(model, optimizer)
        if reason is not None:
            raise FastPathUnavailable(reason)
        self._workspaces = {}
        self._views = {}                       # flat views of (parameter, gradient, Adagrad state) arrays

    def takes_two_threads(self):
        """Whether each step runs on two threads of its own; with ``two_threads=None``, decided (and
        kept) at the first call: True if BLAS runs on two threads then and two cores are usable. At
        the first step, not at construction, so that the thread count ``minivae train`` sets after
        building the step is the one seen."""
        if self.two_threads is None:
            self.two_threads = blas_threads() == 2 and usable_cores() >= 2
        return self.two_threads

    def takes_sparse_products(self):
        """Whether the products with a mostly-zero x skip its zeros; with ``sparse_input=None``, decided
        (and kept) at the first call: True if each product runs on one thread (the two-thread step, or
        BLAS on one thread then; measured: they pay against one BLAS thread, not against two)."""
        if self.sparse_input is None:
            self.sparse_input = self.takes_two_threads() or blas_threads() == 1
        return self.sparse_input

    def _run(self, x, eps, update=None):
        sparse = self.takes_sparse_products()
        if self.takes_two_threads():
            pair = process_pair()
            if pair.in_use.acquire(blocking=False):      # (another thread's step has it: this one runs alone)
                try:
                    with _one_blas_thread():
                        return fast_loss_and_grads(self.model, x, eps, self.estimator, self._workspaces, update,
                                                   sparse, pair)
                finally:
                    pair.in_use.release()
        return fast_loss_and_grads(self.model, x, eps, self.estimator, self._workspaces, update, sparse)

    def evaluator(self):
        """The fused twin of the recorded bound: :func:`minivae.fast.evaluate.fast_dataset_elbo`."""
        from .evaluate import fast_dataset_elbo
        return fast_dataset_elbo

    def loss_and_grads(self, x, eps):
        """The fused twin of ``model.loss_and_grads(x, eps, self.estimator)``."""
        return self._run(x, eps)

    def __call__(self, x, idx, rng):
        """The readable step's ``loss_and_grads`` then ``optimizer.step``, the update fused into the backward pass."""
        _check_decay(self.weight_decay)
        eps = self.model.sample_eps(len(x), self.L, rng)                      # (L, M, J), as the readable step
        loss, elbo = self._run(x, eps, (self.optimizer, self.weight_decay, self._views))
        return StepResult(loss, elbo)
