"""Sweep throughput: one process with two threads against two single-threaded processes.

For a sweep of independent runs (Figure 2: several latent sizes), what counts
is training samples per second summed over the machine. This runs the fast
path's training step of the paper's MNIST model (784-500-20, M = 100, Adagrad,
weight decay 1/N) for ``--seconds`` in

- one process with ``--threads`` (default 2) BLAS and Numba threads, and
- ``--threads`` processes at once, each with one thread,

``--repeat`` times in turns, and prints the summed samples per second of each
(medians, quartiles), their ratio, and the load average, then one JSON line.

Usage::

    python benchmarks/bench_sweep.py [--threads 2] [--seconds 20] [--repeat 3] [--dtype float32] [-J 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
sys.path.insert(0, ROOT)
import numpy as np
from minivae.run import threads
n_threads, seconds, dtype, J = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
threads.configure(n_threads)
from minivae.model import VAE
from minivae.optim import Adagrad
from minivae.fast.step import FastAEVB
model = VAE(784, 500, J, dtype=dtype, random_state=0)
step = FastAEVB(model, Adagrad(0.02), "B", 1, weight_decay=1 / 60000)
rng = np.random.default_rng(0)
data = [(rng.random((100, 784)) < 0.13).astype(dtype) for _ in range(20)]
for i in range(10):
    step(data[i % 20], None, rng)
print("ready", flush=True)
sys.stdin.readline()                                  # start together
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    step(data[n % 20], None, rng)
    n += 1
print(json.dumps({"samples_per_s": 100 * n / (time.perf_counter() - t0)}))
"""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # this checkout's minivae


def run(n_procs, threads_each, args, env):
    procs = [subprocess.Popen([sys.executable, "-c", CHILD.replace("ROOT", repr(ROOT)), str(threads_each), str(args.seconds), args.dtype,
                               str(args.J)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(n_procs)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    total = 0.0
    for p in procs:
        out, _ = p.communicate()
        total += json.loads(out.strip().splitlines()[-1])["samples_per_s"]
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("-J", type=int, default=20)
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    load_before = os.getloadavg()
    one, many = [], []
    for r in range(args.repeat):
        for kind in (("one", "many") if r % 2 == 0 else ("many", "one")):
            if kind == "one":
                one.append(run(1, args.threads, args, env))
            else:
                many.append(run(args.threads, 1, args, env))
    load_after = os.getloadavg()
    ratio = [b / a for a, b in zip(one, many)]

    def q(v):
        return statistics.quantiles(v, n=4)[::2] if len(v) > 1 else [v[0], v[0]]

    result = {"threads": args.threads, "dtype": args.dtype, "J": args.J, "seconds": args.seconds,
              "repeat": args.repeat, "load_average": {"before": list(load_before), "after": list(load_after)},
              "one_process_samples_per_s": statistics.median(one), "one_process_quartiles": q(one),
              "single_threaded_processes_samples_per_s": statistics.median(many),
              "single_threaded_processes_quartiles": q(many),
              "processes_over_one": statistics.median(ratio), "processes_over_one_quartiles": q(ratio)}
    print(f"sweep throughput, 784-500-{args.J}, M=100, {args.dtype}, {args.seconds:.0f} s per run, "
          f"{args.repeat} rounds; load average {' '.join(f'{v:.2f}' for v in load_before)} before, "
          f"{' '.join(f'{v:.2f}' for v in load_after)} after")
    print(f"  one process, {args.threads} threads:            {statistics.median(one):9.0f} samples/s "
          f"({q(one)[0]:.0f}-{q(one)[1]:.0f})")
    print(f"  {args.threads} processes, 1 thread each (summed): {statistics.median(many):9.0f} samples/s "
          f"({q(many)[0]:.0f}-{q(many)[1]:.0f})")
    print(f"  processes / one process: {statistics.median(ratio):.2f} ({q(ratio)[0]:.2f}-{q(ratio)[1]:.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
