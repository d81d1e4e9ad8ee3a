"""How much load_mnist costs beyond decompressing the MNIST files.

Prints the median over ``--repeat`` runs of
  1. plain gzip decompression of the four MNIST files (``gzip.open(p).read()``,
     the README's way, and one-shot ``zlib.decompress``, the fastest plain way),
  2. ``load_mnist`` for train + test (decompress, check, convert to float32),
and the ratio of 2 to the faster of 1, then one JSON line with the same numbers.

Usage::

    python benchmarks/bench_data.py [--data-dir ../shared/data] [--repeat 7]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import time
import zlib

import numpy as np

from minivae.data import load_mnist, locate

KEYS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $MINIVAE_DATA, user cache)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    paths = [locate(k, args.data_dir, download=False) for k in KEYS]
    if not all(p.name.endswith(".gz") for p in paths):
        parser.error(f"this benchmark needs the .gz files; found {[str(p) for p in paths]}")

    def plain_gzip():
        return [gzip.open(p).read() for p in paths]

    def plain_zlib():
        return [zlib.decompress(p.read_bytes(), wbits=31) for p in paths]

    def loader():
        return load_mnist("train", args.data_dir, download=False), load_mnist("test", args.data_dir, download=False)

    loader()  # warm-up: page cache and first-touch of the output memory
    t_gzip = median_seconds(plain_gzip, args.repeat)
    t_zlib = median_seconds(plain_zlib, args.repeat)
    t_load = median_seconds(loader, args.repeat)
    baseline = min(t_gzip, t_zlib)
    ratio = t_load / baseline
    print(f"gzip.open().read() of the 4 MNIST files : {t_gzip * 1e3:8.1f} ms (median of {args.repeat})")
    print(f"zlib.decompress of the 4 MNIST files    : {t_zlib * 1e3:8.1f} ms")
    print(f"load_mnist train + test (float32)       : {t_load * 1e3:8.1f} ms")
    print(f"ratio load / fastest plain decompression: {ratio:8.2f}  (target <= 2)")
    print(json.dumps({
        "bench": "load_mnist", "repeat": args.repeat, "gzip_s": round(t_gzip, 4), "zlib_s": round(t_zlib, 4),
        "load_mnist_s": round(t_load, 4), "ratio": round(ratio, 3),
        "python": platform.python_version(), "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
