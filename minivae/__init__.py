"""minivae: the Variational Auto-Encoder of Kingma & Welling (AEVB), in NumPy.

Every gradient is written by hand and checked by finite differences; see
``docs/paper-map.md`` for where each equation of the paper lives in the code.

The modules, in the order a reader meets them (each imports only modules before it)::

    utils, data -> layers -> estimator -> model -> optim -> steps, wakesleep, hmc, mcem
        -> checkpoint -> train -> evaluate, marginal, gradcheck, plots, config, linear_gaussian,
           em, gradient_estimators, checks, bugzoo -> fast -> algorithms, sweep, threads,
           rundir, exercises, cli

The readable modules are the code that trains and is checked. The fast path,
:mod:`minivae.fast`, imports them and is imported by none of them (only the
command line asks for it); see ``docs/architecture.md``.

The names below are imported on first use, so ``import minivae.data`` stays
light (no model, no Numba).
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {"VAE": "model", "SGD": "optim", "Adagrad": "optim", "Adam": "optim", "AEVB": "steps",
            "fit": "train", "dataset_elbo": "train", "log_likelihood": "evaluate"}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'minivae' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
