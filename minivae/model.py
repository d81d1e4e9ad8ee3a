"""The VAE of Section 3 and Appendix C: encoder q_phi(z|x), decoders p_theta(x|z).

Parameter names map onto the paper: every ``enc.*`` parameter is part of
phi (the recognition model), every ``dec.*`` parameter part of theta (the
generative model); :attr:`VAE.phi` and :attr:`VAE.theta` give the two dicts.

One training step, in the notation of the paper (shapes inline)::

    mu, log_var = encoder(x)                  # (M, J) each
    z = mu + exp(log_var / 2) * eps           # (L, M, J), eps ~ N(0, I) drawn outside
    out = decoder(z)                          # (L, M, D) parameters of p(x|z)
    elbo = estimator_B(log p(x|z), mu, log_var)   # (M,)  [or estimator_A]
    loss = -mean(elbo) - (1/N) log p(theta)   # the thing minimised

and backward is the same chain read in reverse; where two paths meet (the
gradient reaching ``mu`` comes through ``z`` and through the KL) the sum is
written out.

That is the NumPy path (backend ``"numpy"``). Under the default backend
``"numba"`` (see :mod:`minivae.backend`), :meth:`VAE.loss_and_grads` hands the
same step to its fast twin at the end of this module, which computes the same
numbers with fused kernels and reused buffers; a reader of the paper can stop
before that section.
"""

from __future__ import annotations

import numpy as np

from . import estimator as est
from .backend import get_backend
from .backend import kernels as _kernels
from .layers import ACTIVATIONS, Linear, Sigmoid, mlp, sigmoid
from .utils import as_generator, check_matrix

__all__ = ["GaussianEncoder", "BernoulliDecoder", "GaussianDecoder", "VAE"]


def _hidden_sizes(H):
    """H as a tuple of hidden-layer sizes: 500 -> (500,), (200, 200) stays, () = no hidden layer."""
    sizes = (H,) if isinstance(H, (int, np.integer)) else tuple(H)
    for h in sizes:
        if int(h) < 1:
            raise ValueError(f"hidden layer sizes must be positive integers, got H = {H!r}.")
    return tuple(int(h) for h in sizes)


def _collect(prefix, modules):
    """Flatten named sub-modules' params/grads into two dicts with dotted names."""
    params, grads = {}, {}
    for name, module in modules.items():
        for key in module.params:
            params[f"{prefix}.{name}.{key}".replace("..", ".")] = module.params[key]
            grads[f"{prefix}.{name}.{key}".replace("..", ".")] = module.grads[key]
    return params, grads


class GaussianEncoder:
    """q_phi(z|x) = N(mu, diag sigma^2), Appendix C.2 used as encoder.

    h = tanh(x W_h + b_h); mu = h W_mu + b_mu; log sigma^2 = h W_lv + b_lv.

    Parameters
    ----------
    D, J : int
        Data size and latent size.
    H : int or tuple of int
        Hidden-layer sizes; ``()`` gives a linear encoder.
    """

    def __init__(self, D, H, J, activation="tanh", init="paper", rng=None, dtype=np.float64):
        rng = as_generator(rng)
        sizes = (D,) + _hidden_sizes(H)
        # The first layer sees the data: no gradient with respect to x is needed.
        self.trunk = mlp(sizes, activation, init, rng, dtype, need_dx=False)
        first = len(sizes) == 1  # no hidden layer: the heads see the data
        self.mu = Linear(sizes[-1], J, init, rng, dtype, need_dx=not first)
        self.log_var = Linear(sizes[-1], J, init, rng, dtype, need_dx=not first)
        self.params, self.grads = _collect("enc", {"h": self.trunk, "mu": self.mu, "log_var": self.log_var})

    def forward(self, x):
        """x: (M, D) -> mu, log_var: (M, J) each."""
        h = self.trunk.forward(x)                           # (M, H)
        return self.mu.forward(h), self.log_var.forward(h)  # (M, J), (M, J)

    def backward(self, dmu, dlog_var):
        """Fill ``grads`` from the gradients reaching mu and log_var; returns None."""
        dh_mu = self.mu.backward(dmu)
        dh_lv = self.log_var.backward(dlog_var)
        if dh_mu is not None:
            self.trunk.backward(dh_mu + dh_lv)              # (M, H): two paths meet at h


