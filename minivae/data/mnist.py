"""MNIST, in two forms: grey levels (IDX files) and Larochelle's fixed binarisation (.amat files).

Grey MNIST is what the paper's Figure 2 uses, with a Bernoulli decoder on
grey levels in [0, 1]; the fixed binarisation is the benchmark split on which
VAE log-likelihoods are usually reported. Both are returned as float32
matrices of shape (N, D) with D = 784 = 28 x 28, one image per row,
row-major, as the minibatch code and the MLPs expect.

Reading is fast on purpose: each file is decompressed once with zlib and
viewed with ``np.frombuffer`` (no copy); the only full-size copy is the
float32 output.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ..utils import CorruptFileError, check_scalar
from .batches import holdout_indices
from .download import locate

__all__ = [
    "MNIST_SHAPE",
    "read_idx",
    "read_amat",
    "load_mnist",
    "load_binarized_mnist",
]

MNIST_SHAPE = (28, 28)
_D = MNIST_SHAPE[0] * MNIST_SHAPE[1]  # 784
_IDX_UINT8 = 0x08  # IDX type code of unsigned bytes, the only type MNIST uses
_MNIST_FILES = {  # split -> (images key, labels key) in download.REMOTE_FILES
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_bytes(path) -> bytes:
    """The bytes of ``path``, gunzipped if its name ends in ``.gz``.

    Decompression is one zlib call per gzip member, which also checks the
    CRC and length stored in the gzip trailer.

    Raises
    ------
    CorruptFileError
        The gzip stream is damaged or ends early (a truncated download).
    """
    path = Path(path)
    raw = path.read_bytes()
    if not path.name.endswith(".gz"):
        return raw
    parts = []
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer
        try:
            parts.append(d.decompress(raw))
        except zlib.error as err:
            raise CorruptFileError(
                f"{path} is not a valid gzip file ({err}); delete it so it can be downloaded again."
            ) from err
        if not d.eof:
            raise CorruptFileError(
                f"{path} is truncated: its gzip stream ends early; delete it so it can be downloaded again."
            )
        raw = d.unused_data
        if not raw:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_idx(path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed or not).

    The IDX header is a magic number ``0x0000 08 nd`` (0x08 = uint8, nd = the
    number of dimensions), then nd big-endian int32 sizes, then the data,
    row-major. MNIST images have magic 2051 (nd = 3: count, 28, 28) and
    labels 2049 (nd = 1: count).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray of uint8, shape from the header
        A read-only view on the decompressed bytes.

    Raises
    ------
    CorruptFileError
        Wrong magic number, header or data shorter than promised, or extra bytes.
    """
    buf = read_bytes(path)
    if len(buf) < 4:
        raise CorruptFileError(f"{path} is not an IDX file: it has only {len(buf)} bytes.")
    magic = int.from_bytes(buf[:4], "big")
    ndim = buf[3]
    if buf[0] != 0 or buf[1] != 0 or buf[2] != _IDX_UINT8 or ndim == 0:
        raise CorruptFileError(
            f"{path} does not start with an IDX magic number for uint8 data (got 0x{magic:08x}; "
            "MNIST images have 0x00000803 and labels 0x00000801)."
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise CorruptFileError(f"{path} is truncated: its {ndim}-dimension IDX header needs {header} bytes, "
                               f"the file has {len(buf)}.")
    shape = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(shape, dtype=np.int64))
    have = len(buf) - header
    if have < n:
        raise CorruptFileError(
            f"{path} is truncated: its header promises shape {shape} ({n} bytes) but only {have} bytes follow."
        )
    if have > n:
        raise CorruptFileError(
            f"{path} has {have - n} bytes more than its header promises (shape {shape}); the file is damaged."
        )
    return np.frombuffer(buf, np.uint8, count=n, offset=header).reshape(shape)


def _read_mnist_pair(split: str, data_dir, download: bool):
    """Images (N, 784) and labels (N,), both uint8, of the original 'train' or 'test' files."""
    images_path, labels_path = (locate(key, data_dir, download) for key in _MNIST_FILES[split])
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != MNIST_SHAPE:
        raise CorruptFileError(
            f"{images_path} holds an array of shape {images.shape}, not MNIST images of shape (N, 28, 28)."
        )
    if labels.ndim != 1:
        raise CorruptFileError(f"{labels_path} holds an array of shape {labels.shape}, not MNIST labels (N,).")
    if len(images) != len(labels):
        raise CorruptFileError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            "the two files must come from the same split."
        )
    if len(labels) and labels.max() > 9:
        raise CorruptFileError(f"{labels_path} has a label {labels.max()}; MNIST labels are 0 to 9.")
    return images.reshape(len(images), _D), labels


def _to_unit_float32(u8: np.ndarray, scale: float) -> np.ndarray:
    """``u8 / scale`` as float32, written once into a preallocated array."""
    out = np.empty(u8.shape, np.float32)
    np.divide(u8, np.float32(scale), out=out)
    return out


