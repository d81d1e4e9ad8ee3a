"""Training steps: one iteration of a training algorithm, the seam of the training loop.

:func:`minivae.train.fit` owns everything around a step (minibatches, dynamic
binarisation, the recorded bound, checkpoints, resuming, divergence, progress);
a step owns one iteration of its algorithm::

    result = step(x, idx, rng)     # x: (M, D) minibatch; idx: its rows in the training set

draws the noise it needs from ``rng`` (the loop's training Generator, so a
resumed run draws the same numbers), computes its gradients, updates its
parameters and returns a :class:`StepResult`. A new algorithm is a new
:class:`TrainingStep` subclass, not a copy of the loop:

- :class:`AEVB` here: Algorithm 1 with SGVB estimator A or B, one optimiser.
- :class:`minivae.baselines.wakesleep.WakeSleep`: two parameter groups (theta and phi),
  two optimisers, a wake and a sleep phase.
- The fast path's :class:`minivae.fast.FastAEVB`: the same AEVB step for the
  stock model, computed by fused kernels.

What a step must provide
------------------------
``__call__(x, idx, rng) -> StepResult``
    If the returned loss is not finite the step must leave the parameters
    unchanged (the loop then stops and keeps the last good checkpoint).
``optimizers() -> dict name -> Optimizer``
    Checkpointed by name; one entry ``"optimizer"`` for AEVB, ``"theta"`` and
    ``"phi"`` for wake-sleep.
``extra_state() / load_extra_state(d)``
    Any other state as a flat dict of arrays (persistent chains, tuned step
    sizes); empty by default.
``describe() -> dict``
    JSON-able settings that define the step (algorithm, estimator, L,
    optimisers and their hyperparameters); a checkpoint records it and a
    resume with other settings is refused.

What the base class gives
-------------------------
``evaluator()``
    The function that computes the recorded bound for this step's model:
    :func:`minivae.train.dataset_elbo`; the fast step gives its fused twin.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import estimator as est
from .optim import Optimizer
from .utils import check_scalar

__all__ = ["StepResult", "TrainingStep", "AEVB"]


class StepResult(NamedTuple):
    """What one training step reports to the loop.

    loss : float
        The quantity the step minimised, per datapoint (for AEVB: -ELBO).
        Not finite means the step diverged (and changed nothing).
    elbo : ndarray (M,) or None
        Per-datapoint lower bound estimates, when the step computed them
        (AEVB does; wake-sleep does not): shown in the progress bar.
    """

    loss: float
    elbo: np.ndarray | None


class TrainingStep:
    """Base class of the training algorithms' steps (see the module docstring)."""

    #: The algorithm's name, as the configuration and checkpoints spell it.
    name = "step"
    #: Which code computes the step, as ``minivae train`` reports it.
    code_path = "readable NumPy"
    def __init__(self, model):
        self.model = model

    def evaluator(self):
        """The recorded bound's function, ``(model, x, rng, estimator=...) -> float`` (nats per datapoint)."""
        from .train import dataset_elbo   # train imports this module
        return dataset_elbo

    def __call__(self, x, idx, rng) -> StepResult:  # pragma: no cover - interface
        raise NotImplementedError

    def optimizers(self) -> dict[str, Optimizer]:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_state(self) -> dict[str, np.ndarray]:
        return {}

    def load_extra_state(self, d):
        if d:
            raise ValueError(f"the {self.name} step keeps no extra state, but the checkpoint has {sorted(d)}.")

    def describe(self) -> dict:
        return {"algorithm": self.name,
                "optimizers": {k: {"type": type(o).__name__, **o.hyperparameters()}
                               for k, o in self.optimizers().items()}}

    # -- checkpoints: every optimiser's state, then the step's own ---------------------
    def state_dict(self):
        """A flat dict of arrays: ``<optimiser name>/<key>`` and ``extra/<key>``."""
        d = {}
        for key, opt in self.optimizers().items():
            d.update({f"{key}/{k}": v for k, v in opt.state_dict().items()})
        d.update({f"extra/{k}": v for k, v in self.extra_state().items()})
        return d

    def load_state_dict(self, d):
        """Restore :meth:`state_dict`, checking every array against the model."""
        for key, opt in self.optimizers().items():
            part = {k[len(key) + 1:]: v for k, v in d.items() if k.startswith(key + "/")}
            if "t" not in part:
                raise ValueError(f"the checkpoint has no state for the optimiser {key!r} of the {self.name} step.")
            opt.load_state_dict(part, params=self.model.params)
        self.load_extra_state({k[len("extra/"):]: v for k, v in d.items() if k.startswith("extra/")})


class AEVB(TrainingStep):
    """One step of Algorithm 1: draw eps, the SGVB estimator's gradient, one optimiser update.

    Parameters
    ----------
    model : minivae.model.VAE
    optimizer : minivae.optim.Optimizer
        Updates theta and phi together.
    estimator : {"A", "B"}
    L : int
        Samples of z per datapoint.
    weight_decay : float
        Passed to ``optimizer.step``: 1/N applies the N(0, I) parameter prior
        (the paper's weight decay), 0 leaves it out.
    """

    name = "aevb"

    def __init__(self, model, optimizer, estimator="B", L=1, weight_decay=0.0):
        super().__init__(model)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a minivae.optim.Optimizer, not {type(optimizer).__name__}.")
        check_scalar(L, "L (samples per datapoint)", int, min_val=1)
        self.optimizer = optimizer
        self.estimator = est.check_estimator(estimator)
        self.L = int(L)
        self.weight_decay = float(weight_decay)

    def __call__(self, x, idx, rng):
        eps = self.model.sample_eps(len(x), self.L, rng)                      # (L, M, J)
        loss, elbo = self.model.loss_and_grads(x, eps, self.estimator)   # -ELBO per datapoint
        if np.isfinite(loss):
            self.optimizer.step(self.model.params, self.model.grads, weight_decay=self.weight_decay)
        return StepResult(loss, elbo)

    def optimizers(self):
        return {"optimizer": self.optimizer}

    def describe(self):
        return {**super().describe(), "estimator": self.estimator, "L": self.L, "weight_decay": self.weight_decay}
