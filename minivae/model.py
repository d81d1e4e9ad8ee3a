"""The VAE of Section 3 and Appendix C: encoder q_phi(z|x), decoders p_theta(x|z).

Parameter names map onto the paper: every ``enc.*`` parameter is part of
phi (the recognition model), every ``dec.*`` parameter part of theta (the
generative model); :attr:`VAE.phi` and :attr:`VAE.theta` give the two dicts.

One training step, in the notation of the paper (shapes inline)::

    mu, log_var = encoder(x)                  # (M, J) each
    z = mu + exp(log_var / 2) * eps           # (L, M, J), eps ~ N(0, I) drawn outside
    out = decoder(z)                          # (L, M, D) parameters of p(x|z)
    elbo = estimator_B(log p(x|z), mu, log_var)   # (M,)  [or estimator_A]
    loss = -mean(elbo)                        # the thing minimised (the prior: in the optimiser)

and backward is the same chain read in reverse; where two paths meet (the
gradient reaching ``mu`` comes through ``z`` and through the KL) the sum is
written out.

This module is the code that trains: :func:`minivae.train.fit` calls
:meth:`VAE.loss_and_grads` below. The fast path (:mod:`minivae.fast`) is a twin
that lives apart, imports this module, and runs only for a model it recognises
as this code unchanged.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import estimator as est
from .layers import Linear, Sigmoid, mlp, sigmoid
from .utils import as_generator, check_matrix

__all__ = ["GaussianEncoder", "BernoulliDecoder", "GaussianDecoder", "VAE", "DECODERS"]


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

    def backward_z(self, dout):
        """dz (K, J) as ``backward`` returns it, without the parameter gradients (what HMC needs)."""
        return self.trunk.backward_input(self.logits.backward_input(dout[0]))

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

    def backward_z(self, dout):
        """dz (K, J) as ``backward`` returns it, without the parameter gradients (what HMC needs)."""
        dmean, dlog_var = dout
        if self._squash is not None:
            dmean = self._squash.backward(dmean)
        dh = self.mean_layer.backward_input(dmean) + self.log_var.backward_input(dlog_var)
        return self.trunk.backward_input(dh)

    def mean(self, out):
        return out[0]

    def sample(self, out, rng):
        mean, log_var = out
        return mean + np.exp(0.5 * log_var) * as_generator(rng).standard_normal(mean.shape).astype(mean.dtype)


#: The decoders of Appendix C, by the name the configuration and the command line use.
DECODERS = {"bernoulli": BernoulliDecoder, "gaussian": GaussianDecoder}

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
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}.")
        self.encoder = GaussianEncoder(D, H, J, activation, init, rng, self.dtype)
        if decoder == "gaussian":
            self.decoder = GaussianDecoder(J, H, D, sigmoid_mean, activation, init, rng, self.dtype)
        else:
            self.decoder = DECODERS[decoder](J, H, D, activation, init, rng, self.dtype)
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
    #: True while x comes from data checked as a whole beforehand (:meth:`checked_data`).
    x_checked = False

    @contextlib.contextmanager
    def checked_data(self):
        """While active, :meth:`check_x` takes each x as checked already (an (M, D) array of the
        model's dtype, in the decoder's support): :func:`minivae.train.fit` checks its data sets
        once, then trains and evaluates here, so no minibatch is scanned again."""
        before, self.x_checked = self.x_checked, True
        try:
            yield self
        finally:
            self.x_checked = before

    def check_x(self, x):
        """Return x as a checked (M, D) array of the model's dtype (one clear error otherwise);
        inside :meth:`checked_data`, x as it is."""
        if self.x_checked:
            return x
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
        est.check_estimator(estimator)
        mu, log_var, z, out, log_px_z = self._forward(x, eps)
        if estimator == "A":
            return est.estimator_a(log_px_z, z, mu, log_var)
        return est.estimator_b(log_px_z, mu, log_var)

    def log_importance_weights(self, x, eps):
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k from eps: (K, M).

        Their mean over k is estimator A; their log-mean-exp is the
        importance-sampled estimate of log p(x) (see :mod:`minivae.evaluate`).
        """
        x = self.check_x(x)
        eps = self.check_eps(eps, len(x))
        mu, log_var, z, out, log_px_z = self._forward(x, eps)
        return log_px_z + est.log_standard_normal(z) - est.log_diag_gaussian(z, mu, log_var)

    def loss_and_grads(self, x, eps, estimator="B"):
        """-ELBO per datapoint, and its gradient in ``self.grads`` (Algorithm 1's g).

        Parameters
        ----------
        x : ndarray, shape (M, D)
        eps : ndarray, shape (L, M, J)
            Pre-drawn noise; the same eps is used forward and backward.
        estimator : {"A", "B"}
            SGVB estimator A (eq. 6) or B (eq. 7).

        Returns
        -------
        loss : float
            -(1/M) sum_i L(x_i), nats per datapoint.
        elbo : ndarray, shape (M,)
            The per-datapoint bound estimates (the reported quantity).

        The N(0, I) prior on the parameters (the paper's weight decay) is not
        part of this loss: the optimiser adds its gradient theta / N in its
        update (``optimizer.step(..., weight_decay=1/N)``), the one place the
        prior is applied (:func:`minivae.optim.decayed_gradient`).
        """
        est.check_estimator(estimator)
        x = self.check_x(x)
        eps = self.check_eps(eps, len(x))
        L, M, J = eps.shape
        mu, log_var, z, out, log_px_z = self._forward(x, eps)
        delbo = np.full(M, -1.0 / M, dtype=self.dtype)        # d loss / d elbo_i

        if estimator == "B":
            elbo = est.estimator_b(log_px_z, mu, log_var)
            dlog_px_z, dmu_kl, dlog_var_kl = est.estimator_b_backward(delbo, L, mu, log_var)
            dz_direct = 0.0
        else:
            elbo = est.estimator_a(log_px_z, z, mu, log_var)
            dlog_px_z, dz_direct, dmu_kl, dlog_var_kl = est.estimator_a_backward(delbo, z, mu, log_var)

        dout = self.decoder.log_likelihood_grad(x, out, dlog_px_z)        # (L, M, D) each
        dz_dec = self.decoder.backward(tuple(d.reshape(L * M, self.D) for d in dout))
        dz = dz_dec.reshape(L, M, J) + dz_direct                          # (L, M, J)
        dmu_z, dlog_var_z = est.reparameterize_backward(dz, log_var, eps)
        dmu = dmu_z + dmu_kl                                              # through z and through the KL
        dlog_var = dlog_var_z + dlog_var_kl
        self.encoder.backward(dmu, dlog_var)
        return -float(np.mean(elbo)), elbo

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
