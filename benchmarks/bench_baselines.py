"""Samples/s of one training step of AEVB and wake-sleep (readable and fast) and MCEM, in two checkouts.

    python benchmarks/bench_baselines.py OLD_TREE NEW_TREE [--rounds 3] [--dtype float32]

The paper's settings: real MNIST grey levels (``MINIVAE_DATA``), M = 100, L = 1,
Adagrad 0.02, weight decay 1/N; Figure 3's 784-100-3 model for every step, with
MCEM as ``MCEM``'s defaults run it (10 leapfrog steps, 5 updates of theta per E-step),
and Figure 2's 784-500-20 for AEVB and wake-sleep (readable and fast). Each round runs one fresh process
per tree, alternately (old, new, old, new, ...); each process times ``--repeat`` x
``--steps`` steps of every contender in turn, after a warm-up, with BLAS and Numba on
one thread and the process's CPU time (so waiting for a core on a shared machine does
not count). It prints each process's ms per step, then per contender the medians over
rounds as samples/s (M over the step's time), new over old, and the contender over the
same tree's AEVB readable step on the same model: the target of issue 25 is a baseline
at 1 or more. The rows ``products-<step>`` time the large matrix products of that step at
784-100-3 alone (5 for AEVB, 7 for wake-sleep, 37 for MCEM: 11 gradients in z of 2, 5 updates
of theta of 3), so their column "x/AEVB" is the most any implementation of the same algorithm
on one BLAS thread could reach. One JSON line of every number ends the output.

The fast rows are AEVB's and wake-sleep's fused twins (``FastAEVB``, ``FastWakeSleep``); a tree
without one (or with Numba's JIT off) skips its row.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import numpy as np
tree, data_dir, dtype, repeat, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, tree)
import minivae
assert minivae.__file__.startswith(tree), (minivae.__file__, tree)
from minivae.data import load_mnist
from minivae.model import VAE
from minivae.optim import Adagrad
from minivae.steps import AEVB
from minivae.baselines.wakesleep import WakeSleep
from minivae.baselines.mcem import MCEM
N, M = 20000, 100
X = load_mnist("train", data_dir=data_dir)[0][:N].astype(dtype)
wd = 1 / N

def build(name, model):
    if name == "aevb":
        return AEVB(model, Adagrad(0.02), "B", 1, wd)
    if name == "aevb-fast":
        from minivae.fast.step import FastAEVB
        return FastAEVB(model, Adagrad(0.02), "B", 1, wd)
    if name == "wake-sleep":
        return WakeSleep(model, Adagrad(0.02), Adagrad(0.02), wd)
    if name == "wake-sleep-fast":
        from minivae.fast.wakesleep import FastWakeSleep
        return FastWakeSleep(model, Adagrad(0.02), Adagrad(0.02), wd)
    return MCEM(model, Adagrad(0.02), n_data=N, weight_decay=wd)

contenders = [(name, H, J) for H, J, names in (
                  (100, 3, ("aevb", "aevb-fast", "wake-sleep", "wake-sleep-fast", "mcem")),
                  (500, 20, ("aevb", "aevb-fast", "wake-sleep", "wake-sleep-fast")))
              for name in names]
fast = {}                                        # fast contender -> whether this tree runs it
try:
    from minivae.fast import jit_enabled
    fast["aevb-fast"] = jit_enabled()
    import minivae.fast.wakesleep  # noqa: F401
    fast["wake-sleep-fast"] = jit_enabled()
except ImportError:
    pass
runs = []
for name, H, J in contenders:
    if name in ("aevb-fast", "wake-sleep-fast") and not fast.get(name, False):
        continue
    step, rng = build(name, VAE(784, H, J, dtype=dtype, random_state=0)), np.random.default_rng(0)
    def run(j, step=step, rng=rng):
        return step(X[j * M:(j + 1) * M], np.arange(j * M, (j + 1) * M), rng)
    for j in range(5):
        run(j)
    runs.append((f"{name} {784}-{H}-{J}", run))
# The large matrix products of each step at 784-100-3 alone (100 x 100 x 784 each, on arrays of
# the step's shapes): what no implementation of the same algorithm on one BLAS thread can go below.
g = np.random.default_rng(1)
x, W1 = X[:M], g.standard_normal((784, 100)).astype(dtype)
h, W2, d = (g.standard_normal(s).astype(dtype) for s in ((M, 100), (100, 784), (M, 784)))
aevb_products = [lambda: x @ W1, lambda: h @ W2, lambda: h.T @ d, lambda: d @ W2.T, lambda: x.T @ h]
products = {"aevb": aevb_products,                                   # encoder forward, decoder fwd/bwd, encoder dW
            "wake-sleep": aevb_products + [lambda: x @ W1, lambda: h @ W2],   # + the dream's decoder, the sleep encoder
            "mcem": [lambda: h @ W2, lambda: d @ W2.T] * 11 + [lambda: h @ W2, lambda: h.T @ d, lambda: d @ W2.T] * 5}
for name, calls in products.items():                                # 11 gradients in z, 5 updates of theta
    def run(j, calls=calls):
        for f in calls:
            f()
    runs.append((f"products-{name} 784-100-3", run))
times = {key: [] for key, _ in runs}
batches = len(X) // M
for r in range(repeat):                          # contenders take turns within each repetition
    for key, run in runs:
        t = time.process_time()
        for i in range(steps):
            run((r * steps + i) % batches)
        times[key].append((time.process_time() - t) / steps * 1e3)
print(json.dumps({key: statistics.median(v) for key, v in times.items()}))
"""


