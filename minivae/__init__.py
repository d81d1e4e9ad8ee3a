"""minivae: the Variational Auto-Encoder of Kingma & Welling (AEVB), in NumPy.

Every gradient is written by hand and checked by finite differences; see
``docs/paper-map.md`` for where each equation of the paper lives in the code.

The package has five rooms, in the order a reader meets them. A module imports only
modules on the lines above its own, or before it on its line (one exception: the
command line asks for the fast path, see below)::

    core        utils, data -> layers -> estimator -> model -> optim -> steps -> checkpoint
                -> train -> evaluate, gradcheck
    baselines/  wakesleep, hmc -> mcem, marginal
    teaching/   linear_gaussian -> em, gradient_estimators, checks -> bugzoo, exercises
    run/        threads, rundir, plots -> algorithms -> config, sweep -> cli
    fast/       the Numba twin of the core's AEVB step and evaluation

The core, at the top of the package, is the reading path: the code that trains
and is checked. The paper's baselines and the teaching tools build on it; the run
infrastructure (command line, configuration, sweeps, threads, run directories,
figures) builds on all three. The fast path, :mod:`minivae.fast`, imports the core
and :mod:`minivae.run.threads`, and no readable module imports it: only the command
line asks for it (:mod:`minivae.run.algorithms` and :mod:`minivae.run.cli`, inside
the functions that need it); see ``docs/architecture.md``.

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
