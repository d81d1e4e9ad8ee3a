"""The data sets of the paper's experiments, read from the published files, and minibatches.

- ``mnist``: MNIST grey levels in [0, 1], 60000 train / 10000 test, labels.
- ``mnist-binarized``: Larochelle's fixed binarisation, 50000 train / 10000 test, no labels.
- ``frey``: Frey Face, ``ff.T / 256``, 1700 train / 265 test (seeded), no labels.
- ``digits-synthetic``: generated digits, no download (:mod:`minivae.data.synthetic`).

Files are looked for in ``data_dir``, then ``$MINIVAE_DATA``, then the user
cache (see :mod:`minivae.data.paths`); a missing file is downloaded into the
cache and checked against its published sha256 (:mod:`minivae.data.download`).

This package imports nothing from minivae except :mod:`minivae.utils` and
:mod:`minivae.data.paths`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batches import binarize_dynamic, holdout_indices, minibatches
from .download import DataNotFoundError, DownloadError, fetch, locate
from .frey import FREY_N_TEST, FREY_SHAPE, load_frey, read_frey_mat
from .mnist import MNIST_SHAPE, load_binarized_mnist, load_mnist, read_amat, read_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "load_mnist",
    "load_binarized_mnist",
    "load_frey",
    "minibatches",
    "binarize_dynamic",
    "holdout_indices",
    "read_idx",
    "read_amat",
    "read_frey_mat",
    "fetch",
    "locate",
    "DataNotFoundError",
    "DownloadError",
    "MNIST_SHAPE",
    "FREY_SHAPE",
    "FREY_N_TEST",
]

DATASETS = ("mnist", "mnist-binarized", "frey", "digits-synthetic")


@dataclass(frozen=True, repr=False)
class Dataset:
    """A data set ready for training: train and test matrices, one datapoint per row.

    Attributes
    ----------
    name : str
        One of :data:`DATASETS`.
    x_train : ndarray of float32, shape (N_train, D)
    y_train : ndarray of int64, shape (N_train,), or None
        None for sets published without labels.
    x_test : ndarray of float32, shape (N_test, D)
    y_test : ndarray of int64, shape (N_test,), or None
    image_shape : tuple of int
        (rows, columns) of one image; ``x.reshape(-1, *image_shape)`` gives images.
    description : str
        One line: origin, split and scaling.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    image_shape: tuple
    description: str

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, x_train {self.x_train.shape} {self.x_train.dtype}, "
            f"x_test {self.x_test.shape}, labels {'yes' if self.y_train is not None else 'no'}, "
            f"image_shape {self.image_shape})"
        )


def _square_shape(D: int) -> tuple:
    """(s, s) if D is a perfect square, else (1, D)."""
    s = int(round(D ** 0.5))
    return (s, s) if s * s == D else (1, D)


def load_dataset(name: str, data_dir=None, download: bool = True, seed=0) -> Dataset:
    """Load a data set by name, as a :class:`Dataset`.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    data_dir : str, Path or None
        Searched first for the real files (ignored by "digits-synthetic",
        which generates its data into the user cache).
    download : bool
        Download missing real files into the user cache.
    seed : int
        Seeds the Frey train/test split and the synthetic digits; MNIST's
        splits are the published ones.

    Returns
    -------
    Dataset
    """
    if name == "mnist":
        x_train, y_train = load_mnist("train", data_dir, download)
        x_test, y_test = load_mnist("test", data_dir, download)
        return Dataset(name, x_train, y_train, x_test, y_test, MNIST_SHAPE,
                       "MNIST (LeCun et al. 1998), grey levels uint8/255, 60000 train / 10000 test.")
    if name == "mnist-binarized":
        x_train = load_binarized_mnist("train", data_dir, download)
        x_test = load_binarized_mnist("test", data_dir, download)
        return Dataset(name, x_train, None, x_test, None, MNIST_SHAPE,
                       "MNIST, Larochelle's fixed binarisation, 50000 train / 10000 test "
                       "(the 10000 valid images: load_binarized_mnist('valid')).")
    if name == "frey":
        x_train = load_frey("train", data_dir, download, seed=seed)
        x_test = load_frey("test", data_dir, download, seed=seed)
        return Dataset(name, x_train, None, x_test, None, FREY_SHAPE,
                       f"Frey Face (Roweis), ff.T/256, {len(x_train)} train / {len(x_test)} test "
                       f"frames held out by a permutation with seed={seed}.")
    if name == "digits-synthetic":
        from .synthetic import load_digits_synthetic  # lazy: written separately, may not exist yet

        x_train, y_train = load_digits_synthetic("train", seed=seed)
        x_test, y_test = load_digits_synthetic("test", seed=seed)
        return Dataset(name, x_train, y_train, x_test, y_test, _square_shape(x_train.shape[1]),
                       f"Synthetic digits generated with seed={seed} (minivae.data.synthetic).")
    raise ValueError(f"unknown data set {name!r}; known ones are: {', '.join(DATASETS)}.")
