# %% [markdown]
# # Exercises: AEVB by hand
#
# You write the parts of Kingma & Welling's *Auto-Encoding Variational Bayes*
# (arXiv:1312.6114, equation numbers of v10) that carry the learning: every layer's
# backward pass, the gradient of the reparameterisation, the KL to the prior and its
# gradient, the gradients of both decoders' log-likelihoods, the backward passes of
# SGVB estimators A and B, the model's chain rule through $z$, Adagrad's update and one
# step of Algorithm 1. At the end, a VAE trains on digits **through your functions**:
# not through minivae's, and not through its fast Numba path.
#
# **How it is graded.** After each exercise a locked cell runs minivae's own checks:
# finite differences in float64 (`minivae.gradcheck`, a relative error below
# `TOLERANCE = 1e-7`; a correct gradient gives about `1e-10`, a wrong one `1e-2` or more)
# and tests of meaning (a Monte-Carlo KL, numbers worked out by hand, the library's own
# step). Each prints, per function, PASS or FAIL, the relative error and the tolerance.
# Replace each `# YOUR CODE HERE` and the `raise NotImplementedError()` under it by your
# code; the lines around them stay as they are. From a shell,
# `python -m minivae.teaching.exercises grade this_notebook.ipynb` grades the whole notebook.
#
# **Conventions** (those of minivae): a minibatch `x` is (M, D), one datapoint per row; a
# layer computes `x @ W + b` with `W` of shape (in, out) (the paper's $Wx$); `mu`,
# `log_var` are (M, J); `eps` and `z` are (L, M, J). A backward function receives the
# upstream gradient `dout` (the gradient of some scalar with respect to the function's
# output) and returns the gradient with respect to its inputs. Gradients are named
# `d<name>`. `log_var` is the log of the **variance** $\sigma^2$, so
# $\sigma = \exp(\text{log\_var}/2)$.

# %% nbgrader=setup
import numpy as np

from minivae import estimator as est
from minivae.estimator import log_diag_gaussian_grad, log_standard_normal_grad
from minivae.teaching.exercises import grade
from minivae.layers import sigmoid

np.set_printoptions(precision=4)

# %% [markdown]
# ## 1. Layers (cs231n style)
#
# **Linear.** $\text{out} = x W + b$ with $x$ (M, in), $W$ (in, out), $b$ (out,). Given
# $\text{dout} = \partial f / \partial\, \text{out}$ (M, out), return
# $dx = \text{dout}\, W^\top$, $dW = x^\top \text{dout}$ and $db = \sum_i \text{dout}_i$.

# %% nbgrader=solution id=linear_backward
def linear_backward(dout, x, W):
    """Backward pass of out = x @ W + b.

    Parameters
    ----------
    dout : ndarray (M, out)
    x : ndarray (M, in), the layer's input in the forward pass
    W : ndarray (in, out)

    Returns
    -------
    dx : ndarray (M, in);  dW : ndarray (in, out);  db : ndarray (out,)
    """
    ### BEGIN SOLUTION
    dx = dout @ W.T           # (M, in)
    dW = x.T @ dout           # (in, out)
    db = dout.sum(axis=0)     # (out,)
    ### END SOLUTION
    return dx, dW, db


# %% nbgrader=test id=test_linear_backward points=2
grade("linear_backward", globals())

# %% [markdown]
# **Activations.** Each is elementwise; write the backward pass through whatever the
# forward pass kept: $\tanh'(a) = 1 - \tanh^2 a$ (through $h = \tanh a$),
# $\sigma'(a) = y (1 - y)$ (through $y = \sigma(a)$), $\text{relu}'(a) = [a > 0]$,
# $\text{softplus}'(a) = \sigma(a)$ (`sigmoid` is imported above).

# %% nbgrader=solution id=activations
def tanh_backward(dout, h):
    """dout (M, H), h = tanh(a) (M, H) -> da (M, H)."""
    ### BEGIN SOLUTION
    return dout * (1.0 - h * h)
    ### END SOLUTION


def sigmoid_backward(dout, y):
    """dout (M, H), y = sigmoid(a) (M, H) -> da (M, H)."""
    ### BEGIN SOLUTION
    return dout * y * (1.0 - y)
    ### END SOLUTION


def relu_backward(dout, a):
    """dout (M, H), a the input of max(a, 0) (M, H) -> da (M, H); 0 at the kink."""
    ### BEGIN SOLUTION
    return dout * (a > 0)
    ### END SOLUTION


def softplus_backward(dout, a):
    """dout (M, H), a the input of log(1 + exp(a)) (M, H) -> da (M, H)."""
    ### BEGIN SOLUTION
    return dout * sigmoid(a)
    ### END SOLUTION