class BernoulliDecoder:
    """p_theta(x|z) with independent Bernoulli pixels, Appendix C.1.

    y = sigmoid(tanh(z W + b) W_y + b_y); the decoder returns the *logits*
    ``tanh(z W + b) W_y + b_y`` so the likelihood is computed without clipping.
    """

    kind = "bernoulli"
    support = "unit"

    def __init__(self, J, H, D, activation="tanh", init="paper", rng=None, dtype=np.float64):
        rng = as_generator(rng)
        sizes = (J,) + _hidden_sizes(H)
        self.trunk = mlp(sizes, activation, init, rng, dtype)
        self.logits = Linear(sizes[-1], D, init, rng, dtype)
        self.params, self.grads = _collect("dec", {"h": self.trunk, "logits": self.logits})

    def forward(self, z):
        """z: (K, J) -> (logits,) with logits (K, D)."""
        return (self.logits.forward(self.trunk.forward(z)),)

    def log_likelihood(self, x, out):
        """log p(x|z) summed over pixels: x (M, D), out[0] (L, M, D) -> (L, M)."""
        return est.bernoulli_log_likelihood(x, out[0])

    def log_likelihood_grad(self, x, out, dlog_px_z):
        """Gradient reaching the logits, given dlog_px_z (L, M)."""
        return (dlog_px_z[..., None] * est.bernoulli_log_likelihood_grad(x, out[0]),)

    def backward(self, dout):
        """dout: tuple of gradients for ``forward``'s outputs -> dz (K, J)."""
        return self.trunk.backward(self.logits.backward(dout[0]))

    def mean(self, out):
        """E[x|z] = sigmoid(logits)."""
        return sigmoid(out[0])

    def sample(self, out, rng):
        """A draw x ~ p(x|z), as floats in {0, 1}."""
        y = self.mean(out)
        return (as_generator(rng).random(y.shape) < y).astype(y.dtype)


class GaussianDecoder:
    """p_theta(x|z) = N(mean, diag sigma^2) per pixel, Appendix C.2.

    h = tanh(z W_h + b_h); mean = h W_m + b_m (through a sigmoid when
    ``sigmoid_mean``, as for Frey Face, so it stays in (0, 1));
    log sigma^2 = h W_lv + b_lv.
    """

    kind = "gaussian"
    support = "real"

    def __init__(self, J, H, D, sigmoid_mean=True, activation="tanh", init="paper", rng=None,
                 dtype=np.float64):
        rng = as_generator(rng)
        sizes = (J,) + _hidden_sizes(H)
        self.trunk = mlp(sizes, activation, init, rng, dtype)
        self.mean_layer = Linear(sizes[-1], D, init, rng, dtype)
        self.log_var = Linear(sizes[-1], D, init, rng, dtype)
        self.sigmoid_mean = sigmoid_mean
        self._squash = Sigmoid() if sigmoid_mean else None
        self.params, self.grads = _collect(
            "dec", {"h": self.trunk, "mean": self.mean_layer, "log_var": self.log_var})

    def forward(self, z):
        """z: (K, J) -> (mean, log_var), each (K, D)."""
        h = self.trunk.forward(z)                    # (K, H)
        mean = self.mean_layer.forward(h)            # (K, D)
        if self._squash is not None:
            mean = self._squash.forward(mean)
        return mean, self.log_var.forward(h)

    def log_likelihood(self, x, out):
        return est.gaussian_log_likelihood(x, out[0], out[1])

    def log_likelihood_grad(self, x, out, dlog_px_z):
        dmean, dlog_var = est.gaussian_log_likelihood_grad(x, out[0], out[1])
        w = dlog_px_z[..., None]
        return w * dmean, w * dlog_var

    def backward(self, dout):
        dmean, dlog_var = dout
        if self._squash is not None:
            dmean = self._squash.backward(dmean)
        dh = self.mean_layer.backward(dmean) + self.log_var.backward(dlog_var)  # two paths meet at h
        return self.trunk.backward(dh)

    def mean(self, out):
        return out[0]

    def sample(self, out, rng):
        mean, log_var = out
        return mean + np.exp(0.5 * log_var) * as_generator(rng).standard_normal(mean.shape).astype(mean.dtype)


