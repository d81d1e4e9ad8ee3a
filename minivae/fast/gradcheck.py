"""Finite differences of the fast step itself (``minivae gradcheck --fast``).

The gradient checks of :mod:`minivae.gradcheck` always run the readable code;
this one checks the fused kernels' gradient the same way, for a model the fast
path accepts. Kernels are compiled for float64 on first use.
"""

from __future__ import annotations

from ..gradcheck import check_function
from .eligibility import FastPathUnavailable, why_not
from .step import fast_loss_and_grads

__all__ = ["check_fast_model"]


def check_fast_model(model, x, eps, estimator="B", h=1e-5):
    """Relative error of every parameter gradient of the fast step against central differences.

    Returns
    -------
    dict parameter name -> relative error (float64 model; see :data:`minivae.gradcheck.TOLERANCE`).
    """
    reason = why_not(model)
    if reason is not None:
        raise FastPathUnavailable(reason)
    workspaces = {}
    fast_loss_and_grads(model, x, eps, estimator, workspaces)
    analytic = {name: g.copy() for name, g in model.grads.items()}
    return check_function(lambda: fast_loss_and_grads(model, x, eps, estimator, workspaces)[0],
                          analytic, model.params, h)
