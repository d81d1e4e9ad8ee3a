"""A training step under load: minivae's thread choice against 1 and 2 threads.

Starts ``--spinners`` competing CPU-bound processes (a Python busy loop each,
default 1), then, in a fresh Python process per setting and with no thread
environment variable set, times the fast path's training step of the paper's
MNIST model (784-500-20, M = 100, float32, Adagrad, weight decay 1/N) with

- ``default``: the count :func:`minivae.run.threads.configure` chooses (what
  ``minivae train`` does without ``--threads``);
- ``1`` and ``2`` threads (``configure(1)``, ``configure(2)``: BLAS and Numba).

Settings take turns, ``--repeat`` times; each run times ``--steps`` steps after
a warm-up. Prints medians and quartiles of the per-step time, the ratio of
each to the 1-thread time of the same round, the count the chooser picked, the
load average, then one JSON line.

Usage::

    python benchmarks/bench_threads.py [--spinners 1] [--repeat 5] [--steps 100] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
sys.path.insert(0, ROOT)
import numpy as np
from minivae.run import threads
setting, steps, dtype = sys.argv[1], int(sys.argv[2]), sys.argv[3]
chosen = threads.configure(None if setting == "default" else int(setting))
from minivae.model import VAE
from minivae.optim import Adagrad
from minivae.fast.step import FastAEVB
model = VAE(784, 500, 20, dtype=dtype, random_state=0)
step = FastAEVB(model, Adagrad(0.02), "B", 1, weight_decay=1 / 60000)
rng = np.random.default_rng(0)
data = [(rng.random((100, 784)) < 0.13).astype(dtype) for _ in range(20)]
for i in range(10):
    step(data[i % 20], None, rng)
t0 = time.perf_counter()
for i in range(steps):
    step(data[i % 20], None, rng)
print(json.dumps({"ms": 1e3 * (time.perf_counter() - t0) / steps, "threads": chosen["threads"],
                  "blas": chosen["blas"], "numba": chosen["numba"]}))
"""

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # this checkout's minivae

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "GOTO_NUM_THREADS", "BLIS_NUM_THREADS")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spinners", type=int, default=1, help="competing busy-loop processes")
    p.add_argument("--repeat", type=int, default=5, help="rounds (each setting once per round)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per run")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}    # no thread variable set
    settings = ("default", "1", "2")
    load_before = os.getloadavg()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.spinners)]
    runs = {s: [] for s in settings}
    try:
        time.sleep(1.0)
        for r in range(args.repeat):
            order = settings[r % 3:] + settings[:r % 3]
            for s in order:
                out = subprocess.run([sys.executable, "-c", CHILD.replace("ROOT", repr(ROOT)), s, str(args.steps), args.dtype], env=env,
                                     capture_output=True, text=True, check=True).stdout
                runs[s].append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for sp in spinners:
            sp.kill()
            sp.wait()
    load_after = os.getloadavg()
    ms = {s: [r["ms"] for r in runs[s]] for s in settings}
    result = {"spinners": args.spinners, "dtype": args.dtype, "steps": args.steps, "repeat": args.repeat,
              "load_average": {"before": list(load_before), "after": list(load_after)},
              "cores": len(os.sched_getaffinity(0)), "chosen_threads": [r["threads"] for r in runs["default"]]}
    print(f"fast training step, 784-500-20, M=100, {args.dtype}, with {args.spinners} competing busy loop(s) "
          f"on {result['cores']} cores; load average {' '.join(f'{v:.2f}' for v in load_before)} before, "
          f"{' '.join(f'{v:.2f}' for v in load_after)} after")
    for s in settings:
        q1, _, q3 = statistics.quantiles(ms[s], n=4) if len(ms[s]) > 1 else (ms[s][0], 0, ms[s][0])
        ratio = [a / b for a, b in zip(ms[s], ms["1"])]
        result[s] = {"ms": statistics.median(ms[s]), "ms_quartiles": [q1, q3], "over_1_thread": statistics.median(ratio)}
        label = {"default": "minivae's choice", "1": "1 thread", "2": "2 threads"}[s]
        extra = f" (chose {sorted(set(result['chosen_threads']))})" if s == "default" else ""
        print(f"  {label + extra:28s} {statistics.median(ms[s]):8.2f} ms/step ({q1:.2f}-{q3:.2f}), "
              f"{statistics.median(ratio):5.2f}x the 1-thread time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