_DTYPES = {"float64": np.float64, "float32": np.float32}


class VAE:
    """The Variational Auto-Encoder of Section 3: an encoder, a decoder and a prior N(0, I).

    Parameters
    ----------
    D : int
        Data size (784 for MNIST, 560 for Frey Face).
    H : int or tuple of int
        Hidden units of encoder and decoder (the paper: 500 MNIST, 200 Frey Face).
    J : int
        Latent size (the paper's N_z).
    decoder : {"bernoulli", "gaussian"}
    sigmoid_mean : bool
        Gaussian decoder only: squash the mean into (0, 1), as for Frey Face.
    activation : {"tanh", "relu", "softplus", "sigmoid", "identity"}
        Hidden activation (the paper: tanh).
    init : {"paper", "glorot"}
    dtype : "float64" or "float32"
        Chosen once: parameters, activations, eps and gradients all use it.
    random_state : None, int or np.random.Generator
        Used once, for the initial weights.
    """

    def __init__(self, D, H=500, J=20, decoder="bernoulli", sigmoid_mean=True, activation="tanh",
                 init="paper", dtype="float64", random_state=None):
        if int(J) < 1:
            raise ValueError(f"the latent size J must be at least 1, got J = {J}.")
        if int(D) < 1:
            raise ValueError(f"the data size D must be at least 1, got D = {D}.")
        dtype = np.dtype(dtype).name
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float64' or 'float32', not {dtype!r}.")
        rng = as_generator(random_state)
        self.D, self.J, self.H = int(D), int(J), _hidden_sizes(H)
        self.dtype = np.dtype(dtype)
        self.config = dict(D=self.D, H=list(self.H), J=self.J, decoder=decoder, sigmoid_mean=bool(sigmoid_mean),
                           activation=activation, init=init, dtype=dtype)
        self.encoder = GaussianEncoder(D, H, J, activation, init, rng, self.dtype)
        if decoder == "bernoulli":
            self.decoder = BernoulliDecoder(J, H, D, activation, init, rng, self.dtype)
        elif decoder == "gaussian":
            self.decoder = GaussianDecoder(J, H, D, sigmoid_mean, activation, init, rng, self.dtype)
        else:
            raise ValueError(f"decoder must be 'bernoulli' or 'gaussian', not {decoder!r}.")
        self.params = {**self.encoder.params, **self.decoder.params}
        self.grads = {**self.encoder.grads, **self.decoder.grads}

    # -- the paper's two parameter sets ---------------------------------------
    @property
    def phi(self):
        """Parameters of the recognition model q_phi(z|x)."""
        return self.encoder.params

    @property
    def theta(self):
        """Parameters of the generative model p_theta(x|z)."""
        return self.decoder.params

    # -- input checks ----------------------------------------------------------
    def check_x(self, x):
        """Return x as a checked (M, D) array of the model's dtype (one clear error otherwise)."""
        x = check_matrix(x, "x", n_cols=self.D, support=self.decoder.support)
        return x.astype(self.dtype, copy=False)

    def check_eps(self, eps, M):
        if not isinstance(eps, np.ndarray) or eps.ndim != 3 or eps.shape[1:] != (M, self.J) or eps.shape[0] < 1:
            shape = getattr(eps, "shape", type(eps).__name__)
            raise ValueError(f"eps must have shape (L, M, J) = (L, {M}, {self.J}) with L >= 1; got {shape}.")
        if not np.isfinite(eps).all():
            raise ValueError("eps contains NaN or infinite values.")
        return eps.astype(self.dtype, copy=False)

    def sample_eps(self, M, L=1, rng=None):
        """Draw eps ~ N(0, I) of shape (L, M, J) in the model's dtype."""
        return as_generator(rng).standard_normal((L, M, self.J), dtype=self.dtype)

    # -- forward / backward ----------------------------------------------------
    def _forward(self, x, eps):
        L, M, J = eps.shape
        mu, log_var = self.encoder.forward(x)                  # (M, J) each
        z = est.reparameterize(mu, log_var, eps)               # (L, M, J)
        out = self.decoder.forward(z.reshape(L * M, J))        # (L*M, D) each
        out = tuple(o.reshape(L, M, self.D) for o in out)      # (L, M, D) each
        log_px_z = self.decoder.log_likelihood(x, out)         # (L, M)
        return mu, log_var, z, out, log_px_z

    def elbo(self, x, eps, estimator="B"):
        """The lower bound estimate per datapoint, (M,), in nats (forward only).

        ``eps`` of shape (L, M, J) must be real noise for this to estimate the
        ELBO; eps = 0 gives a deterministic number that is *not* a lower bound.
        """
        x = self.check_x(x)
        eps = self.check_eps(eps, len(x))
        mu, log_var, z, out, log_px_z = self._forward(x, eps)
        if estimator == "A":
            return est.estimator_a(log_px_z, z, mu, log_var)
        if estimator == "B":
            return est.estimator_b(log_px_z, mu, log_var)
        raise ValueError(f"estimator must be 'A' or 'B', not {estimator!r}.")

    def log_importance_weights(self, x, eps):
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k from eps: (K, M).

        Their mean over k is estimator A; their log-mean-exp is the
        importance-sampled estimate of log p(x) (see :mod:`minivae.evaluate`).
        """
        x = self.check_x(x)
        eps = self.check_eps(eps, len(x))
        mu, log_var, z, out, log_px_z = self._forward(x, eps)
        return log_px_z + est.log_standard_normal(z) - est.log_diag_gaussian(z, mu, log_var)

    def loss_and_grads(self, x, eps, estimator="B", n_data=None):
        """-ELBO per datapoint (plus the parameter prior), and its gradient in ``self.grads``.

        Parameters
        ----------
        x : ndarray, shape (M, D)
        eps : ndarray, shape (L, M, J)
            Pre-drawn noise; the same eps is used forward and backward.
        estimator : {"A", "B"}
            SGVB estimator A (eq. 6) or B (eq. 7).
        n_data : int or None
            N, the training-set size. When given, the N(0, I) prior on the
            parameters enters as -(1/N) log p(theta) (the paper's weight
            decay; MAP on the parameters). None switches it off.
            :func:`minivae.train.fit` passes None and lets the optimiser add
            the same gradient, theta / N, in its update
            (``step(..., weight_decay=1/N)``): one pass over the parameters fewer.

        Returns
        -------
        loss : float
            -(1/M) sum_i L(x_i) - (1/N) log p(theta).
        elbo : ndarray, shape (M,)
            The per-datapoint bound estimates (the reported quantity).
        """
        if get_backend() == "numba":
            return _numba_loss_and_grads(self, x, eps, estimator, n_data)
        x = self.check_x(x)
        eps = self.check_eps(eps, len(x))
        L, M, J = eps.shape
        mu, log_var, z, out, log_px_z = self._forward(x, eps)
        delbo = np.full(M, -1.0 / M, dtype=self.dtype)        # d loss / d elbo_i

        if estimator == "B":
            elbo = est.estimator_b(log_px_z, mu, log_var)
            dlog_px_z, dmu_kl, dlog_var_kl = est.estimator_b_backward(delbo, L, mu, log_var)
            dz_direct = 0.0
        elif estimator == "A":
            elbo = est.estimator_a(log_px_z, z, mu, log_var)
            dlog_px_z, dz_direct, dmu_kl, dlog_var_kl = est.estimator_a_backward(delbo, z, mu, log_var)
        else:
            raise ValueError(f"estimator must be 'A' or 'B', not {estimator!r}.")

        dout = self.decoder.log_likelihood_grad(x, out, dlog_px_z)        # (L, M, D) each
        dz_dec = self.decoder.backward(tuple(d.reshape(L * M, self.D) for d in dout))
        dz = dz_dec.reshape(L, M, J) + dz_direct                          # (L, M, J)
        dmu_z, dlog_var_z = est.reparameterize_backward(dz, log_var, eps)
        dmu = dmu_z + dmu_kl                                              # through z and through the KL
        dlog_var = dlog_var_z + dlog_var_kl
        self.encoder.backward(dmu, dlog_var)

        loss = -float(np.mean(elbo))
        if n_data is not None:
            loss -= est.log_parameter_prior(self.params) / n_data
            for name, g in est.log_parameter_prior_grad(self.params).items():
                self.grads[name] -= g / n_data
        return loss, elbo

    # -- using the model ---------------------------------------------------------
    def encode(self, x):
        """mu, log_var of q(z|x), (M, J) each."""
        return self.encoder.forward(self.check_x(x))

    def decode(self, z):
        """The mean of p(x|z) for z of shape (K, J): (K, D)."""
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != self.J:
            raise ValueError(f"z must have shape (K, J) = (K, {self.J}); got {z.shape}.")
        return self.decoder.mean(self.decoder.forward(z))

    def generate(self, n, rng=None, sample=False):
        """Draw z ~ p(z) = N(0, I), then x from p(x|z): the paper's generative process.

        Returns the decoder's mean for each z (what the paper's Figure 5 shows),
        or a sample of x when ``sample`` is True. Shape (n, D).
        """
        rng = as_generator(rng)
        z = rng.standard_normal((n, self.J), dtype=self.dtype)
        out = self.decoder.forward(z)
        return self.decoder.sample(out, rng) if sample else self.decoder.mean(out)

    def n_params(self):
        return sum(p.size for p in self.params.values())

    def __repr__(self):
        c = self.config
        return (f"VAE(D={c['D']}, H={tuple(c['H'])}, J={c['J']}, decoder={c['decoder']!r}, "
                f"dtype={c['dtype']!r}, params={self.n_params()})")


# --- the fast twin of VAE.loss_and_grads (backend "numba") --------------------------------
#
# The same step as above, in the same order, with three differences: the
# elementwise work between the matrix products runs in fused kernels from
# minivae.kernels; every product writes into a buffer allocated once per
# minibatch shape (np.matmul(..., out=...), transposes as views); and mu and
# log_var come from one product with [W_mu | W_lv]. Parameters and gradients
# are the layers' own arrays, read and written in place.

_ACT_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}
_KEEP_WORKSPACES = 4   # minibatch shapes kept per model (training, a last short batch, evaluation, ...)




def _linear_act_pairs(trunk):
    """[(Linear, activation code), ...] of a Sequential built by :func:`minivae.layers.mlp`."""
    K = _kernels()
    layers = trunk.layers
    return [(layers[i], K.ACT_CODES[_ACT_NAMES[type(layers[i + 1])]]) for i in range(0, len(layers), 2)]


class _Workspace:
    """Every array one fast step writes, for one minibatch shape (M, L); allocated once."""

    def __init__(self, model, M, L):
        R, D, J, hs = L * M, model.D, model.J, model.H
        new = lambda *shape: np.empty(shape, dtype=model.dtype)  # noqa: E731
        last = hs[-1] if hs else D                       # what the encoder heads see
        self.x = new(M, D)                               # x in the model's dtype, when it is not already
        self.enc_a, self.enc_h = [new(M, h) for h in hs], [new(M, h) for h in hs]
        self.enc_dh, self.enc_da = [new(M, h) for h in hs], [new(M, h) for h in hs]
        self.W_heads, self.gW_heads = new(last, 2 * J), new(last, 2 * J)
        self.heads, self.dheads = new(M, 2 * J), new(M, 2 * J)   # [mu | log_var], [dmu | dlog_var]
        self.kl, self.log_ratio = new(M), new(R)
        self.z, self.dz = new(R, J), new(R, J)
        self.dec_a, self.dec_h = [new(R, h) for h in hs], [new(R, h) for h in hs]
        self.dec_dh, self.dec_da = [new(R, h) for h in hs], [new(R, h) for h in hs]
        self.out_a, self.out_da, self.ll = new(R, D), new(R, D), new(R)
        if model.decoder.kind == "gaussian":
            self.out_a2, self.out_da2 = new(R, D), new(R, D)     # the log-variance head
            self.dh_tmp = new(R, hs[-1] if hs else J)


def _workspace(model, M, L):
    cache = model.__dict__.setdefault("_numba_workspaces", {})
    ws = cache.pop((M, L), None)
    if ws is None:
        ws = _Workspace(model, M, L)
        while len(cache) >= _KEEP_WORKSPACES:
            cache.pop(next(iter(cache)))                 # the least recently used
    cache[(M, L)] = ws                                   # re-inserted: now the most recent
    return ws


def _numba_x(model, x):
    """The checks of :meth:`VAE.check_x` without temporaries; on any doubt, the readable check."""
    if isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind == "f" and x.shape[1] == model.D and len(x):
        lo, hi = (0.0, 1.0) if model.decoder.support == "unit" else (-np.inf, np.inf)
        if _kernels().count_bad(x if x.flags.c_contiguous else np.ascontiguousarray(x), lo, hi) == 0:
            return x
    return model.check_x(x)  # raises the one-sentence error of the NumPy path


def _numba_loss_and_grads(model, x, eps, estimator, n_data):
    """:meth:`VAE.loss_and_grads` with fused kernels and reused buffers: same arguments, same results."""
    K = _kernels()
    if estimator not in ("A", "B"):
        raise ValueError(f"estimator must be 'A' or 'B', not {estimator!r}.")
    x = _numba_x(model, x)
    eps = np.ascontiguousarray(model.check_eps(eps, len(x)))
    L, M, J = eps.shape
    ws = _workspace(model, M, L)
    if x.dtype != model.dtype or not x.flags.c_contiguous:
        np.copyto(ws.x, x)
        x = ws.x
    enc, dec = model.encoder, model.decoder
    enc_layers, dec_layers = _linear_act_pairs(enc.trunk), _linear_act_pairs(dec.trunk)
    dout = model.dtype.type(-1.0 / M)                    # d loss / d elbo_i
    w = dout / L                                          # d loss / d log p(x|z_l) for every l
    n = None if n_data is None else model.dtype.type(n_data)
    sum_sq = {}                                           # id(gradient) -> sum of its parameter's squares

    def decay(lin):
        """The parameter prior's gradient for a large weight, while its gradient is still in cache."""
        g, p = lin.grads["W"], lin.params["W"]
        if n is not None and g.flags.c_contiguous and p.flags.c_contiguous and p.dtype == g.dtype:
            sum_sq[id(g)] = K.weight_decay(g.reshape(-1), p.reshape(-1), n)

    # encoder: h = act(x W + b) per hidden layer; [mu | log_var] = h [W_mu | W_lv] + b
    inp = x
    for (lin, act), a, h in zip(enc_layers, ws.enc_a, ws.enc_h):
        np.matmul(inp, lin.params["W"], out=a)           # (M, H)
        K.bias_act(a, lin.params["b"], act, h)
        inp = h
    h_enc = inp
    np.copyto(ws.W_heads[:, :J], enc.mu.params["W"])
    np.copyto(ws.W_heads[:, J:], enc.log_var.params["W"])
    np.matmul(h_enc, ws.W_heads, out=ws.heads)           # (M, 2J)
    K.reparameterize_kl(ws.heads, enc.mu.params["b"], enc.log_var.params["b"], eps, estimator == "A",
                        ws.z, ws.kl, ws.log_ratio)

    # decoder on the L*M rows of z, then the likelihood and its gradient in one pass
    inp = ws.z
    for (lin, act), a, h in zip(dec_layers, ws.dec_a, ws.dec_h):
        np.matmul(inp, lin.params["W"], out=a)           # (L*M, H)
        K.bias_act(a, lin.params["b"], act, h)
        inp = h
    h_dec = inp
    dh = ws.dec_dh[-1] if dec_layers else ws.dz          # gradient reaching h_dec
    if dec.kind == "bernoulli":
        lin = dec.logits
        np.matmul(h_dec, lin.params["W"], out=ws.out_a)  # (L*M, D)
        K.bernoulli_head(ws.out_a, lin.params["b"], x, w, ws.ll, ws.out_da, lin.grads["b"])
        np.matmul(h_dec.T, ws.out_da, out=lin.grads["W"])
        decay(lin)
        np.matmul(ws.out_da, lin.params["W"].T, out=dh)
    else:
        m_lin, v_lin = dec.mean_layer, dec.log_var
        np.matmul(h_dec, m_lin.params["W"], out=ws.out_a)
        np.matmul(h_dec, v_lin.params["W"], out=ws.out_a2)
        K.gaussian_head(ws.out_a, m_lin.params["b"], ws.out_a2, v_lin.params["b"], x, dec.sigmoid_mean, w,
                        ws.ll, ws.out_da, ws.out_da2, m_lin.grads["b"], v_lin.grads["b"])
        np.matmul(h_dec.T, ws.out_da, out=m_lin.grads["W"])
        decay(m_lin)
        np.matmul(h_dec.T, ws.out_da2, out=v_lin.grads["W"])
        decay(v_lin)
        np.matmul(ws.out_da, m_lin.params["W"].T, out=dh)
        np.matmul(ws.out_da2, v_lin.params["W"].T, out=ws.dh_tmp)
        dh += ws.dh_tmp                                  # two paths meet at h

    # decoder trunk, backward
    for k in reversed(range(len(dec_layers))):
        lin, act = dec_layers[k]
        K.bias_act_backward(ws.dec_dh[k], ws.dec_a[k], ws.dec_h[k], act, ws.dec_da[k], lin.grads["b"])
        np.matmul((ws.dec_h[k - 1] if k else ws.z).T, ws.dec_da[k], out=lin.grads["W"])
        decay(lin)
        np.matmul(ws.dec_da[k], lin.params["W"].T, out=ws.dec_dh[k - 1] if k else ws.dz)

    # through z and the KL (or log p(z) - log q(z|x)) to [mu | log_var], then the encoder
    K.reparameterize_kl_backward(ws.dz, eps, ws.heads, ws.z, dout, w, estimator == "A",
                                 ws.dheads, enc.mu.grads["b"], enc.log_var.grads["b"])
    np.matmul(h_enc.T, ws.dheads, out=ws.gW_heads)       # (H, 2J)
    np.copyto(enc.mu.grads["W"], ws.gW_heads[:, :J])
    np.copyto(enc.log_var.grads["W"], ws.gW_heads[:, J:])
    if enc_layers:
        np.matmul(ws.dheads, ws.W_heads.T, out=ws.enc_dh[-1])   # both heads meet at h
    for k in reversed(range(len(enc_layers))):
        lin, act = enc_layers[k]
        K.bias_act_backward(ws.enc_dh[k], ws.enc_a[k], ws.enc_h[k], act, ws.enc_da[k], lin.grads["b"])
        np.matmul((ws.enc_h[k - 1] if k else x).T, ws.enc_da[k], out=lin.grads["W"])
        decay(lin)
        if k:                                            # no gradient for the data
            np.matmul(ws.enc_da[k], lin.params["W"].T, out=ws.enc_dh[k - 1])

    ll = ws.ll.reshape(L, M)
    if estimator == "A":
        ll = ll + ws.log_ratio.reshape(L, M)
    mean_ll = ll[0] if L == 1 else np.mean(ll, axis=0)    # (the mean of one sample is that sample, exactly)
    elbo = mean_ll - ws.kl if estimator == "B" else mean_ll.copy()   # (M,), new: the caller may keep it
    loss = -float(np.mean(elbo))
    if n_data is not None:                                # the rest of the prior, then its value in dict order
        total = 0.0
        for name, p in model.params.items():
            g = model.grads[name]
            s = sum_sq.get(id(g))
            if s is None:
                if p.flags.c_contiguous and g.flags.c_contiguous and p.dtype == g.dtype:
                    s = K.weight_decay(g.reshape(-1), p.reshape(-1), n)
                else:
                    g += p / n
                    s = float(np.sum(p.astype(np.float64) ** 2))
            total += s
        loss -= (-0.5 * total) / n_data
    return loss, elbo
