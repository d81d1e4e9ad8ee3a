"""The paper's MNIST training step in two checkouts of minivae, interleaved: did a change cost speed?

    python benchmarks/bench_checkouts.py OLD_TREE NEW_TREE [--rounds 3]

Each round runs one fresh process per tree, alternately, each timing 9 x 30 steps of the
784-500-20 model (Adagrad 0.02, weight decay 1/60000, M = 100, the first 20000 MNIST
images) on the fast path, in float32 and float64, with one thread for BLAS and Numba and
this process's CPU time (so waiting for a core on a shared machine does not count). It
prints each run's median ms per step and, at the end, the medians over rounds and their
ratio. ``--two-threads`` times the two-thread step instead (``FastAEVB(two_threads=True)``,
BLAS on two threads outside it) by the wall clock: its two threads' CPU time would count
their waits; on a machine other jobs share, the cores they take show in its times.

A tree whose optimisers still have ``_update_fast`` is a checkout from before the
fast path moved into ``minivae.fast`` (the backend switch); its step is
``model.loss_and_grads`` then ``optimizer.step`` under the numba backend.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import importlib, json, statistics, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from minivae.data import load_mnist
from minivae.model import VAE
from minivae.optim import Adagrad
X = load_mnist("train", data_dir=sys.argv[2])[0][:20000]
two = sys.argv[3] == "two"
clock = time.perf_counter if two else time.process_time
old = hasattr(importlib.import_module("minivae.optim").Optimizer, "_update_fast")
out = {}
for dtype in ("float32", "float64"):
    model, opt, rng = VAE(784, 500, 20, dtype=dtype, random_state=0), Adagrad(0.02), np.random.default_rng(0)
    Xd = X.astype(dtype)
    if old:
        def run(x):
            model.loss_and_grads(x, model.sample_eps(100, 1, rng), "B")
            opt.step(model.params, model.grads, weight_decay=1 / 60000)
    else:
        from minivae.fast.step import FastAEVB
        step = FastAEVB(model, opt, "B", 1, 1 / 60000, **({"two_threads": True} if two else {}))
        run = lambda x: step(x, None, rng)
    for i in range(20):
        run(Xd[i * 100:(i + 1) * 100])
    times = []
    for r in range(9):
        t = clock()
        for i in range(30):
            j = (r * 30 + i) % 200
            run(Xd[j * 100:(j + 1) * 100])
        times.append((clock() - t) / 30 * 1e3)
    out[dtype] = statistics.median(times)
print(json.dumps(out))
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old"), p.add_argument("new")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default=os.environ.get("MINIVAE_DATA", "../shared/data"))
    p.add_argument("--two-threads", action="store_true", help="time the two-thread step, by the wall clock")
    args = p.parse_args()
    threads = "2" if args.two_threads else "1"
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads)
    results = {"old": [], "new": []}
    print(f"{'two-thread step, wall clock' if args.two_threads else 'one-thread step, BLAS on one thread, CPU time'}; "
          f"load average before: {os.getloadavg()}")
    for k in range(args.rounds):
        for name in ("old", "new"):
            tree = getattr(args, name)
            mode = "two" if args.two_threads else "one"
            r = subprocess.run([sys.executable, "-c", CHILD, tree, args.data_dir, mode], env=env, capture_output=True,
                               text=True, check=True)
            ms = json.loads(r.stdout.strip().splitlines()[-1])
            results[name].append(ms)
            print(f"round {k + 1} {name:3s} {tree}: " + ", ".join(f"{d} {v:.2f} ms" for d, v in ms.items()))
    print(f"load average after: {os.getloadavg()}")
    for dtype in ("float32", "float64"):
        old = statistics.median(r[dtype] for r in results["old"])
        new = statistics.median(r[dtype] for r in results["new"])
        print(f"{dtype}: old {old:.2f} ms, new {new:.2f} ms per step (medians of {args.rounds} runs); new/old {new / old:.3f}")


if __name__ == "__main__":
    main()