def load_mnist(split: str = "train", data_dir=None, download: bool = True, n_valid: int = 0, seed=0):
    """MNIST grey levels in [0, 1] with their labels.

    Parameters
    ----------
    split : {"train", "valid", "test"}
        "train" and "test" are the original 60000 and 10000 images. With
        ``n_valid > 0``, a validation set of ``n_valid`` training images is
        chosen by a permutation seeded with ``seed``: "valid" returns it and
        "train" returns the other ``60000 - n_valid`` images. Both keep the
        order of the file.
    data_dir : str, Path or None
        Folder holding ``mnist/`` (searched before ``$MINIVAE_DATA`` and the
        user cache). The IDX files may be ``.gz`` or uncompressed.
    download : bool
        Download missing files into the user cache (sha256-checked).
    n_valid : int
        Size of the validation set carved from train (0: none).
    seed : int or np.random.Generator
        Seeds the train/valid permutation.

    Returns
    -------
    X : ndarray of float32, shape (N, 784)
        Grey levels ``uint8 / 255``, images flattened row-major.
    y : ndarray of int64, shape (N,)
        Digit labels 0 to 9.
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', not {split!r}.")
    n_valid = check_scalar(int(n_valid), "n_valid", int, min_val=0)
    if split == "valid" and n_valid == 0:
        raise ValueError("split='valid' needs a validation set: pass n_valid > 0, e.g. n_valid=10000.")
    images, labels = _read_mnist_pair("test" if split == "test" else "train", data_dir, download)
    if split != "test" and n_valid > 0:
        if n_valid >= len(images):
            raise ValueError(f"n_valid={n_valid} leaves no training images out of {len(images)}.")
        valid_idx, train_idx = holdout_indices(len(images), n_valid, seed)
        idx = valid_idx if split == "valid" else train_idx
        images, labels = images[idx], labels[idx]
    X = _to_unit_float32(images, 255)  # (N, 784)
    return X, labels.astype(np.int64)


_AMAT_ROW_BYTES = 2 * _D  # 784 digits, each followed by a space or, last, a newline


def read_amat(path) -> np.ndarray:
    """Read one of Larochelle's binarised-MNIST ``.amat`` files (gzip-compressed or not).

    The format is text: one image per line, 784 values ``0``/``1`` separated
    by single spaces. A file in exactly that layout is parsed with one
    ``np.frombuffer`` (every second byte is a digit). Anything else (other
    whitespace, ``\\r\\n`` line ends) goes through a line-by-line parse that
    names the first bad line.

    Returns
    -------
    ndarray of uint8, shape (N, 784)
        Values 0 and 1.

    Raises
    ------
    CorruptFileError
        A line without 784 values, or a value other than 0 or 1 (names the line).
    """
    buf = read_bytes(path)
    n, rem = divmod(len(buf), _AMAT_ROW_BYTES)
    if n > 0 and rem == 0:
        rows = np.frombuffer(buf, np.uint8).reshape(n, _AMAT_ROW_BYTES)
        seps = rows[:, 1::2]  # (N, 784)
        if (seps[:, :-1] == ord(" ")).all() and (seps[:, -1] == ord("\n")).all():
            x = rows[:, 0::2] - np.uint8(ord("0"))  # (N, 784); bytes below '0' wrap to > 1
            if x.max() <= 1:
                return x
    return _read_amat_lines(buf, path)


def _read_amat_lines(buf: bytes, path) -> np.ndarray:
    """Slow path of :func:`read_amat`: validate line by line, report the first bad one."""
    lines = buf.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()  # trailing newline(s)
    if not lines:
        raise CorruptFileError(f"{path} contains no images.")
    rows = []
    allowed = {b"0", b"1"}
    for number, line in enumerate(lines, start=1):
        values = line.split()
        if len(values) != _D:
            raise CorruptFileError(f"{path}, line {number}: expected {_D} values, found {len(values)}.")
        if not allowed.issuperset(values):
            bad = next(v for v in values if v not in allowed)
            raise CorruptFileError(
                f"{path}, line {number}: value {bad.decode(errors='replace')!r} is not 0 or 1."
            )
        rows.append(b"".join(values))
    return np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), _D) - np.uint8(ord("0"))


def load_binarized_mnist(split: str = "train", data_dir=None, download: bool = True) -> np.ndarray:
    """Larochelle's fixed binarisation of MNIST (Salakhutdinov & Murray 2008).

    Parameters
    ----------
    split : {"train", "valid", "test"}
        50000 / 10000 / 10000 images. Train and valid are a shuffled split of
        the MNIST training images; test is the MNIST test set sorted by class.
    data_dir : str, Path or None
        Folder holding ``binarized_mnist/binarized_mnist_<split>.amat`` (or ``.amat.gz``).
    download : bool
        Download a missing file (uncompressed ``.amat``) into the user cache.

    Returns
    -------
    X : ndarray of float32, shape (N, 784)
        Values in {0, 1}. No labels are published for this set.
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', not {split!r}.")
    x = read_amat(locate(f"binarized_mnist_{split}", data_dir, download))  # (N, 784) uint8
    return x.astype(np.float32)