# %% nbgrader=test id=test_activations points=4
grade(["tanh_backward", "sigmoid_backward", "relu_backward", "softplus_backward"], globals())

# %% [markdown]
# ## 2. The reparameterisation (Section 2.4, eq. 10)
#
# $z = \mu + \sigma \odot \epsilon$ with $\sigma = \exp(\text{log\_var} / 2)$, for L
# samples: `eps` and `z` are (L, M, J), `mu` and `log_var` (M, J). Given `dz`, return
# `dmu` and `dlog_var`, both (M, J). Each of the L samples contributes: sum over the
# sample axis. Use the `eps` you are given: it is the noise of the forward pass.

# %% nbgrader=solution id=reparameterize_backward
def reparameterize_backward(dz, log_var, eps):
    """dz (L, M, J), log_var (M, J), eps (L, M, J) -> dmu (M, J), dlog_var (M, J)."""
    ### BEGIN SOLUTION
    sigma = np.exp(0.5 * log_var)                    # (M, J)
    dmu = dz.sum(axis=0)                             # (M, J)
    dlog_var = 0.5 * sigma * (dz * eps).sum(axis=0)  # (M, J)
    ### END SOLUTION
    return dmu, dlog_var


# %% nbgrader=test id=test_reparameterize_backward points=2
grade("reparameterize_backward", globals())

# %% [markdown]
# ## 3. The KL to the prior (Appendix B)
#
# $-D_{KL}(q(z|x) \,\|\, p(z)) = \tfrac12 \sum_j \left(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\right)$.
# Return the KL itself (a non-negative number per datapoint, shape (M,)), then its
# gradient with respect to `mu` and `log_var` for each datapoint, both (M, J). The grader
# also compares your KL with a Monte-Carlo estimate $E_q[\log q(z|x) - \log p(z)]$ drawn
# through the library's sampler: the direction of the KL matters.

