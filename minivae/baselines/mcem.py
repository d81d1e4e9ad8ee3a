"""Monte-Carlo EM with an HMC E-step (Appendix E): the paper's third baseline in Figure 3.

For the minibatch of datapoints x_i (rows ``idx`` of the training set), one step is

    E-step: continue each datapoint's persistent HMC chain on p_theta(z|x_i) by one
            transition (10 leapfrog steps, step size tuned to about 90 % acceptance,
            gradient grad_z log p(z) + grad_z log p_theta(x|z): :mod:`minivae.baselines.hmc`);
    M-step: 5 updates of theta (the decoder's parameters only) with the acquired
            sample z_i, each on  -(1/M) sum_i log p_theta(x_i|z_i)
            (plus the N(0, I) parameter prior as the optimiser's weight decay).

The encoder (phi) is not used: MCEM has no recognition model. Adagrad, as for
every algorithm of the paper. Each datapoint's chain moves only when its
datapoint is in a minibatch, once an epoch: this is why MCEM is not an
on-line algorithm and cannot use a large data set efficiently (Figure 3's point).

The chains live in :meth:`MCEM.extra_state` as one array z (N, J), started from
the prior p(z) = N(0, I) at the first step (a draw from the training
Generator, so a run is a deterministic function of its seed and a resumed run
continues exactly).

One step size for all chains, adapted at every step, and why: a datapoint's
chain makes one transition per epoch, too few to tune a step size of its own,
while the M acceptance probabilities of a minibatch tune a shared one at every
step. The target p_theta(z|x) moves with theta at every step anyway, so the
adaptation never stops (a constant-gain Robbins-Monro update of log eps on the
minibatch's mean acceptance probability, :func:`minivae.baselines.hmc.adapt_log_step_size`);
it follows the posteriors as they sharpen during training. (For a fixed model,
:func:`minivae.baselines.hmc.hmc_sample` tunes per datapoint during burn-in only.)
"""

from __future__ import annotations

import math

import numpy as np

from .hmc import JITTER, adapt_log_step_size, hmc_transition
from ..optim import Optimizer
from ..steps import StepResult, TrainingStep
from ..utils import check_scalar

__all__ = ["MCEM", "mstep_loss_and_grads"]


def mstep_loss_and_grads(model, x, z):
    """The M-step loss -(1/M) sum_i log p_theta(x_i|z_i) and its gradient in theta.

    Parameters
    ----------
    model : VAE
    x : ndarray (M, D)
    z : ndarray (M, J)
        One posterior sample per datapoint (the E-step's).

    Returns
    -------
    loss : float, nats per datapoint.
        The gradient is written into the decoder's ``grads`` (the ``dec.*``
        entries of ``model.grads``); log p(z) has no theta and is left out.
    """
    dec = model.decoder
    M = len(x)
    out = dec.forward(z)                                                   # (M, D) each
    log_px_z = dec.log_likelihood(x, out)                                  # (M,)
    dout = dec.log_likelihood_grad(x, out, np.full(M, -1.0 / M, dtype=model.dtype))   # d loss / d outputs
    dec.backward(dout)                                                     # fills dec.grads (dz unused)
    return -float(np.mean(log_px_z))


