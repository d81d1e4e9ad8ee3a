"""Small helpers every layer of minivae may use: randomness, input checks, safe writes.

This module sits at the bottom of the package and imports nothing from it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "as_generator",
    "atomic_write",
    "check_matrix",
    "CorruptFileError",
]


class CorruptFileError(ValueError):
    """A file exists but its contents are not what its format promises."""


def as_generator(random_state=None) -> np.random.Generator:
    """Resolve ``random_state`` (None, an int or a Generator) to a Generator, once.

    Every stochastic function in minivae takes a Generator; no global
    ``np.random.*`` state is ever used (STYLE.md, habit 6).
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise TypeError(
        f"random_state must be None, an int or a numpy Generator, not {type(random_state).__name__}."
    )


def check_matrix(x, name: str = "x", n_cols: int | None = None, support: str = "real"):
    """Check that ``x`` is a finite 2-D float array; return it unchanged.

    Parameters
    ----------
    x : ndarray, shape (M, D)
    name : str
        How the error message calls the array.
    n_cols : int or None
        The expected D, if known.
    support : {"real", "unit"}
        ``"unit"`` also requires every value in [0, 1] (the Bernoulli decoder's support).

    Raises
    ------
    ValueError
        One sentence naming what is wrong and what to do.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (M, D), one row per datapoint; got shape {x.shape}."
            + (" Flatten images first, e.g. x.reshape(len(x), -1)." if x.ndim > 2 else "")
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"{name} must hold floats (float32 or float64), not {x.dtype}; "
            "for uint8 images use x.astype(np.float32) / 255."
        )
    if n_cols is not None and x.shape[1] != n_cols:
        raise ValueError(f"{name} has {x.shape[1]} columns but the model expects D = {n_cols}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows).")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the data before use.")
    if support == "unit":
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} has values in [{lo:g}, {hi:g}] but the Bernoulli decoder needs pixels in [0, 1]; "
                "rescale the data (e.g. divide by 255) or use the Gaussian decoder."
            )
    return x


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success move it onto ``path``.

    The rename is atomic on POSIX and Windows, so a reader sees either the
    previous file or the complete new one, never a half-written file, even if
    the process is killed mid-write. On an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
