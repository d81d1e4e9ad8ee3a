"""The training loop: Algorithm 1 around a training step, with the bound recorded as in Figure 2::

    repeat
        x   <- a random minibatch of M datapoints (an epoch is one permutation)
        step(x): AEVB draws eps, takes the SGVB estimator's gradient and updates
                 theta and phi (:class:`minivae.steps.AEVB`); other algorithms
                 (wake-sleep, ...) are other steps
    until the budget of training samples is spent

The loop owns everything around the step; the step owns one iteration of its
algorithm (:mod:`minivae.steps`). :func:`fit` is the loop itself, and each job
around it has one home: the arguments are checked once (``_checked_arguments``);
``_as_step`` makes an optimiser into the AEVB step;
:class:`Schedule` says when things happen; :func:`evaluation_sets` fixes the sets
the bound is recorded on; :class:`LoopState` is the position, the two Generators
and the history; :class:`DivergenceGuard` stops a run that diverged; saving and
resuming are :func:`minivae.checkpoint.save_training` and
:func:`minivae.checkpoint.resume_training`; and the loop calls hooks at named
points (as minGPT's trainer callbacks) for the rest: :class:`Evaluation`,
:class:`Checkpoints`, :class:`Progress` and :class:`StopOnSignal`.

Randomness: one Generator (from ``seed``) draws the epoch permutations, the
dynamic binarisation and the step's noise, in that order; evaluation draws its
noise from a second, independent Generator, so how often the bound is recorded
never changes the training trajectory. Both states are checkpointed with the
loop position (epoch, permutation, next batch): a run resumed from any
checkpoint it wrote ends bit for bit where the uninterrupted run ends.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import estimator as est
from .checkpoint import resume_training, save_training
from .data.batches import binarize_dynamic
from .optim import Optimizer
from .steps import AEVB, TrainingStep
from .utils import as_generator, check_matrix, check_scalar

__all__ = ["fit", "dataset_elbo", "eval_schedule", "trivial_bound", "TrainingDiverged", "TrainingInterrupted", "Hook"]


class TrainingDiverged(RuntimeError):
    """The training step's loss became NaN or infinite, or the bound fell below any sane value."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived: the current step was finished and a checkpoint written.

    Attributes: ``signum``, ``step``, ``checkpoint`` (path or None).
    """

    def __init__(self, message, signum, step, checkpoint):
        super().__init__(message)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


def dataset_elbo(model, x, rng, L=1, estimator="B", batch_size=1000):
    """Average lower bound per datapoint over ``x``, with fresh noise eps ~ N(0, I).

    This is an unbiased estimate of the ELBO averaged over the data. (Setting
    eps = 0 would give a deterministic number that is *not* a lower bound on
    log p(x); minivae never reports one.)

    Returns
    -------
    float, nats per datapoint.
    """
    rng = as_generator(rng)
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        total += float(np.sum(model.elbo(xb, model.sample_eps(len(xb), L, rng), estimator), dtype=np.float64))
    return total / len(x)


def eval_schedule(total_steps, n_points):
    """Steps at which to record the bound: ~log-spaced from step 1 to the last step."""
    steps = np.unique(np.round(np.geomspace(1, max(total_steps, 1), n_points)).astype(int))
    return [int(s) for s in steps]


def trivial_bound(x, decoder_kind):
    """log p(x) per datapoint of the model that ignores z: each pixel its own data mean (and variance).

    Any trained model's bound should beat it; :func:`fit` treats a bound far
    below it (see ``_floor``) as divergence.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    if decoder_kind == "bernoulli":
        m = np.clip(mean, 1e-3, 1 - 1e-3)
        return float(np.mean(est.bernoulli_log_likelihood(x, np.log(m) - np.log1p(-m))))
    var = np.maximum(x.var(axis=0), 1e-6)
    return float(np.mean(est.gaussian_log_likelihood(x, mean, np.log(var))))


#: Minibatches in a row below the floor before fit calls it divergence.
FLOOR_PATIENCE = 20


def _floor(x, decoder_kind):
    """The lowest bound per datapoint :func:`fit` accepts: 100 times the trivial model's scale below it."""
    t = trivial_bound(x, decoder_kind)
    return t - 100.0 * max(abs(t), x.shape[1])