# %% nbgrader=solution id=kl
def kl_standard_normal(mu, log_var):
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per datapoint: (M, J), (M, J) -> (M,)."""
    ### BEGIN SOLUTION
    return -0.5 * np.sum(1.0 + log_var - mu * mu - np.exp(log_var), axis=-1)
    ### END SOLUTION


def kl_standard_normal_grad(mu, log_var):
    """Gradient of kl_standard_normal for each datapoint: dmu (M, J), dlog_var (M, J)."""
    ### BEGIN SOLUTION
    return mu.copy(), 0.5 * (np.exp(log_var) - 1.0)
    ### END SOLUTION


# %% nbgrader=test id=test_kl points=3
grade(["kl_standard_normal", "kl_standard_normal_grad"], globals())

# %% [markdown]
# ## 4. The decoders' log-likelihoods (Appendix C)
#
# **Bernoulli (C.1), from the logits $\ell$:** with $y = \sigma(\ell)$,
# $\log p(x|z) = \sum_k x_k \log y_k + (1 - x_k)\log(1 - y_k) = \sum_k x_k \ell_k - \text{softplus}(\ell_k)$.
# Return $\partial \log p / \partial \ell$, same shape as `logits`. It must stay exact
# where the sigmoid saturates ($|\ell| = 40$): never go through $\log y$.
#
# **Gaussian (C.2):** $\log \mathcal N(x; m, \text{diag}\, e^{v}) = -\tfrac12 \sum_k \left(\log 2\pi + v_k + (x_k - m_k)^2 e^{-v_k}\right)$.
# Return the gradients with respect to the mean $m$ and the log variance $v$.

# %% nbgrader=solution id=log_likelihood_grads
def bernoulli_log_likelihood_grad(x, logits):
    """x (M, D), logits (L, M, D) or (M, D) -> d log p(x|z) / d logits, same shape as logits."""
    ### BEGIN SOLUTION
    return x - sigmoid(logits)
    ### END SOLUTION


def gaussian_log_likelihood_grad(x, mean, log_var):
    """x (M, D), mean and log_var (L, M, D) -> dmean, dlog_var, each (L, M, D)."""
    ### BEGIN SOLUTION
    prec = np.exp(-log_var)
    diff = x - mean
    return diff * prec, 0.5 * (diff * diff * prec - 1.0)
    ### END SOLUTION


# %% nbgrader=test id=test_log_likelihood_grads points=3
grade(["bernoulli_log_likelihood_grad", "gaussian_log_likelihood_grad"], globals())

# %% [markdown]
# ## 5. The SGVB estimators (Section 2.3)
#
# **Estimator A** (eq. 6): $\tilde{\mathcal L}^A = \frac1L \sum_l \left[\log p(x|z_l) + \log p(z_l) - \log q(z_l|x)\right]$,
# per datapoint, with `log_px_z` (L, M), `z` (L, M, J), `mu`, `log_var` (M, J) as
# independent inputs (z held fixed: the chain rule through z comes in exercise 6).
# Given `dout` (M,), return `dlog_px_z` (L, M), `dz` (L, M, J), `dmu`, `dlog_var` (M, J).
# You may use `log_standard_normal_grad(z)` ($= -z$) and `log_diag_gaussian_grad(z, mu, log_var)`,
# which returns the partial derivatives of $\log q$ with respect to z, mu and log_var,
# each (L, M, J).
#
# **Estimator B** (eq. 7): $\tilde{\mathcal L}^B = -D_{KL}(q(z|x)\,\|\,p(z)) + \frac1L \sum_l \log p(x|z_l)$.
# Given `dout` (M,) and L, return `dlog_px_z` (L, M), `dmu` and `dlog_var` (M, J); use your
# `kl_standard_normal_grad`.

# %% nbgrader=solution id=estimators
def estimator_a_backward(dout, z, mu, log_var):
    """dout (M,) -> dlog_px_z (L, M), dz (L, M, J), dmu (M, J), dlog_var (M, J)."""
    ### BEGIN SOLUTION
    L = z.shape[0]
    w = dout / L                                            # (M,)
    dlog_px_z = np.broadcast_to(w, z.shape[:2]).copy()      # (L, M)
    dz_q, dmu_q, dlv_q = log_diag_gaussian_grad(z, mu, log_var)
    wz = w[None, :, None]                                   # (1, M, 1)
    dz = wz * (log_standard_normal_grad(z) - dz_q)          # (L, M, J)
    dmu = -(wz * dmu_q).sum(axis=0)                         # (M, J)
    dlog_var = -(wz * dlv_q).sum(axis=0)                    # (M, J)
    ### END SOLUTION
    return dlog_px_z, dz, dmu, dlog_var


def estimator_b_backward(dout, L, mu, log_var):
    """dout (M,), L samples -> dlog_px_z (L, M), dmu (M, J), dlog_var (M, J)."""
    ### BEGIN SOLUTION
    dlog_px_z = np.broadcast_to(dout / L, (L, dout.shape[0])).copy()  # (L, M)
    dmu_kl, dlv_kl = kl_standard_normal_grad(mu, log_var)
    dmu = -dout[:, None] * dmu_kl                                     # (M, J)
    dlog_var = -dout[:, None] * dlv_kl                                # (M, J)
    ### END SOLUTION
    return dlog_px_z, dmu, dlog_var


# %% nbgrader=test id=test_estimators points=4
grade(["estimator_a_backward", "estimator_b_backward"], globals())

# %% [markdown]
# ## 6. The model's chain rule through z (Section 3)
#
# The forward pass is written for you. Write the backward pass of
# $\text{loss} = -\frac1M \sum_i \tilde{\mathcal L}(x_i)$ (nats per datapoint): from
# the estimator's backward to the decoder, back through $z = \mu + \sigma\odot\epsilon$,
# into the encoder. Where two paths meet, add them: the gradient reaching `mu` comes
# through z **and** through the KL (or, for estimator A, through $\log q$).
#
# What the model gives you: `model.decoder.log_likelihood_grad(x, out, dlog_px_z)` returns
# the gradients reaching the decoder's outputs (a tuple, each (L, M, D));
# `model.decoder.backward(douts)` takes that tuple reshaped to (L*M, D) and returns `dz`
# of shape (L*M, J); `model.encoder.backward(dmu, dlog_var)` fills the encoder's
# gradients. Both fill `model.grads`, which the optimiser reads.

# %% nbgrader=solution id=loss_and_grads
def loss_and_grads(model, x, eps, estimator="B"):
    """-ELBO per datapoint for x (M, D) and noise eps (L, M, J); fills model.grads.

    Returns the loss (float) and the per-datapoint bound estimates elbo (M,).
    """
    L, M, J = eps.shape
    mu, log_var = model.encoder.forward(x)                    # (M, J) each
    z = est.reparameterize(mu, log_var, eps)                  # (L, M, J)
    out = model.decoder.forward(z.reshape(L * M, J))          # (L*M, D) each
    out = tuple(o.reshape(L, M, model.D) for o in out)        # (L, M, D) each
    log_px_z = model.decoder.log_likelihood(x, out)           # (L, M)
    if estimator == "B":
        elbo = -kl_standard_normal(mu, log_var) + np.mean(log_px_z, axis=0)   # eq. 7, your KL
    else:
        elbo = est.estimator_a(log_px_z, z, mu, log_var)                      # eq. 6
    delbo = np.full(M, -1.0 / M)                              # d loss / d elbo_i, (M,)
    ### BEGIN SOLUTION
    if estimator == "B":
        dlog_px_z, dmu_kl, dlog_var_kl = estimator_b_backward(delbo, L, mu, log_var)
        dz_direct = 0.0
    else:
        dlog_px_z, dz_direct, dmu_kl, dlog_var_kl = estimator_a_backward(delbo, z, mu, log_var)
    dout = model.decoder.log_likelihood_grad(x, out, dlog_px_z)            # (L, M, D) each
    dz_dec = model.decoder.backward(tuple(d.reshape(L * M, model.D) for d in dout))
    dz = dz_dec.reshape(L, M, J) + dz_direct                               # (L, M, J)
    dmu_z, dlog_var_z = reparameterize_backward(dz, log_var, eps)          # (M, J) each
    model.encoder.backward(dmu_z + dmu_kl, dlog_var_z + dlog_var_kl)       # two paths meet
    ### END SOLUTION
    return -float(np.mean(elbo)), elbo


# %% nbgrader=test id=test_loss_and_grads points=4
grade("loss_and_grads", globals())

# %% [markdown]
# ## 7. Adagrad (Section 5; Duchi et al., 2011)
#
# $G \leftarrow G + g^2$; $\theta \leftarrow \theta - \text{lr}\; g / (\sqrt{G} + \varepsilon)$,
# elementwise, **in place** on `p` and `G` (the model's layers hold these very arrays).

# %% nbgrader=solution id=adagrad_update
def adagrad_update(p, g, G, lr, eps):
    """One Adagrad update, in place on the parameter p and the accumulator G (same shape)."""
    ### BEGIN SOLUTION
    G += g * g
    p -= lr * g / (np.sqrt(G) + eps)
    ### END SOLUTION


# %% nbgrader=test id=test_adagrad_update points=2
grade("adagrad_update", globals())

# %% [markdown]
# ## 8. One step of Algorithm 1 (AEVB)
#
# Given a minibatch `x` (M, D): draw $\epsilon \sim \mathcal N(0, I)$ of shape (L, M, J)
# with `model.sample_eps(M, L, rng)` (the only source of randomness), compute the loss
# and gradients with your `loss_and_grads`, and, if the loss is finite, update every
# parameter `p = model.params[name]` with your `adagrad_update`, its accumulator
# `G[name]`, and the gradient `model.grads[name] + weight_decay * p` (the paper's
# $\mathcal N(0, I)$ prior on the parameters, per datapoint, is `weight_decay = 1/N`).
# If the loss is not finite, change nothing. Return the loss and the per-datapoint bounds.

# %% nbgrader=solution id=aevb_step
def aevb_step(model, x, rng, G, lr, L=1, estimator="B", weight_decay=0.0, adagrad_eps=1e-10):
    """One AEVB iteration on the minibatch x (M, D); returns (loss, elbo (M,))."""
    ### BEGIN SOLUTION
    eps = model.sample_eps(len(x), L, rng)                    # (L, M, J)
    loss, elbo = loss_and_grads(model, x, eps, estimator)
    if np.isfinite(loss):
        for name, p in model.params.items():
            g = model.grads[name] + weight_decay * p
            adagrad_update(p, g, G[name], lr, adagrad_eps)
    ### END SOLUTION
    return loss, elbo


# %% nbgrader=test id=test_aevb_step points=2
grade("aevb_step", globals())

# %% [markdown]
# ## 9. All together: your VAE, end to end, then trained
#
# `minivae.teaching.exercises.student_vae` builds the paper's VAE from **your** functions: its
# layers call your backward passes, its decoders your log-likelihood gradients, its
# `loss_and_grads` is yours and each training step is your `aevb_step`. First a
# finite-difference check of every parameter of that model; then a short training run
# on digits, compared step for step with the library's own AEVB from the same start:
# a correct set of functions follows the library's trajectory, and the grader counts how
# often each of your functions was called.

# %% nbgrader=test id=test_end_to_end points=4
grade(["end_to_end", "training"], globals())

# %% [markdown]
# Finally, a longer run that you can watch (a minute or so): MNIST when it is on this
# machine (in `$MINIVAE_DATA` or minivae's cache), else the generated digits. The bound
# is measured by the library on fixed subsets of the training and test sets (estimator B,
# fresh noise); your functions do the training.

# %% nbgrader=demo
import os

from minivae.teaching.exercises import train_student

QUICK = os.environ.get("MINIVAE_FULL") != "1"       # quick by default (a shorter run); MINIVAE_FULL=1: the full run
history = train_student(globals(), quick=True, samples=10000 if QUICK else None)
print(f"test ELBO after {history['samples'][-1]} samples: {history['test_elbo'][-1]:.1f} nats")