def processor():
    """The CPU's model name and family/model numbers, from /proc/cpuinfo."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old"), p.add_argument("new")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5, help="timings per contender in each process")
    p.add_argument("--steps", type=int, default=10, help="steps per timing")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--data-dir", default=os.environ.get("MINIVAE_DATA", "../shared/data"))
    args = p.parse_args()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    print(f"processor: {processor()}")
    print(f"{args.dtype}, one thread (BLAS and Numba), process CPU time, {args.repeat} x {args.steps} steps a "
          f"contender per process, {args.rounds} rounds; load average before: {os.getloadavg()}")
    results = {"old": [], "new": []}
    for k in range(args.rounds):
        for name, tree in trees.items():
            r = subprocess.run([sys.executable, "-c", CHILD, tree, args.data_dir, args.dtype, str(args.repeat),
                                str(args.steps)], env=env, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"the {name} tree's process failed:\n{r.stderr}")
            ms = json.loads(r.stdout.strip().splitlines()[-1])
            results[name].append(ms)
            print(f"round {k + 1} {name} {tree}: " + ", ".join(f"{c} {v:.2f}" for c, v in ms.items()) + " ms")
    print(f"load average after: {os.getloadavg()}")
    med = {name: {c: statistics.median(r[c] for r in rs) for c in rs[0]} for name, rs in results.items()}
    print(f"\n{'step':30s} {'old ms':>8s} {'new ms':>8s} {'old samples/s':>14s} {'new samples/s':>14s} "
          f"{'new/old':>8s} {'old/AEVB':>9s} {'new/AEVB':>9s}")
    summary = {}
    for c in med["new"]:
        shape = c.split()[1]
        row = {"new_ms": med["new"][c], "new_samples_per_s": 100e3 / med["new"][c],
               "new_over_aevb": med["new"][f"aevb {shape}"] / med["new"][c]}
        if c in med["old"]:
            row.update(old_ms=med["old"][c], old_samples_per_s=100e3 / med["old"][c],
                       new_over_old=med["old"][c] / med["new"][c],
                       old_over_aevb=med["old"][f"aevb {shape}"] / med["old"][c])
        summary[c] = row
        nan = float("nan")
        print(f"{c:30s} {row.get('old_ms', nan):8.2f} {row['new_ms']:8.2f} {row.get('old_samples_per_s', nan):14.0f} "
              f"{row['new_samples_per_s']:14.0f} {row.get('new_over_old', nan):8.2f} "
              f"{row.get('old_over_aevb', nan):9.2f} {row['new_over_aevb']:9.2f}")
    print("(samples/s: M = 100 over the median step time; new/old: speed ratio; x/AEVB: samples/s over the same "
          "tree's readable AEVB step on the same model)")
    print(json.dumps({"processor": processor(), "dtype": args.dtype, "trees": trees, "runs": results,
                      "summary": summary}))


if __name__ == "__main__":
    main()
