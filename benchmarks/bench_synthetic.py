"""Time the generation of synthetic digits (a script, not a test).

Usage::

    python benchmarks/bench_synthetic.py [--n 10000] [--repeats 5]

Prints the one-off cost of building the glyph atlas (fonts rendered, thinned
and turned into distance fields, once per process), the median time over
``--repeats`` runs of ``make_digits(n)``, and a final JSON line with the same
numbers for scripts that collect benchmark results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from minivae.data import synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="images per run (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    args = parser.parse_args(argv)

    synthetic._atlas.cache_clear()
    t0 = time.perf_counter()
    synthetic._atlas()
    atlas_s = time.perf_counter() - t0

    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        X, _ = synthetic.make_digits(args.n, seed=r)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)

    print(f"glyph atlas (once per process): {atlas_s:.3f} s")
    print(f"make_digits({args.n}): median {median:.3f} s over {args.repeats} runs "
          f"(min {min(times):.3f} s, max {max(times):.3f} s), {args.n / median:,.0f} images/s")
    print(json.dumps({
        "benchmark": "make_digits",
        "n": args.n,
        "repeats": args.repeats,
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "atlas_s": round(atlas_s, 4),
        "mean_pixel": round(float(X.mean()), 4),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
