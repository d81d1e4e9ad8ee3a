"""Checkpoints: model, training-step state, RNG states, history and loop position in one ``.npz``.

No pickle anywhere: every entry is a numeric array or a JSON string stored as
a unicode array, and loading uses ``allow_pickle=False`` (a file holding
object arrays is refused). Files are written atomically, so a crash during a
save leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .utils import CorruptFileError, atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "save_training", "resume_training", "CheckpointMismatch",
           "FORMAT_VERSION"]

FORMAT_VERSION = 2   # 2: the training step's state (one or more optimisers) under "step/"

_LOOP_KEYS = ("step", "epoch", "batch", "perm")


class CheckpointMismatch(ValueError):
    """The checkpoint is valid but belongs to another architecture or training step."""


def _json(obj):
    return np.array(json.dumps(obj))


def save_checkpoint(path, model, step, rng_states, history, loop_state, config, describe=None):
    """Write everything needed to resume a run exactly, atomically.

    Parameters
    ----------
    path : str or Path
    model : VAE
    step : minivae.steps.TrainingStep
        Its ``state_dict()`` (every optimiser's state, and the step's own)
        and ``describe()`` are stored.
    rng_states : dict name -> ``Generator.bit_generator.state`` (JSON-able dicts)
    history : dict of lists
    loop_state : dict of ints and small arrays (epoch, step, permutation, ...)
    config : dict (the run's Config.to_dict())
    describe : dict or None
        What defines the training (``step.describe()`` by default; :func:`minivae.train.fit`
        adds its loop settings); a resume compares it with its own.
    """
    arrays = {"format_version": np.array(FORMAT_VERSION), "model_config": _json(model.config),
              "config": _json(config), "rng_states": _json(rng_states), "history": _json(history),
              "step_describe": _json(step.describe() if describe is None else describe)}
    for name, p in model.params.items():
        arrays[f"param/{name}"] = p
    for key, v in step.state_dict().items():
        arrays[f"step/{key}"] = v
    for key, v in loop_state.items():
        arrays[f"loop/{key}"] = np.asarray(v)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _corrupt(path, what):
    return CorruptFileError(f"checkpoint {path} is corrupt or truncated ({what}); "
                            "delete it to start over, or use an earlier copy.")


def load_checkpoint(path, model=None):
    """Read a checkpoint; with ``model`` given, check its architecture and load the parameters.

    Returns
    -------
    dict with keys "model_config", "config", "rng_states", "history",
    "step_describe" (decoded JSON), "params", "step_state" (dicts of arrays)
    and "loop" (dict).

    Raises
    ------
    FileNotFoundError, CorruptFileError, CheckpointMismatch
        Each with one sentence naming the file.
    """
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no file"
        raise FileNotFoundError(f"no checkpoint at {path} ({what} there).")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise CorruptFileError(f"checkpoint {path} holds Python objects; minivae refuses to unpickle files.") from e
        raise _corrupt(path, e) from e
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError, KeyError,
            RuntimeError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    except Exception as e:  # zlib.error, struct.error, ...: whatever a damaged zip raises
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    if "format_version" not in raw:
        raise CorruptFileError(f"{path} is not a minivae checkpoint (no format_version entry).")
    try:
        version = int(raw["format_version"])
    except (TypeError, ValueError) as e:
        raise _corrupt(path, "its format_version is not a number") from e
    if version != FORMAT_VERSION:
        raise CorruptFileError(f"checkpoint {path} has format version {version}; this minivae reads version "
                               f"{FORMAT_VERSION}: train again, or use the minivae that wrote it.")
    needed = ("model_config", "config", "rng_states", "history", "step_describe",
              *(f"loop/{k}" for k in _LOOP_KEYS))
    missing = [k for k in needed if k not in raw]
    if missing:
        raise CorruptFileError(f"{path} is not a complete minivae checkpoint (missing {', '.join(missing)}).")
    out = {}
    for key in ("model_config", "config", "rng_states", "history", "step_describe"):
        try:
            out[key] = json.loads(str(raw[key]))
        except json.JSONDecodeError as e:
            raise _corrupt(path, f"its {key} entry is not valid JSON: {e}") from e
    out["params"] = {k[len("param/"):]: v for k, v in raw.items() if k.startswith("param/")}
    out["step_state"] = {k[len("step/"):]: v for k, v in raw.items() if k.startswith("step/")}
    out["loop"] = {k[len("loop/"):]: v for k, v in raw.items() if k.startswith("loop/")}
    if model is not None:
        load_parameters(model, out, path)
    return out


def load_parameters(model, ckpt, path="checkpoint"):
    """Copy a loaded checkpoint's parameters into ``model`` after checking they fit."""
    if not isinstance(ckpt["model_config"], dict):
        raise CorruptFileError(f"{path}: its model_config is not a JSON object.")
    if ckpt["model_config"] != model.config:
        diff = {k: (ckpt["model_config"].get(k), v) for k, v in model.config.items() if ckpt["model_config"].get(k) != v}
        raise CheckpointMismatch(
            f"{path} was saved from another architecture: "
            + "; ".join(f"{k} is {a!r} there but {b!r} here" for k, (a, b) in diff.items()) + ".")
    if set(ckpt["params"]) != set(model.params):
        raise CheckpointMismatch(f"{path} has parameters {sorted(ckpt['params'])}, the model {sorted(model.params)}.")
    for name, p in model.params.items():
        v = ckpt["params"][name]
        if v.dtype.kind != "f":
            raise CorruptFileError(f"{path}: parameter {name} holds {v.dtype} values, not floats.")
        if v.shape != p.shape:
            raise CheckpointMismatch(f"{path}: parameter {name} has shape {v.shape}, the model {p.shape}.")
        if not np.isfinite(v).all():
            raise CorruptFileError(f"{path}: parameter {name} holds NaN or infinite values.")
        p[...] = v


# -- a training run: the model, the step and the loop's position together -------------------------

def save_training(path, model, step, loop, config, describe):
    """Save a run where the loop is (:func:`save_checkpoint`), so that it resumes bit for bit.

    ``loop`` is :class:`minivae.train.LoopState`: both Generators' states, the
    history, the position (step, epoch, next batch, permutation) and the
    training time so far. ``describe``: the step's and the loop's settings.
    """
    perm = loop.perm if loop.perm is not None else np.zeros(0, dtype=np.int64)
    rng_states = {"train": loop.rng.bit_generator.state, "eval": loop.eval_rng.bit_generator.state}
    position = {"step": loop.step, "epoch": loop.epoch, "batch": loop.batch, "perm": perm, "seconds": loop.seconds()}
    save_checkpoint(path, model, step, rng_states, loop.history, position, config, describe=describe)


def resume_training(path, model, step, loop, describe, N):
    """Restore a run saved by :func:`save_training` into ``model``, ``step`` and ``loop``.

    Refuses, each with one sentence naming the file: a checkpoint of other
    settings (``describe`` differs), and a damaged loop or RNG state or a
    permutation that is not one of the N training points.
    """
    ck = load_checkpoint(path, model)
    _check_same_training(path, ck["step_describe"], describe)
    step.load_state_dict(ck["step_state"])
    try:
        loop.rng.bit_generator.state = ck["rng_states"]["train"]
        loop.eval_rng.bit_generator.state = ck["rng_states"]["eval"]
        history = dict(ck["history"])
        for key in ("train_se", "test_se"):          # a run saved before the standard errors were recorded
            history.setdefault(key, [None] * len(history["samples"]))
        loop.history = {k: list(history[k]) for k in loop.history}
        saved = ck["loop"]
        loop.step, loop.epoch, loop.batch = int(saved["step"]), int(saved["epoch"]), int(saved["batch"])
        loop.perm = np.array(saved["perm"], dtype=np.int64) if saved["perm"].size else None
        loop.seconds_before = float(saved["seconds"]) if "seconds" in saved else 0.0
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptFileError(f"checkpoint {path} has a damaged loop or RNG state ({e}); "
                               "delete it to start over.") from e
    perm = loop.perm
    if perm is not None and (perm.shape != (N,) or not np.array_equal(np.sort(perm), np.arange(N))):
        raise CorruptFileError(f"checkpoint {path} holds a permutation that does not fit "
                               f"this training set of N = {N}.")


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
