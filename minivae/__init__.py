"""minivae: the Variational Auto-Encoder of Kingma & Welling (AEVB), in NumPy.

Every gradient is written by hand and checked by finite differences; see
``docs/paper-map.md`` for where each equation of the paper lives in the code.

The modules, lowest first (each imports only those before it)::

    utils, data -> layers, kernels -> estimator -> model -> optim
        -> checkpoint, train -> evaluate, plots -> cli
"""

__version__ = "0.1.0"

from .model import VAE
from .optim import SGD, Adagrad, Adam
from .train import dataset_elbo, fit
from .evaluate import log_likelihood

__all__ = ["VAE", "SGD", "Adagrad", "Adam", "fit", "dataset_elbo", "log_likelihood", "__version__"]