class MCEM(TrainingStep):
    """One step of Monte-Carlo EM: an HMC E-step on the minibatch's chains, then M-step updates of theta.

    Parameters
    ----------
    model : minivae.model.VAE
    optimizer : minivae.optim.Optimizer
        Updates theta only (the paper: Adagrad).
    n_data : int
        N, the size of the training set: one chain per datapoint.
    n_leapfrog : int
        Leapfrog steps per E-step (the paper: 10).
    target_acceptance : float in (0, 1)
        The acceptance rate the step size is tuned towards (the paper: about 0.9).
    updates_per_estep : int
        Optimiser updates of theta after each E-step (the paper: 5); 0 runs the
        E-step alone (the chains then sample the fixed model's posterior).
    weight_decay : float
        Passed to ``optimizer.step``: 1/N applies the N(0, I) parameter prior.
    step_size : float
        The initial HMC step size.
    adapt_gain : float
        The constant gain of the step-size update, log eps += gain * (mean acceptance - target).
    jitter : float
        Step-size randomisation of each transition (:func:`minivae.baselines.hmc.hmc_transition`).
    """

    name = "mcem"

    def __init__(self, model, optimizer, n_data, n_leapfrog=10, target_acceptance=0.9, updates_per_estep=5,
                 weight_decay=0.0, step_size=0.1, adapt_gain=0.1, jitter=JITTER):
        super().__init__(model)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a minivae.optim.Optimizer, not {type(optimizer).__name__}.")
        for name, value, least in (("n_data", n_data, 1), ("n_leapfrog", n_leapfrog, 1),
                                   ("updates_per_estep", updates_per_estep, 0)):
            check_scalar(value, name, int, min_val=least)
        check_scalar(target_acceptance, "target_acceptance", float, min_val=0, max_val=1, include_boundaries="neither")
        for name, value in (("weight_decay", weight_decay), ("adapt_gain", adapt_gain)):
            check_scalar(value, name, float, min_val=0)
        check_scalar(step_size, "step_size", float, min_val=0, include_boundaries="neither")
        check_scalar(jitter, "jitter", float, min_val=0, max_val=1, include_boundaries="left")
        self.optimizer = optimizer
        self.n_data, self.n_leapfrog, self.updates_per_estep = int(n_data), int(n_leapfrog), int(updates_per_estep)
        self.target_acceptance, self.weight_decay = float(target_acceptance), float(weight_decay)
        self.step_size, self.adapt_gain, self.jitter = float(step_size), float(adapt_gain), float(jitter)
        self.z = None                                  # (N, J) the chains, drawn at the first step
        self.log_step_size = math.log(self.step_size)  # the tuned log eps, shared by all chains
        self.acceptance = float("nan")                 # the last E-step's acceptance rate (for a look)

    def __call__(self, x, idx, rng):
        model = self.model
        idx = np.asarray(idx)
        if idx.shape != (len(x),) or idx.min() < 0 or idx.max() >= self.n_data:
            raise ValueError(f"the rows idx must be one index in [0, {self.n_data}) per datapoint of x; this MCEM "
                             f"step was built with n_data = {self.n_data}: build it with n_data=len(x_train).")
        if self.z is None:                             # the chains start from the prior p(z) = N(0, I)
            self.z = rng.standard_normal((self.n_data, model.J), dtype=model.dtype)

        # E-step: one HMC transition of the minibatch's chains.
        tr = hmc_transition(model, x, self.z[idx], math.exp(self.log_step_size), self.n_leapfrog, rng,
                            jitter=self.jitter)
        log_step_size = float(adapt_log_step_size(self.log_step_size, np.mean(tr.accept_prob),
                                                  self.target_acceptance, self.adapt_gain))

        # M-step: updates of theta with the acquired sample; on a non-finite loss, undo them all.
        theta_before = {k: p.copy() for k, p in model.theta.items()}
        opt_before = {k: np.array(v, copy=True) for k, v in self.optimizer.state_dict().items()}
        first_loss = None
        for k in range(max(self.updates_per_estep, 1)):
            loss = mstep_loss_and_grads(model, x, tr.z)
            first_loss = loss if first_loss is None else first_loss
            if not math.isfinite(loss):
                for name, p in model.theta.items():
                    p[...] = theta_before[name]
                self.optimizer.load_state_dict(opt_before)
                return StepResult(loss, None)
            if k < self.updates_per_estep:
                self.optimizer.step(model.theta, model.decoder.grads, weight_decay=self.weight_decay)

        self.z[idx] = tr.z
        self.log_step_size = log_step_size
        self.acceptance = float(np.mean(tr.accepted))
        return StepResult(first_loss, None)

    def optimizers(self):
        return {"theta": self.optimizer}

    def extra_state(self):
        d = {"log_step_size": np.array(self.log_step_size)}
        if self.z is not None:
            d["z"] = self.z
        return d

    def load_extra_state(self, d):
        unknown = sorted(set(d) - {"z", "log_step_size"})
        if unknown or "log_step_size" not in d:
            raise ValueError(f"the checkpoint's state of the mcem step has keys {sorted(d)}; it needs "
                             "log_step_size (and z once training has started): resume from a checkpoint of an "
                             "MCEM run.")
        log_step_size = float(d["log_step_size"])
        if not math.isfinite(log_step_size):
            raise ValueError(f"the checkpoint's MCEM step size is exp({log_step_size}); start the run again.")
        z = None
        if "z" in d:
            z = np.array(d["z"], dtype=self.model.dtype)
            if z.shape != (self.n_data, self.model.J):
                raise ValueError(f"the checkpoint holds MCEM chains of shape {z.shape}, but this step has "
                                 f"n_data = {self.n_data} chains of J = {self.model.J}: resume with the same "
                                 "training set and model.")
        self.z, self.log_step_size = z, log_step_size

    def describe(self):
        return {**super().describe(), "n_data": self.n_data, "n_leapfrog": self.n_leapfrog,
                "target_acceptance": self.target_acceptance, "updates_per_estep": self.updates_per_estep,
                "weight_decay": self.weight_decay, "step_size": self.step_size, "adapt_gain": self.adapt_gain,
                "jitter": self.jitter}
