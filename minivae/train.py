"""The training loop: Algorithm 1 around a training step, with the bound recorded as in Figure 2::

    repeat
        x   <- a random minibatch of M datapoints (an epoch is one permutation)
        step(x): AEVB draws eps, takes the SGVB estimator's gradient and updates
                 theta and phi (:class:`minivae.steps.AEVB`); other algorithms
                 (wake-sleep, ...) are other steps
    until the budget of training samples is spent

The loop owns everything around the step (minibatches, dynamic binarisation,
the recorded bound, checkpoints, resuming, divergence, signals, progress);
the step owns one iteration of its algorithm (:mod:`minivae.steps`).

Randomness: one Generator (from ``seed``) draws the epoch permutations, the
dynamic binarisation and the step's noise, in that order; evaluation draws its
noise from a second, independent Generator, so how often the bound is recorded
never changes the training trajectory. Both states are checkpointed with the
loop position (epoch, permutation, next batch): a run resumed from any
checkpoint it wrote ends bit for bit where the uninterrupted run ends.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np

from . import estimator as est
from .checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from .data.batches import binarize_dynamic
from .optim import Optimizer
from .steps import AEVB, TrainingStep
from .utils import CorruptFileError, as_generator, check_matrix

__all__ = ["fit", "dataset_elbo", "eval_schedule", "trivial_bound", "TrainingDiverged", "TrainingInterrupted"]


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


def _diagnose(model, step, samples, what, checkpoint):
    with np.errstate(invalid="ignore"):
        bad = [name for name, p in model.params.items() if not np.isfinite(p).all()]
        bad_g = [name for name, g in model.grads.items() if not np.isfinite(g).all()]
    parts = [f"training diverged at step {step} ({samples} samples seen): {what}"]
    if bad:
        parts.append("non-finite parameters: " + ", ".join(bad))
    if bad_g:
        parts.append("non-finite gradients: " + ", ".join(bad_g))
    if checkpoint is not None and Path(checkpoint).is_file():
        parts.append(f"the last good checkpoint is {checkpoint}")
    else:
        parts.append("no checkpoint was written before it")
    return "; ".join(parts) + ". Try a smaller learning rate (--lr) or float64 (--dtype float64)."


def _check_budget(samples, epochs):
    if (samples is None) == (epochs is None):
        raise ValueError("give a training budget: samples or epochs (exactly one).")
    value, name = (samples, "samples") if samples is not None else (epochs, "epochs")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the budget {name} must be a finite number > 0; got {value!r}.")


@contextlib.contextmanager
def _signals_caught(enabled):
    """While active, SIGINT and SIGTERM only set ``flag[0]`` (the loop stops after the current step)."""
    flag = [None]
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}

    def handler(signum, frame):
        flag[0] = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


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
        Bernoulli means unless ``binarize``).
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
    evaluate : callable(model, x, rng, estimator=...) -> float, or None
        Computes a recorded bound; :func:`dataset_elbo` (the readable path) by default.
    catch_signals : bool
        SIGINT (Ctrl-C) and SIGTERM finish the current step, write a checkpoint
        and raise :class:`TrainingInterrupted` (main thread only).

    Returns
    -------
    history : dict of lists "samples", "train_elbo", "test_elbo", "seconds", "epoch".

    Raises
    ------
    TrainingDiverged
        The loss became non-finite (the step changed nothing), or a bound fell
        below the floor of 100 times the trivial model's scale (:func:`trivial_bound`) and stayed
        there (``FLOOR_PATIENCE`` minibatches in a row, or two recorded points in a row): one
        bad step is not divergence (the paper's MNIST preset dips to -3.4e5 nats at its 4th
        Adagrad step and is back near -400 two steps later).
    """
    x_train = check_matrix(x_train, "x_train", model.D, model.decoder.support).astype(model.dtype, copy=False)
    if x_test is not None:
        x_test = check_matrix(x_test, "x_test", model.D, model.decoder.support).astype(model.dtype, copy=False)
    N = len(x_train)
    for name, value in (("M", M), ("eval_points", eval_points), ("eval_train_size", eval_train_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if M > N:
        raise ValueError(f"the minibatch size M = {M} is larger than the training set (N = {N}).")
    _check_budget(samples, epochs)
    if not (isinstance(checkpoint_every, (int, float)) and math.isfinite(checkpoint_every) and checkpoint_every > 0):
        raise ValueError(f"checkpoint_every must be a number of epochs > 0; got {checkpoint_every!r}.")
    if isinstance(step, Optimizer):
        step = AEVB(model, step, estimator, L, weight_decay=1.0 / N if weight_decay else 0.0)
    elif not isinstance(step, TrainingStep):
        raise TypeError(f"step must be a minivae.steps.TrainingStep or an optimiser, not {type(step).__name__}.")
    if step.model is not model:
        raise ValueError("the training step was built for another model.")
    est.check_estimator(estimator)
    evaluate = dataset_elbo if evaluate is None else evaluate
    batches_per_epoch = N // M  # the last partial batch is dropped: every step sees M points
    total_steps = math.ceil((samples if samples is not None else epochs * N) / M)
    schedule = set(eval_schedule(total_steps, eval_points))
    save_every = max(1, round(checkpoint_every * batches_per_epoch))     # steps between checkpoints

    # Fixed evaluation sets (a deterministic function of the seed, so resuming picks the same ones).
    fixed = np.random.default_rng([seed, 2])
    x_eval_train = x_train[np.sort(fixed.permutation(N)[:min(eval_train_size, N)])]
    if binarize:
        x_eval_train = binarize_dynamic(x_eval_train, fixed)
        x_eval_test = binarize_dynamic(x_test, fixed) if x_test is not None else None
    else:
        x_eval_test = x_test
    floor = _floor(x_eval_train, model.decoder.kind)

    rng = np.random.default_rng(seed)            # permutations, binarisation, the step's noise
    eval_rng = np.random.default_rng([seed, 1])  # evaluation noise
    history = {"samples": [], "train_elbo": [], "test_elbo": [], "seconds": [], "epoch": []}
    it, epoch, batch, perm = 0, 0, 0, None
    elapsed = 0.0
    training = {"step": step.describe(), "loop": {"M": int(M), "N": int(N), "seed": int(seed),
                                                  "binarize": bool(binarize), "estimator": estimator,
                                                  "eval_train_size": int(eval_train_size)}}

    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint path to resume from.")
        ck = load_checkpoint(checkpoint, model)
        _check_same_training(checkpoint, ck["step_describe"], training)
        step.load_state_dict(ck["step_state"])
        try:
            rng.bit_generator.state = ck["rng_states"]["train"]
            eval_rng.bit_generator.state = ck["rng_states"]["eval"]
            history = {k: list(ck["history"][k]) for k in history}
            loop = ck["loop"]
            it, epoch, batch = int(loop["step"]), int(loop["epoch"]), int(loop["batch"])
            perm = np.array(loop["perm"], dtype=np.int64) if loop["perm"].size else None
            elapsed = float(loop["seconds"]) if "seconds" in loop else 0.0
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptFileError(f"checkpoint {checkpoint} has a damaged loop or RNG state ({e}); "
                                   "delete it to start over.") from e
        if perm is not None and (perm.shape != (N,) or not np.array_equal(np.sort(perm), np.arange(N))):
            raise CorruptFileError(f"checkpoint {checkpoint} holds a permutation that does not fit "
                                   f"this training set of N = {N}.")

    t0 = time.perf_counter()

    def save():
        if checkpoint is None:
            return
        save_checkpoint(checkpoint, model, step,
                        {"train": rng.bit_generator.state, "eval": eval_rng.bit_generator.state}, history,
                        {"step": it, "epoch": epoch, "batch": batch,
                         "perm": perm if perm is not None else np.zeros(0, dtype=np.int64),
                         "seconds": elapsed + time.perf_counter() - t0}, config or {}, describe=training)
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)

    def diverged(what):
        return TrainingDiverged(_diagnose(model, it + 1, (it + 1) * M, what, checkpoint))

    def record():
        history["samples"].append(it * M)
        history["train_elbo"].append(evaluate(model, x_eval_train, eval_rng, estimator=estimator))
        history["test_elbo"].append(evaluate(model, x_eval_test, eval_rng, estimator=estimator)
                                    if x_eval_test is not None else float("nan"))
        history["seconds"].append(elapsed + time.perf_counter() - t0)
        history["epoch"].append(it * M / N)
        bound = history["train_elbo"][-1]
        below = len(history["train_elbo"]) > 1 and not history["train_elbo"][-2] >= floor
        if not math.isfinite(bound) or (bound < floor and below):
            raise TrainingDiverged(_diagnose(model, it, it * M, f"the training-set bound is {bound:.4g} nats, "
                                             f"below the floor of {floor:.4g}", checkpoint))
        if on_eval is not None:
            on_eval(history)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps * M, initial=it * M, unit="samples", unit_scale=True, dynamic_ncols=True,
                   desc=step.name)
    running = None
    under = 0                                     # minibatches in a row below the floor
    try:
        with _signals_caught(catch_signals) as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            while it < total_steps:
                if perm is None or batch >= batches_per_epoch:      # a new epoch: a new permutation
                    if perm is not None:
                        epoch += 1
                    batch = 0
                    perm = rng.permutation(N)
                idx = perm[batch * M:(batch + 1) * M]                  # (M,)
                x = x_train[idx]                                       # (M, D)
                if binarize:
                    x = binarize_dynamic(x, rng)
                loss, elbo = step(x, idx, rng)
                if not np.isfinite(loss):
                    raise diverged(f"the loss became {loss}")
                mean_elbo = None if elbo is None else float(np.mean(elbo))
                under = under + 1 if mean_elbo is not None and not mean_elbo >= floor else 0
                if under >= FLOOR_PATIENCE:
                    raise diverged(f"the minibatch bound is {mean_elbo:.4g} nats, below the floor of {floor:.4g} "
                                   f"for {under} steps in a row")
                it += 1
                batch += 1
                if mean_elbo is not None:
                    running = mean_elbo if running is None else 0.98 * running + 0.02 * mean_elbo
                if it in schedule:
                    record()
                if it % save_every == 0 and it < total_steps:
                    save()
                if bar is not None:
                    bar.update(M)
                    if it % 50 == 0 or it == total_steps:
                        postfix = {} if running is None else {"bound": f"{running:.2f}"}
                        if history["test_elbo"]:
                            postfix["test"] = f"{history['test_elbo'][-1]:.2f}"
                        bar.set_postfix(postfix, refresh=False)
                if stop[0] is not None and it < total_steps:
                    save()
                    name = signal.Signals(stop[0]).name
                    raise TrainingInterrupted(
                        f"{name} received: stopped after step {it} ({it * M} samples)"
                        + (f"; checkpoint written to {checkpoint}" if checkpoint is not None else
                           "; no checkpoint path was given, so nothing was saved"),
                        stop[0], it, checkpoint)
    finally:
        if bar is not None:
            bar.close()
    save()
    return history


def _check_same_training(path, saved, now):
    """Refuse to resume with another step or other loop settings, naming each difference."""
    def flat(d, prefix=""):
        out = {}
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(saved), flat(now)
    diff = [f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diff:
        raise CheckpointMismatch(f"{path} was trained with other settings ({'; '.join(diff)}); "
                                 "resume with the same ones, or start a new run.")