def fit(model, step, x_train, x_test=None, *, M=100, L=1, estimator="B", samples=None, epochs=None,
        binarize=False, weight_decay=True, seed=0, eval_points=20, eval_train_size=10000,
        progress=True, checkpoint=None, checkpoint_every=1, resume=False, config=None, on_eval=None,
        on_checkpoint=None, evaluate=None, catch_signals=False):
    """Train ``model`` and return its history.

    Parameters
    ----------
    model : VAE
    step : minivae.steps.TrainingStep or minivae.optim.Optimizer
        The training algorithm's step. An optimiser stands for AEVB with it:
        ``AEVB(model, optimizer, estimator, L, weight_decay=1/N)`` (the readable step).
    x_train, x_test : ndarray (N, D)
        Pixels in [0, 1] for the Bernoulli decoder (grey levels are used as
        Bernoulli means unless ``binarize``). Checked once, here.
    M : int
        Minibatch size.
    L, weight_decay : used only to build the AEVB step from an optimiser
        (samples per datapoint; the N(0, I) parameter prior as weight decay 1/N).
    estimator : "A" or "B"
        The estimator of the recorded bound (and of the AEVB step built from an optimiser).
    samples, epochs : budget in training samples evaluated, or in epochs (one of them).
    binarize : bool
        Dynamic binarisation: each time a minibatch is drawn, every pixel is a
        fresh Bernoulli draw with its grey level as mean. The train/test bounds
        are then measured on one fixed binarisation of each evaluation set.
    eval_points : int
        How many log-spaced points get a train and a test bound.
    eval_train_size : int
        Size of the fixed random subset of the training set the train bound averages over.
    checkpoint : path or None
        Where to save: every ``checkpoint_every`` epochs (a float: 0.25 saves
        four times an epoch), at the end, and when a signal stops the run.
    resume : bool
        Continue from ``checkpoint``, which must exist and come from the same
        step and loop settings (else one clear error); only the budget may change.
    config : dict or None
        Saved inside checkpoints.
    on_eval : callable(history) or None
        Called after each evaluation point.
    on_checkpoint : callable(path) or None
        Called after each checkpoint is written.
    evaluate : callable(model, x, rng, estimator=...) -> float or (float, float), or None
        Computes a recorded bound, or a bound and its standard error (as
        :func:`minivae.baselines.marginal.dataset_marginal_likelihood`); by default the step's
        own (:meth:`TrainingStep.evaluator`: :func:`dataset_elbo`, or its fused twin for the fast step).
    catch_signals : bool
        SIGINT (Ctrl-C) and SIGTERM finish the current step, write a checkpoint
        and raise :class:`TrainingInterrupted` (main thread only).

    Returns
    -------
    history : dict of lists "samples", "train_elbo", "test_elbo", "train_se", "test_se", "seconds", "epoch".
        "train_se" and "test_se" are the standard errors the evaluator gave (None where it gave none).

    Raises
    ------
    TrainingDiverged
        The loss became non-finite, or the bound stayed far below the trivial model's
        (:class:`DivergenceGuard`).
    TrainingInterrupted
        With ``catch_signals``, after SIGINT or SIGTERM (:class:`StopOnSignal`).
    """
    x_train, x_test = _checked_arguments(
        model, step, x_train, x_test, M=M, estimator=estimator, samples=samples, epochs=epochs,
        eval_points=eval_points, eval_train_size=eval_train_size, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, resume=resume)
    step = _as_step(model, step, estimator, L, weight_decay=1.0 / len(x_train) if weight_decay else 0.0)
    plan = Schedule.of(len(x_train), M, samples, epochs, eval_points, checkpoint_every)
    x_eval_train, x_eval_test = evaluation_sets(x_train, x_test, seed, eval_train_size, binarize)
    guard = DivergenceGuard(model, _floor(x_eval_train, model.decoder.kind), M, checkpoint)
    loop = LoopState.new(seed)
    settings = {"step": step.describe(), "loop": {"M": int(M), "N": plan.N, "seed": int(seed),
                                                  "binarize": bool(binarize), "estimator": estimator,
                                                  "eval_train_size": int(eval_train_size)}}
    if resume:
        resume_training(checkpoint, model, step, loop, settings, plan.N)
    saver = Checkpoints(checkpoint, model, step, plan, config, settings, on_checkpoint)
    hooks = [Evaluation(model, step.evaluator() if evaluate is None else evaluate, x_eval_train, x_eval_test,
                        estimator, plan, guard, on_eval), saver]
    hooks += [Progress(plan, step.name)] if progress else []
    hooks += [StopOnSignal(saver, plan)] if catch_signals else []

    loop.start_clock()
    try:
        for hook in hooks:
            hook.start(loop)
        with model.checked_data(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            while loop.step < plan.total_steps:
                idx = loop.next_batch(plan)                 # (M,) rows; an epoch is one permutation
                x = x_train[idx]                            # (M, D)
                if binarize:
                    x = binarize_dynamic(x, loop.rng)       # a fresh binary image each time
                result = step(x, idx, loop.rng)             # the algorithm's iteration
                loop.step += 1
                guard.check_step(result, loop.step)
                for hook in hooks:
                    hook.after_step(loop, result)
    finally:
        for hook in hooks:
            hook.close()
    saver.save(loop)
    return loop.history


# -- what fit checks, once, before it starts ----------------------------------------------

def _checked_arguments(model, step, x_train, x_test, *, M, estimator, samples, epochs, eval_points,
                       eval_train_size, checkpoint, checkpoint_every, resume):
    """fit's arguments, each checked once (one clear error otherwise); returns the data in the model's dtype."""
    x_train = check_matrix(x_train, "x_train", model.D, model.decoder.support).astype(model.dtype, copy=False)
    if x_test is not None:
        x_test = check_matrix(x_test, "x_test", model.D, model.decoder.support).astype(model.dtype, copy=False)
    N = len(x_train)
    for name, value in (("M", M), ("eval_points", eval_points), ("eval_train_size", eval_train_size)):
        check_scalar(value, name, int, min_val=1)
    if M > N:
        raise ValueError(f"the minibatch size M = {M} is larger than the training set (N = {N}).")
    if (samples is None) == (epochs is None):
        raise ValueError("give a training budget: samples or epochs (exactly one).")
    value, name = (samples, "samples") if samples is not None else (epochs, "epochs")
    check_scalar(value, f"the budget {name}", float, min_val=0, include_boundaries="neither")
    check_scalar(checkpoint_every, "checkpoint_every (epochs)", float, min_val=0, include_boundaries="neither")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from.")
    if not isinstance(step, (Optimizer, TrainingStep)):
        raise TypeError(f"step must be a minivae.steps.TrainingStep or an optimiser, not {type(step).__name__}.")
    if isinstance(step, TrainingStep) and step.model is not model:
        raise ValueError("the training step was built for another model.")
    est.check_estimator(estimator)
    return x_train, x_test


def _as_step(model, step, estimator, L, weight_decay):
    """The training step: ``step`` itself, or for an optimiser the readable AEVB step with it."""
    return AEVB(model, step, estimator, L, weight_decay) if isinstance(step, Optimizer) else step


class Schedule(NamedTuple):
    """When things happen, counted in minibatch steps."""

    N: int
    M: int
    batches_per_epoch: int   # N // M: the last partial batch is dropped, so every step sees M points
    total_steps: int         # the budget
    eval_at: frozenset       # the steps after which the bound is recorded (eval_schedule)
    save_every: int          # steps between checkpoints

    @classmethod
    def of(cls, N, M, samples, epochs, eval_points, checkpoint_every):
        total = math.ceil((samples if samples is not None else epochs * N) / M)
        return cls(N, M, N // M, total, frozenset(eval_schedule(total, eval_points)),
                   max(1, round(checkpoint_every * (N // M))))


def evaluation_sets(x_train, x_test, seed, size, binarize):
    """The fixed sets the recorded bounds average over: ``size`` random training points and the test set.

    With ``binarize``, each is binarised once. A deterministic function of the
    seed, so a resumed run picks the same ones.
    """
    fixed = np.random.default_rng([seed, 2])
    x_eval_train = x_train[np.sort(fixed.permutation(len(x_train))[:min(size, len(x_train))])]
    if binarize:
        x_eval_train = binarize_dynamic(x_eval_train, fixed)
        x_test = binarize_dynamic(x_test, fixed) if x_test is not None else None
    return x_eval_train, x_test


# -- where the loop is: what a checkpoint saves and a resume restores ----------------------

@dataclass
class LoopState:
    """The loop's position, its two Generators and the history (saved with the model and the step)."""

    rng: np.random.Generator         # permutations, dynamic binarisation, the step's noise, in that order
    eval_rng: np.random.Generator    # evaluation noise: how often the bound is recorded never moves rng
    history: dict
    step: int = 0                    # minibatches done
    epoch: int = 0
    batch: int = 0                   # the next minibatch of the epoch's permutation
    perm: np.ndarray | None = None   # (N,) this epoch's order, None before the first
    seconds_before: float = 0.0      # training time of the sessions before this one (a resumed run)
    _t0: float = 0.0

    @classmethod
    def new(cls, seed):
        return cls(np.random.default_rng(seed), np.random.default_rng([seed, 1]),
                   {"samples": [], "train_elbo": [], "test_elbo": [], "train_se": [], "test_se": [],
                    "seconds": [], "epoch": []})

    def next_batch(self, plan):
        """The rows of the next minibatch, (M,); a new epoch draws a new permutation."""
        if self.perm is None or self.batch >= plan.batches_per_epoch:
            if self.perm is not None:
                self.epoch += 1
            self.batch = 0
            self.perm = self.rng.permutation(plan.N)
        self.batch += 1
        return self.perm[(self.batch - 1) * plan.M:self.batch * plan.M]

    def start_clock(self):
        self._t0 = time.perf_counter()

    def seconds(self):
        """Training time so far, over every session of the run."""
        return self.seconds_before + time.perf_counter() - self._t0


# -- the divergence guard ---------------------------------------------------------------------

class DivergenceGuard:
    """Stops a run whose loss is not finite, or whose bound stays below the floor (:func:`_floor`).

    The floor is 100 times the trivial model's scale (:func:`trivial_bound`) below it; a bound must
    stay under it ``FLOOR_PATIENCE`` minibatches in a row, or two recorded points in a row. One bad
    step is not divergence: the paper's MNIST preset dips to -3.4e5 nats at its 4th Adagrad step and
    is back near -400 two steps later. A non-finite loss stops at once (the step changed nothing).
    """

    def __init__(self, model, floor, M, checkpoint):
        self.model, self.floor, self.M, self.checkpoint = model, floor, M, checkpoint
        self.under = 0                                   # minibatches in a row below the floor

    def check_step(self, result, step):
        """After each step: a non-finite loss, or FLOOR_PATIENCE minibatch bounds in a row below the floor."""
        loss, elbo = result
        if not np.isfinite(loss):
            raise self._diverged(step, f"the loss became {loss}")
        mean = None if elbo is None else float(np.mean(elbo))
        self.under = self.under + 1 if mean is not None and not mean >= self.floor else 0
        if self.under >= FLOOR_PATIENCE:
            raise self._diverged(step, f"the minibatch bound is {mean:.4g} nats, below the floor of "
                                       f"{self.floor:.4g} for {self.under} steps in a row")

    def check_bound(self, history, step):
        """After each recorded point: a non-finite training-set bound, or two in a row below the floor."""
        bound = history["train_elbo"][-1]
        below = len(history["train_elbo"]) > 1 and not history["train_elbo"][-2] >= self.floor
        if not math.isfinite(bound) or (bound < self.floor and below):
            raise self._diverged(step, f"the training-set bound is {bound:.4g} nats, below the floor of "
                                       f"{self.floor:.4g}")

    def _diverged(self, step, what):
        model = self.model
        with np.errstate(invalid="ignore"):
            bad = [name for name, p in model.params.items() if not np.isfinite(p).all()]
            bad_g = [name for name, g in model.grads.items() if not np.isfinite(g).all()]
        parts = [f"training diverged at step {step} ({step * self.M} samples seen): {what}"]
        if bad:
            parts.append("non-finite parameters: " + ", ".join(bad))
        if bad_g:
            parts.append("non-finite gradients: " + ", ".join(bad_g))
        if self.checkpoint is not None and Path(self.checkpoint).is_file():
            parts.append(f"the last good checkpoint is {self.checkpoint}")
        else:
            parts.append("no checkpoint was written before it")
        return TrainingDiverged("; ".join(parts) + ". Try a smaller learning rate (--lr) or float64 (--dtype float64).")


# -- hooks: what the loop calls at its named points (start, after each step, close) -------------

class Hook:
    """A job around the loop. ``start`` before the first step, ``after_step`` after each one
    (``loop.step`` counts it), ``close`` when the loop ends, normally or not."""

    def start(self, loop):
        pass

    def after_step(self, loop, result):
        pass

    def close(self):
        pass


class Evaluation(Hook):
    """Records the train and test bounds at the scheduled steps (Figure 2's points), with the evaluation
    Generator; the guard then checks the training-set bound."""

    def __init__(self, model, evaluate, x_train, x_test, estimator, plan, guard, on_eval):
        self.model, self.evaluate, self.x_train, self.x_test = model, evaluate, x_train, x_test
        self.estimator, self.plan, self.guard, self.on_eval = estimator, plan, guard, on_eval

    def after_step(self, loop, result):
        if loop.step not in self.plan.eval_at:
            return
        h, M = loop.history, self.plan.M
        h["samples"].append(loop.step * M)
        for which, x in (("train", self.x_train), ("test", self.x_test)):
            value = self.evaluate(self.model, x, loop.eval_rng, estimator=self.estimator) if x is not None else np.nan
            mean, se = value if isinstance(value, tuple) else (value, None)   # an evaluator may give its error
            h[f"{which}_elbo"].append(float(mean))
            h[f"{which}_se"].append(None if se is None else float(se))
        h["seconds"].append(loop.seconds())
        h["epoch"].append(loop.step * M / self.plan.N)
        self.guard.check_bound(h, loop.step)
        if self.on_eval is not None:
            self.on_eval(h)


class Checkpoints(Hook):
    """Saves the run every ``plan.save_every`` steps (and, through :meth:`save`, at the end and on a signal)."""

    def __init__(self, path, model, step, plan, config, settings, on_checkpoint):
        self.path, self.model, self.step, self.plan = path, model, step, plan
        self.config, self.settings, self.on_checkpoint = config, settings, on_checkpoint

    def after_step(self, loop, result):
        if loop.step % self.plan.save_every == 0 and loop.step < self.plan.total_steps:
            self.save(loop)

    def save(self, loop):
        if self.path is None:
            return
        save_training(self.path, self.model, self.step, loop, self.config or {}, self.settings)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.path)


class Progress(Hook):
    """A progress bar in samples, showing a running mean of the minibatch bound and the last test bound."""

    def __init__(self, plan, name):
        self.plan, self.name, self.bar, self.running = plan, name, None, None

    def start(self, loop):
        from tqdm.auto import tqdm
        M = self.plan.M
        self.bar = tqdm(total=self.plan.total_steps * M, initial=loop.step * M, unit="samples", unit_scale=True,
                        dynamic_ncols=True, desc=self.name)

    def after_step(self, loop, result):
        if result[1] is not None:
            mean = float(np.mean(result[1]))
            self.running = mean if self.running is None else 0.98 * self.running + 0.02 * mean
        self.bar.update(self.plan.M)
        if loop.step % 50 == 0 or loop.step == self.plan.total_steps:
            postfix = {} if self.running is None else {"bound": f"{self.running:.2f}"}
            if loop.history["test_elbo"]:
                postfix["test"] = f"{loop.history['test_elbo'][-1]:.2f}"
            self.bar.set_postfix(postfix, refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class StopOnSignal(Hook):
    """While the loop runs, SIGINT and SIGTERM only set a flag (main thread only); after the step in which
    one arrived, a checkpoint is written and :class:`TrainingInterrupted` raised."""

    def __init__(self, saver, plan):
        self.saver, self.plan, self.signum, self.previous = saver, plan, None, {}

    def start(self, loop):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.signum = signum

    def after_step(self, loop, result):
        if self.signum is None or loop.step >= self.plan.total_steps:
            return
        self.saver.save(loop)
        path = self.saver.path
        raise TrainingInterrupted(
            f"{signal.Signals(self.signum).name} received: stopped after step {loop.step} "
            f"({loop.step * self.plan.M} samples)"
            + (f"; checkpoint written to {path}" if path is not None else
               "; no checkpoint path was given, so nothing was saved"),
            self.signum, loop.step, path)

    def close(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
