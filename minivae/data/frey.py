"""The Frey Face data set: 1965 grey 28 x 20 frames of Brendan Frey's face (paper, Section 5).

The paper models it with a Gaussian decoder. The file is Sam Roweis's
``frey_rawface.mat``: one uint8 matrix ``ff`` of shape (560, 1965), one image
per column, each column a 28 x 20 image flattened row-major. Here the images
are rows, scaled by 1/256 as in the authors' code, so values lie in
[8/256, 238/256].

There is no official train/test split. :func:`load_frey` holds out
``n_test = 265`` frames (so 1700 remain for training) chosen by a
permutation seeded with ``seed``. The frames come from a video, so
neighbouring frames are nearly identical and a random split measures
interpolation between frames more than generalisation to new faces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import CorruptFileError, check_scalar
from .batches import holdout_indices
from .download import locate

__all__ = ["FREY_SHAPE", "FREY_N_TEST", "read_frey_mat", "load_frey"]

FREY_SHAPE = (28, 20)  # (rows, columns) of one image
FREY_N_TEST = 265  # default held-out frames: 1965 - 265 = 1700 for training
_D = FREY_SHAPE[0] * FREY_SHAPE[1]  # 560


def read_frey_mat(path) -> np.ndarray:
    """Read the faces from ``frey_rawface.mat``, one image per row.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray of uint8, shape (N, 560)
        ``ff.T``: row n is frame n, a 28 x 20 image flattened row-major
        (``reshape(-1, *FREY_SHAPE)`` gives the images).

    Raises
    ------
    CorruptFileError
        Not a MAT file, no variable ``ff``, or ``ff`` not a uint8 matrix with 560 rows.
    """
    import scipy.io  # only here: the rest of minivae.data needs no scipy

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        mat = scipy.io.loadmat(path, variable_names=["ff"])
    except Exception as err:  # scipy raises ValueError, OSError, IndexError, MatReadError... on bad files
        raise CorruptFileError(f"{path} is not a readable MATLAB .mat file ({type(err).__name__}: {err}).") from err
    ff = mat.get("ff")
    if ff is None:
        raise CorruptFileError(f"{path} has no variable 'ff'; expected Roweis's frey_rawface.mat.")
    if not isinstance(ff, np.ndarray) or ff.dtype != np.uint8 or ff.ndim != 2 or ff.shape[0] != _D:
        raise CorruptFileError(
            f"{path}: 'ff' is {getattr(ff, 'dtype', type(ff).__name__)} with shape {np.shape(ff)}, "
            f"not a uint8 matrix of shape ({_D}, N)."
        )
    return np.ascontiguousarray(ff.T)  # (N, 560)


def load_frey(split: str = "train", data_dir=None, download: bool = True, n_test: int = FREY_N_TEST, seed=0):
    """Frey Face images scaled to (0, 1), one per row.

    Parameters
    ----------
    split : {"train", "test", "all"}
        "test" is ``n_test`` frames chosen by a permutation seeded with
        ``seed``; "train" is the other ``1965 - n_test``; "all" is every
        frame in file order (``n_test`` and ``seed`` unused). Each split
        keeps the order of the video.
    data_dir : str, Path or None
        Folder holding ``frey/frey_rawface.mat`` (searched before
        ``$MINIVAE_DATA`` and the user cache).
    download : bool
        Download a missing file into the user cache (sha256-checked).
    n_test : int
        Size of the test split (default 265, leaving 1700 for training).
    seed : int or np.random.Generator
        Seeds the train/test permutation.

    Returns
    -------
    X : ndarray of float32, shape (N, 560)
        ``ff.T / 256``; ``X.reshape(-1, *FREY_SHAPE)`` gives the 28 x 20 images.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}.")
    faces = read_frey_mat(locate("frey_rawface", data_dir, download))  # (N, 560) uint8
    if split != "all":
        n_test = check_scalar(int(n_test), "n_test", int, min_val=1, max_val=len(faces) - 1)
        test_idx, train_idx = holdout_indices(len(faces), n_test, seed)
        faces = faces[test_idx if split == "test" else train_idx]
    X = np.empty(faces.shape, np.float32)  # (N, 560)
    np.divide(faces, np.float32(256), out=X)  # exact: 256 is a power of two
    return X
