"""The AEVB loop (the paper's Algorithm 1), with the bound recorded as in Figure 2.

    repeat
        x  <- a random minibatch of M datapoints
        eps <- L draws from p(eps) = N(0, I) per datapoint
        g  <- gradient of the SGVB estimator (and of -(1/N) log p(theta))
        theta, phi <- optimiser update with g
    until the budget of training samples is spent

Randomness: one Generator (from ``seed``) draws the epoch permutations, the
dynamic binarisation and eps, in that order; evaluation draws its noise from a
second, independent Generator, so how often the bound is recorded never changes
the training trajectory. Both states are checkpointed with the loop position
(epoch, permutation, next batch), so a resumed run reproduces an uninterrupted
one exactly.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .data.batches import binarize_dynamic
from .utils import as_generator, check_matrix

__all__ = ["fit", "dataset_elbo", "eval_schedule", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """A quantity of the training step became NaN or infinite."""


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


def _diagnose(model, step, samples, loss, checkpoint):
    bad = [name for name, p in model.params.items() if not np.isfinite(p).all()]
    bad_g = [name for name, g in model.grads.items() if not np.isfinite(g).all()]
    parts = [f"training stopped at step {step} ({samples} samples seen): the loss (-ELBO) became {loss}"]
    if bad:
        parts.append("non-finite parameters: " + ", ".join(bad))
    if bad_g:
        parts.append("non-finite gradients: " + ", ".join(bad_g))
    parts.append(f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was being written")
    return "; ".join(parts) + ". Try a smaller learning rate (--lr) or float64 (--dtype float64)."


def fit(model, optimizer, x_train, x_test=None, *, M=100, L=1, estimator="B", samples=None, epochs=None,
        binarize=False, weight_decay=True, seed=0, eval_points=20, eval_train_size=10000,
        progress=True, checkpoint=None, checkpoint_every=1, resume=False, config=None, on_eval=None):
    """Train ``model`` with AEVB and return its history.

    Parameters
    ----------
    model : VAE
    optimizer : minivae.optim.Optimizer
    x_train, x_test : ndarray (N, D)
        Pixels in [0, 1] for the Bernoulli decoder (grey levels are used as
        Bernoulli means unless ``binarize``).
    M, L : int
        Minibatch size and samples per datapoint.
    estimator : "A" or "B"
    samples, epochs : budget in training samples evaluated, or in epochs (one of them).
    binarize : bool
        Dynamic binarisation: each time a minibatch is drawn, every pixel is a
        fresh Bernoulli draw with its grey level as mean. The train/test bounds
        are then measured on one fixed binarisation of each evaluation set.
    weight_decay : bool
        Include the N(0, I) parameter prior, as -(1/N) log p(theta) per datapoint:
        the optimiser adds its gradient theta / N to each gradient, in the same
        pass as its update (``optimizer.step(..., weight_decay=1 / N)``).
    eval_points : int
        How many log-spaced points get a train and a test bound.
    eval_train_size : int
        Size of the fixed random subset of the training set the train bound averages over.
    checkpoint : path or None
        Where to save (every ``checkpoint_every`` epochs and at the end).
    resume : bool
        Continue from ``checkpoint`` if it exists.
    config : dict or None
        Saved inside checkpoints.
    on_eval : callable(history) or None
        Called after each evaluation point.

    Returns
    -------
    history : dict of lists "samples", "train_elbo", "test_elbo", "seconds", "epoch".
    """
    x_train = check_matrix(x_train, "x_train", model.D, model.decoder.support).astype(model.dtype, copy=False)
    if x_test is not None:
        x_test = check_matrix(x_test, "x_test", model.D, model.decoder.support).astype(model.dtype, copy=False)
    N = len(x_train)
    if M > N:
        raise ValueError(f"the minibatch size M = {M} is larger than the training set (N = {N}).")
    batches_per_epoch = N // M  # the last partial batch is dropped: every step sees M points
    if (samples is None) == (epochs is None):
        raise ValueError("give a training budget: samples or epochs (exactly one).")
    total_steps = math.ceil((samples if samples is not None else epochs * N) / M)
    schedule = set(eval_schedule(total_steps, eval_points))
    decay = 1.0 / N if weight_decay else 0.0

    # Fixed evaluation sets (a deterministic function of the seed, so resuming picks the same ones).
    fixed = np.random.default_rng([seed, 2])
    x_eval_train = x_train[np.sort(fixed.permutation(N)[:min(eval_train_size, N)])]
    if binarize:
        x_eval_train = binarize_dynamic(x_eval_train, fixed)
        x_eval_test = binarize_dynamic(x_test, fixed) if x_test is not None else None
    else:
        x_eval_test = x_test

    rng = np.random.default_rng(seed)            # permutations, binarisation, eps
    eval_rng = np.random.default_rng([seed, 1])  # evaluation noise
    history = {"samples": [], "train_elbo": [], "test_elbo": [], "seconds": [], "epoch": []}
    step, epoch, batch, perm = 0, 0, 0, None
    elapsed = 0.0

    if resume and checkpoint is not None and Path(checkpoint).is_file():
        ck = load_checkpoint(checkpoint, model)
        if ck["optim_name"] != type(optimizer).__name__:
            raise ValueError(f"{checkpoint} was trained with {ck['optim_name']}, not {type(optimizer).__name__}.")
        optimizer.load_state_dict(ck["optim"])
        rng.bit_generator.state = ck["rng_states"]["train"]
        eval_rng.bit_generator.state = ck["rng_states"]["eval"]
        history = ck["history"]
        loop = ck["loop"]
        step, epoch, batch = int(loop["step"]), int(loop["epoch"]), int(loop["batch"])
        perm = loop["perm"] if loop["perm"].size else None
        elapsed = history["seconds"][-1] if history["seconds"] else 0.0

    def save():
        if checkpoint is None:
            return
        save_checkpoint(checkpoint, model, optimizer,
                        {"train": rng.bit_generator.state, "eval": eval_rng.bit_generator.state}, history,
                        {"step": step, "epoch": epoch, "batch": batch,
                         "perm": perm if perm is not None else np.zeros(0, dtype=np.int64)}, config or {})

    def record():
        history["samples"].append(step * M)
        history["train_elbo"].append(dataset_elbo(model, x_eval_train, eval_rng, estimator=estimator))
        history["test_elbo"].append(dataset_elbo(model, x_eval_test, eval_rng, estimator=estimator)
                                    if x_eval_test is not None else float("nan"))
        history["seconds"].append(elapsed + time.perf_counter() - t0)
        history["epoch"].append(step * M / N)
        if on_eval is not None:
            on_eval(history)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps * M, initial=step * M, unit="samples", unit_scale=True, dynamic_ncols=True,
                   desc="AEVB")
    t0 = time.perf_counter()
    running = None
    try:
        while step < total_steps:
            if perm is None or batch >= batches_per_epoch:
                if perm is not None:
                    epoch += 1
                    batch = 0
                    if epoch % checkpoint_every == 0:
                        save()
                perm = rng.permutation(N)
            x = x_train[perm[batch * M:(batch + 1) * M]]             # (M, D)
            if binarize:
                x = binarize_dynamic(x, rng)
            eps = model.sample_eps(M, L, rng)                        # (L, M, J)
            loss, elbo = model.loss_and_grads(x, eps, estimator)   # -ELBO; the prior comes in the step
            if not np.isfinite(loss):
                raise TrainingDiverged(_diagnose(model, step + 1, (step + 1) * M, loss, checkpoint))
            optimizer.step(model.params, model.grads, weight_decay=decay)
            step += 1
            batch += 1
            mean_elbo = float(np.mean(elbo))
            running = mean_elbo if running is None else 0.98 * running + 0.02 * mean_elbo
            if step in schedule:
                record()
            if bar is not None:
                bar.update(M)
                if step % 50 == 0 or step == total_steps:
                    postfix = {"bound": f"{running:.2f}"}
                    if history["test_elbo"]:
                        postfix["test"] = f"{history['test_elbo'][-1]:.2f}"
                    bar.set_postfix(postfix, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    save()
    return history
