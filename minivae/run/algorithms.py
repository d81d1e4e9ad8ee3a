"""The training algorithms by name: the one list the configuration, the command line, the figures and the sweeps use.

Each entry maps a name (as ``--algorithm`` and ``config.json`` spell it) to an
:class:`Algorithm`: the label figures and messages show, and a builder
``build(cfg, model, N, fast) -> TrainingStep``:

``aevb``
    Algorithm 1 (:class:`minivae.steps.AEVB`), or its fused twin
    :class:`minivae.fast.FastAEVB` when ``fast`` and the fast path is exact
    for the model (:func:`minivae.fast.aevb_step`).
``wake-sleep``
    :class:`minivae.baselines.wakesleep.WakeSleep`: two optimisers of ``cfg.optimizer``
    with the same ``cfg.lr`` ("Adagrad step sizes for all algorithms"), or its fused twin
    :class:`minivae.fast.FastWakeSleep` when ``fast`` and the fast path is exact for the
    model (:func:`minivae.fast.wake_sleep_step`).
``mcem``
    Monte-Carlo EM with an HMC E-step (Appendix E), :class:`minivae.baselines.mcem.MCEM`:
    theta only, one optimiser.

All of them apply the N(0, I) parameter prior as weight decay 1/N when
``cfg.weight_decay`` is on, as the paper does for every algorithm. The builders
import their step's module only when called, so importing this list (the
configuration does, to validate ``algorithm``) loads no step, and the fast
path is loaded only by whoever builds a fast AEVB or wake-sleep step.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

__all__ = ["ALGORITHMS", "Algorithm", "build_step", "label"]


class Algorithm(NamedTuple):
    label: str          # as the figures' legends and the messages name it
    build: Callable     # build(cfg, model, N, fast) -> TrainingStep


def _weight_decay(cfg, N):
    return 1.0 / N if cfg.weight_decay else 0.0


def _aevb(cfg, model, N, fast):
    from ..optim import make_optimizer
    opt = make_optimizer(cfg.optimizer, cfg.lr)
    if fast:
        from ..fast import aevb_step
        return aevb_step(model, opt, cfg.estimator, cfg.L, weight_decay=_weight_decay(cfg, N))
    from ..steps import AEVB
    return AEVB(model, opt, cfg.estimator, cfg.L, weight_decay=_weight_decay(cfg, N))


def _wake_sleep(cfg, model, N, fast):
    from ..optim import make_optimizer
    opt_theta, opt_phi = make_optimizer(cfg.optimizer, cfg.lr), make_optimizer(cfg.optimizer, cfg.lr)
    if fast:
        from ..fast import wake_sleep_step
        return wake_sleep_step(model, opt_theta, opt_phi, weight_decay=_weight_decay(cfg, N), L=cfg.L)
    from ..baselines.wakesleep import WakeSleep
    return WakeSleep(model, opt_theta, opt_phi, weight_decay=_weight_decay(cfg, N), L=cfg.L)


def _mcem(cfg, model, N, fast):
    from ..optim import make_optimizer
    try:
        from ..baselines.mcem import MCEM
    except ImportError as e:
        raise ValueError(f"the mcem algorithm needs minivae/baselines/mcem.py, which this copy of minivae lacks ({e}); "
                         "use --algorithm aevb or wake-sleep.") from e
    return MCEM(model, make_optimizer(cfg.optimizer, cfg.lr), n_data=N, weight_decay=_weight_decay(cfg, N))


#: name -> Algorithm(label, build)
ALGORITHMS = {"aevb": Algorithm("AEVB", _aevb), "wake-sleep": Algorithm("Wake-Sleep", _wake_sleep),
              "mcem": Algorithm("MCEM", _mcem)}


def label(name):
    """How figures and messages name the algorithm ``name`` (an unknown name as it is)."""
    return ALGORITHMS[name].label if name in ALGORITHMS else name


def build_step(cfg, model, N, fast=True):
    """The training step of ``cfg.algorithm`` for ``model`` and a training set of N points."""
    try:
        algorithm = ALGORITHMS[cfg.algorithm]
    except KeyError:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {cfg.algorithm!r}.") from None
    return algorithm.build(cfg, model, N, fast)
