"""Checkpoints: model, optimiser state, RNG states, history and loop position in one ``.npz``.

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

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointMismatch", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class CheckpointMismatch(ValueError):
    """The checkpoint is valid but belongs to another architecture."""


def _json(obj):
    return np.array(json.dumps(obj))


def save_checkpoint(path, model, optimizer, rng_states, history, loop_state, config):
    """Write everything needed to resume a run exactly, atomically.

    Parameters
    ----------
    path : str or Path
    model : VAE
    optimizer : minivae.optim.Optimizer
    rng_states : dict name -> ``Generator.bit_generator.state`` (JSON-able dicts)
    history : dict of lists
    loop_state : dict of ints and small arrays (epoch, step, permutation, ...)
    config : dict (the run's Config.to_dict())
    """
    arrays = {"format_version": np.array(FORMAT_VERSION), "model_config": _json(model.config),
              "config": _json(config), "rng_states": _json(rng_states), "history": _json(history)}
    for name, p in model.params.items():
        arrays[f"param/{name}"] = p
    for key, v in optimizer.state_dict().items():
        arrays[f"optim/{key}"] = v
    arrays["optim_name"] = np.array(type(optimizer).__name__)
    for key, v in loop_state.items():
        arrays[f"loop/{key}"] = np.asarray(v)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_checkpoint(path, model=None):
    """Read a checkpoint; with ``model`` given, check its architecture and load the parameters.

    Returns
    -------
    dict with keys "model_config", "config", "rng_states", "history" (decoded
    JSON), "params", "optim" (dicts of arrays), "optim_name", "loop" (dict).

    Raises
    ------
    FileNotFoundError, CorruptFileError, CheckpointMismatch
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise CorruptFileError(f"checkpoint {path} holds Python objects; minivae refuses to unpickle files.") from e
        raise CorruptFileError(f"checkpoint {path} is corrupt or truncated ({e}); use an earlier checkpoint.") from e
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CorruptFileError(f"checkpoint {path} is corrupt or truncated ({e}); use an earlier checkpoint.") from e
    needed = ("format_version", "model_config", "config", "rng_states", "history", "optim_name")
    missing = [k for k in needed if k not in raw]
    if missing:
        raise CorruptFileError(f"{path} is not a minivae checkpoint (missing {', '.join(missing)}).")
    if int(raw["format_version"]) != FORMAT_VERSION:
        raise CorruptFileError(f"checkpoint {path} has format version {int(raw['format_version'])}; "
                               f"this minivae reads version {FORMAT_VERSION}.")
    out = {k: json.loads(str(raw[k])) for k in ("model_config", "config", "rng_states", "history")}
    out["optim_name"] = str(raw["optim_name"])
    out["params"] = {k[len("param/"):]: v for k, v in raw.items() if k.startswith("param/")}
    out["optim"] = {k[len("optim/"):]: v for k, v in raw.items() if k.startswith("optim/")}
    out["loop"] = {k[len("loop/"):]: v for k, v in raw.items() if k.startswith("loop/")}
    if model is not None:
        load_parameters(model, out, path)
    return out


def load_parameters(model, ckpt, path="checkpoint"):
    """Copy a loaded checkpoint's parameters into ``model`` after checking they fit."""
    if ckpt["model_config"] != model.config:
        diff = {k: (ckpt["model_config"].get(k), v) for k, v in model.config.items() if ckpt["model_config"].get(k) != v}
        raise CheckpointMismatch(
            f"{path} was saved from another architecture: "
            + "; ".join(f"{k} is {a!r} there but {b!r} here" for k, (a, b) in diff.items()) + ".")
    if set(ckpt["params"]) != set(model.params):
        raise CheckpointMismatch(f"{path} has parameters {sorted(ckpt['params'])}, the model {sorted(model.params)}.")
    for name, p in model.params.items():
        v = ckpt["params"][name]
        if v.shape != p.shape:
            raise CheckpointMismatch(f"{path}: parameter {name} has shape {v.shape}, the model {p.shape}.")
        if not np.isfinite(v).all():
            raise CorruptFileError(f"{path}: parameter {name} holds NaN or infinite values.")
        p[...] = v
