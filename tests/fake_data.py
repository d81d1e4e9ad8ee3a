"""A tiny MNIST in the IDX format, for tests that run the command line without the real files."""

import struct

import numpy as np


def fake_mnist_splits(root, n_train, n_test):
    """root/mnist/ with train and t10k images (random binary pixels, 28 x 28) and zero labels; returns root."""
    d = root / "mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = (rng.random((n, 28, 28)) < 0.3).astype(np.uint8) * 255
        (d / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + pixels.tobytes())
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + bytes(n))
    return root
