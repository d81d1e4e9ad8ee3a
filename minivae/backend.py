"""Which code runs a training step: the readable NumPy path or its Numba twin.

The switch is set in one place, here, and read in two: :meth:`minivae.model.VAE.loss_and_grads`
and :meth:`minivae.optim.Optimizer.step`. Everything else (``elbo``,
``encode``, ``generate``, the layers and the estimator functions) is always
the NumPy code.

- ``"numba"`` (the default): jitted kernels from :mod:`minivae.kernels`
  around BLAS matrix products, buffers reused between steps. Same numbers as
  the NumPy path to about 1e-13 in float64 (``tests/test_backends.py``).
- ``"numpy"``: the code in :mod:`minivae.model` and :mod:`minivae.optim` as a
  student reads it, line by line beside the paper.

Set it with ``set_backend(name)``, for a block with ``use_backend(name)``, or
for a whole process with the environment variable ``MINIVAE_BACKEND``, read at
import. The setting is global to the process (not per thread).

With ``NUMBA_DISABLE_JIT=1`` the ``"numba"`` backend still works when asked
for: its kernels then run as plain Python, which is handy in a debugger but
far too slow to train with, so in that case the default is ``"numpy"``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

__all__ = ["BACKENDS", "get_backend", "set_backend", "use_backend", "kernels"]

BACKENDS = ("numba", "numpy")
_ENV = "MINIVAE_BACKEND"


def _checked(name) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {name!r}.")
    name = name.strip().lower()
    if name == "numba" and importlib.util.find_spec("numba") is None:
        raise ImportError("the 'numba' backend needs the numba package: pip install numba, "
                          "or choose the 'numpy' backend.")
    return name


def _initial() -> str:
    """MINIVAE_BACKEND if set; else "numba" when numba is installed and its JIT is on; else "numpy"."""
    env = os.environ.get(_ENV, "").strip()
    if env:
        try:
            return _checked(env)
        except (ValueError, ImportError) as err:
            raise type(err)(f"environment variable {_ENV}={env!r}: {err}") from None
    jit_off = os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0")
    return "numba" if importlib.util.find_spec("numba") is not None and not jit_off else "numpy"


_backend = _initial()


def get_backend() -> str:
    """The current backend, "numba" or "numpy"."""
    return _backend


def set_backend(name: str) -> None:
    """Choose the backend for every following training step: "numba" or "numpy"."""
    global _backend
    _backend = _checked(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Run a block with another backend, then restore the previous one (even on error)::

        with use_backend("numpy"):
            loss, elbo = model.loss_and_grads(x, eps)
    """
    previous = _backend
    set_backend(name)
    try:
        yield name
    finally:
        set_backend(previous)


_kernels_module = None


def kernels():
    """The module :mod:`minivae.kernels`, imported on first use (``import minivae`` does not load Numba)."""
    global _kernels_module
    if _kernels_module is None:  # kept: an import statement costs ~1 us, and a step asks ~35 times
        from . import kernels as module
        _kernels_module = module
    return _kernels_module
