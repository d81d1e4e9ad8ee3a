"""Training-step throughput of the paper's MNIST model: NumPy path, Numba path, PyTorch, JAX.

The model and step of Kingma & Welling's MNIST experiment: 784-500-20, tanh,
Bernoulli decoder, M = 100, L = 1, estimator B, Adagrad with lr 0.02, weight
decay as the N(0, I) parameter prior (1/N with N = 60000). One step is what
``minivae.train.fit`` runs: ``step(x, idx, rng)`` of the readable
``minivae.steps.AEVB`` (the NumPy path) or of ``minivae.fast.step.FastAEVB``
(the Numba path): draw eps, the gradient, the Adagrad update.

Prints a table, then one JSON line with every number:

1. samples/s of the NumPy path and the Numba path of minivae, and of the same
   model in PyTorch (autograd, ``torch.optim.Adagrad``, its CPU ``fused``
   update when available) if torch is installed, and in JAX (the whole step,
   ``value_and_grad`` and a hand-written Adagrad with the same weight decay,
   in one ``jax.jit`` with the parameters and the Adagrad state donated) if
   jax is installed, in float32 and float64. The Numba path runs three times:
   as ``minivae train`` runs it (with two threads: the two-thread step of
   ``minivae.fast.pair``, its products skipping x's zeros), and on the calling
   thread alone (``two_threads=False``, BLAS's own threads for the products)
   with each choice of its products with x forced: dense (``sparse_input=False``,
   what the other contenders compute) and skipping x's zeros (MNIST is 81 %
   zeros; ``sparse_input=True``). With two threads, a fourth time: the
   two-thread step's own work done on one thread, BLAS on one thread too
   ("one thread, BLAS on one"); the two-thread step's speed-up over it (2 at
   most) says what its hand-offs and waits cost, and JAX's time over half of
   it is the fast/JAX ratio the step would reach with none. The row "two threads
   / one + BLAS's" is the two-thread step's speed over the step on one thread
   with BLAS's two threads (dense products, the one-thread step's own choice
   there): what the two-thread machinery earns (``docs/architecture.md``; 1.26x
   in float32 and 1.22x in float64 when it was last weighed). NumPy's OpenBLAS runs the
   kernels it picks for this CPU: ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``, if
   set, are unset for this command alone (before NumPy loads OpenBLAS; the tests and
   CI leave them as they are), and the header names the BLAS library, the kernels
   that then run (threadpoolctl's ``architecture``) and what was unset.
   Neither PyTorch nor JAX is a dependency of
   minivae; each is skipped, with a note, when not installed. All
   start from the same initial weights and see the same minibatches (real MNIST
   grey levels, or random binary images of the same shape with
   ``--random-data`` or when MNIST is not found). Contenders are interleaved:
   each repetition times ``--steps`` steps of each in turn (in a rotating
   order), after a warm-up; each turn starts after a pause (``--settle``,
   0.3 s) and 10 untimed steps, so that no turn shares the cores with the
   threads the previous contender left spinning (OpenBLAS's spin for about
   0.1 s after a product), and each is timed running back to back, as in
   training. The table shows medians over ``--repeat`` repetitions, and ratios
   are taken pair by pair within each repetition.
2. The step's matrix products alone: the same 11 ``np.matmul`` calls into the
   same buffers as the dense-product Numba step (the floor no dense NumPy program
   can pass), and the fraction of that step they take (median and quartiles of the
   per-repetition fractions: on a shared machine it moves by a few points).
3. Seconds from starting a fresh Python process to the end of its first
   training step (import, build the model, one step; float32, as the
   training default), with a warm Numba cache and with a cold one (an empty
   NUMBA_CACHE_DIR).
4. With ``--check-epoch``: one fixed-seed epoch over all 60000 MNIST training
   images in float64 under both backends, and the largest relative difference
   of the per-step bounds (the test suite does this on a 10000-image subset).
5. With ``--breakdown``: where a Numba step's time goes, per kernel, matrix
   products, optimiser and the rest (Python), from wrapping each call with a
   timer (which adds its own small cost to "the rest").

Thread counts: ``--threads`` (default: the cores this process may use) sets
OpenBLAS's, Numba's and torch's thread counts alike.

Usage::

    python benchmarks/bench_train.py [--threads 2] [--repeat 15] [--steps 30] [--settle 0.3] [--data-dir DIR]
                                     [--random-data] [--no-torch] [--no-jax] [--no-numpy] [--no-latency]
                                     [--floor] [--check-epoch] [--breakdown]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

# the minivae of this checkout, not another installed copy (python puts benchmarks/, not the root, on the path)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

D, H, J, M, L, LR, N_DATA = 784, 500, 20, 100, 1, 0.02, 60000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for OpenBLAS, Numba and torch (default: usable cores)")
    parser.add_argument("--repeat", type=int, default=15, help="timed repetitions per contender")
    parser.add_argument("--steps", type=int, default=30, help="training steps per repetition")
    parser.add_argument("--settle", type=float, default=0.3,
                        help="seconds of pause, then 10 untimed steps, before each contender's turn (0: none)")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $MINIVAE_DATA, cache)")
    parser.add_argument("--random-data", action="store_true", help="random binary images instead of MNIST")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-jax", action="store_true", help="skip JAX even if installed")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (only with --threads 1: on a "
                             "machine busy with other jobs it leaves out the time the step waited for a core)")
    parser.add_argument("--no-numpy", action="store_true", help="skip minivae's readable NumPy path")
    parser.add_argument("--floor", action="store_true", help="also measure the GEMM peak, memory bandwidth "
                        "and the step's fraction of its physical floor")
    parser.add_argument("--no-latency", action="store_true", help="skip the fresh-process measurements")
    parser.add_argument("--cold-runs", type=int, default=1, help="fresh processes with an empty Numba cache")
    parser.add_argument("--check-epoch", action="store_true",
                        help="also compare a full float64 MNIST epoch between the backends")
    parser.add_argument("--breakdown", action="store_true", help="also time each part of a Numba step")
    return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
UNSET = {}  # the OPENBLAS_* variables this command set aside (below), with their values
if ARGS is not None:  # thread counts must be set before numpy, numba, torch or jax start their pools
    for var in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    if ARGS.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    # OpenBLAS on its own choice of kernels for the comparison (read when NumPy loads it): set aside an
    # environment's pinned kernels and the cache size that goes with them, for this command only
    UNSET = {var: os.environ.pop(var) for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if var in os.environ}

import numpy as np  # noqa: E402

from minivae import __file__ as minivae_file  # noqa: E402
from minivae.fast import kernels  # noqa: E402
from minivae.fast.step import FastAEVB  # noqa: E402
from minivae.model import VAE  # noqa: E402
from minivae.optim import Adagrad  # noqa: E402
from minivae.steps import AEVB  # noqa: E402


# --- data ----------------------------------------------------------------------------------

def load_batches(args, n_batches=60):
    """n_batches minibatches of M images (float64) and a description of where they came from."""
    if not args.random_data:
        try:
            from minivae.data import load_mnist
            X, _ = load_mnist("train", data_dir=args.data_dir, download=False)
            rng = np.random.default_rng(0)
            idx = rng.permutation(len(X))[: n_batches * M]
            return [X[idx[i * M:(i + 1) * M]].astype(np.float64) for i in range(n_batches)], "MNIST train, grey levels"
        except Exception as err:  # noqa: BLE001 - any reason not to find MNIST: fall back, and say so
            print(f"(MNIST not available: {err}; using random binary data)", file=sys.stderr)
    rng = np.random.default_rng(0)
    return [(rng.random((M, D)) < 0.13).astype(np.float64) for _ in range(n_batches)], "random binary (p = 0.13)"


# --- contenders: each is a function run(k) doing k training steps --------------------------------

def minivae_contender(fast, dtype, batches, sparse_input=None, two_threads=None):
    """k training steps of minivae's readable AEVB step or of its fast twin, as fit runs them.

    ``sparse_input``, ``two_threads``: None, the fast step's own choice (two threads of its own and
    sparse products when BLAS has two threads; sparse products with one BLAS thread); True or False
    forces them (``FastAEVB``).
    """
    model = VAE(D, H, J, decoder="bernoulli", activation="tanh", init="paper", dtype=dtype, random_state=0)
    if fast:
        step = FastAEVB(model, Adagrad(LR), "B", L, weight_decay=1.0 / N_DATA, sparse_input=sparse_input,
                        two_threads=two_threads)
    else:
        step = AEVB(model, Adagrad(LR), "B", L, weight_decay=1.0 / N_DATA)
    rng = np.random.default_rng(1)
    data = [b.astype(dtype) for b in batches]
    state = {"i": 0}

    def run(k):
        for _ in range(k):
            x = data[state["i"] % len(data)]
            state["i"] += 1
            step(x, None, rng)

    run.model, run.data, run.step = model, data, step
    return run


def serial_contender(dtype, batches):
    """The fast step's work on one thread, BLAS on one thread too (sparse products, as the two-thread
    step takes them): half of its time is what the two-thread step would take if its two halves
    never waited for each other, so the pair's time against it says what the hand-offs cost."""
    from threadpoolctl import threadpool_limits

    inner = minivae_contender(True, dtype, batches, sparse_input=True, two_threads=False)

    def run(k):
        with threadpool_limits(1, user_api="blas"):
            inner(k)

    run.model, run.data, run.step = inner.model, inner.data, inner.step
    return run


def blas_description():
    """NumPy's BLAS (threadpoolctl): library, version, the kernels it runs, and the OPENBLAS_* variables unset.
    NumPy's is the one its wheel ships in ``numpy.libs`` (or the first BLAS loaded, if none is there):
    the contenders load others (SciPy's OpenBLAS)."""
    from threadpoolctl import threadpool_info
    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    own = [i for i in found if os.path.basename(os.path.dirname(i.get("filepath", ""))).startswith("numpy")]
    info = (own or found or [{}])[0]
    return {"library": info.get("internal_api"), "version": info.get("version"),
            "kernels": info.get("architecture"), "unset": dict(UNSET),
            "loaded": [(i.get("internal_api"), i.get("version"), i.get("filepath")) for i in found]}


def matmul_contender(numba_run):
    """The 11 products of a Numba step of this model, same shapes, same buffers, nothing else."""
    model, data = numba_run.model, numba_run.data
    numba_run(1)                                            # make sure the buffers exist
    ws = numba_run.step._workspaces[(M, L)]                 # the Numba step's own buffers
    enc_h, dec_h, out = model.encoder.trunk.layers[0], model.decoder.trunk.layers[0], model.decoder.logits
    W_h, W_d, W_y = enc_h.params["W"], dec_h.params["W"], out.params["W"]
    g_h, g_d, g_y = enc_h.grads["W"], dec_h.grads["W"], out.grads["W"]
    mm = np.matmul
    state = {"i": 0}

    def run(k):
        for _ in range(k):
            x = data[state["i"] % len(data)]
            state["i"] += 1
            mm(x, W_h, out=ws.enc_a[0])                    # forward
            mm(ws.enc_h[0], ws.W_heads, out=ws.heads)
            mm(ws.z, W_d, out=ws.dec_a[0])
            mm(ws.dec_h[0], W_y, out=ws.out_a)
            mm(ws.dec_h[0].T, ws.out_da, out=g_y)           # backward
            mm(ws.out_da, W_y.T, out=ws.dec_dh[0])
            mm(ws.z.T, ws.dec_da[0], out=g_d)
            mm(ws.dec_da[0], W_d.T, out=ws.dz)
            mm(ws.enc_h[0].T, ws.dheads, out=ws.gW_heads)
            mm(ws.dheads, ws.W_heads.T, out=ws.enc_dh[0])
            mm(x.T, ws.enc_da[0], out=g_h)

    return run


def torch_contender(dtype, batches, threads):
    """The same model and step in PyTorch, from the same initial weights."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    init = VAE(D, H, J, dtype="float64", random_state=0).params     # the minivae contenders' initial weights

    def linear(prefix):
        lin = torch.nn.Linear(*init[prefix + ".W"].shape, dtype=tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(init[prefix + ".W"].T.copy()))
            lin.bias.copy_(torch.from_numpy(init[prefix + ".b"]))
        return lin

    enc_h, enc_mu, enc_lv = linear("enc.h.0"), linear("enc.mu"), linear("enc.log_var")
    dec_h, dec_y = linear("dec.h.0"), linear("dec.logits")
    params = [p for m in (enc_h, enc_mu, enc_lv, dec_h, dec_y) for p in m.parameters()]
    # weight_decay = 1/N adds p / N to each gradient: the same N(0, I) prior as minivae's
    try:
        opt = torch.optim.Adagrad(params, lr=LR, eps=1e-10, weight_decay=1.0 / N_DATA, fused=True)
        opt_kind = "fused"
    except (TypeError, RuntimeError, ValueError):
        opt = torch.optim.Adagrad(params, lr=LR, eps=1e-10, weight_decay=1.0 / N_DATA)
        opt_kind = "default"
    gen = torch.Generator().manual_seed(1)
    data = [torch.from_numpy(b.astype(dtype)) for b in batches]
    state = {"i": 0}

    def run(k):
        for _ in range(k):
            x = data[state["i"] % len(data)]
            state["i"] += 1
            eps = torch.randn(M, J, generator=gen, dtype=tdt)
            opt.zero_grad(set_to_none=True)
            h = torch.tanh(enc_h(x))
            mu, log_var = enc_mu(h), enc_lv(h)
            z = mu + torch.exp(0.5 * log_var) * eps
            logits = dec_y(torch.tanh(dec_h(z)))
            log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            kl = -0.5 * (1.0 + log_var - mu * mu - torch.exp(log_var)).sum(1)
            loss = -(log_px - kl).mean()
            loss.backward()
            opt.step()

    run.opt_kind = opt_kind
    return run


def jax_contender(dtype, batches):
    """The same model and step in JAX: value_and_grad and Adagrad in one jax.jit, buffers donated."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)           # float64 arrays stay float64; float32 ones float32
    init = VAE(D, H, J, dtype="float64", random_state=0).params
    params = {k: jnp.asarray(v.astype(dtype)) for k, v in init.items()}
    accum = {k: jnp.zeros_like(v) for k, v in params.items()}
    lr, decay, tiny = (np.dtype(dtype).type(v) for v in (LR, 1.0 / N_DATA, 1e-10))

    def loss_fn(p, x, eps):
        h = jnp.tanh(x @ p["enc.h.0.W"] + p["enc.h.0.b"])
        mu = h @ p["enc.mu.W"] + p["enc.mu.b"]
        log_var = h @ p["enc.log_var.W"] + p["enc.log_var.b"]
        z = mu + jnp.exp(0.5 * log_var) * eps
        logits = jnp.tanh(z @ p["dec.h.0.W"] + p["dec.h.0.b"]) @ p["dec.logits.W"] + p["dec.logits.b"]
        log_px = jnp.sum(x * logits - jax.nn.softplus(logits), axis=1)
        kl = -0.5 * jnp.sum(1.0 + log_var - mu * mu - jnp.exp(log_var), axis=1)
        return -jnp.mean(log_px - kl)

    def step(p, G, x, eps):
        loss, g = jax.value_and_grad(loss_fn)(p, x, eps)
        g = {k: g[k] + decay * p[k] for k in p}                      # the N(0, I) prior as weight decay 1/N
        G = {k: G[k] + g[k] * g[k] for k in p}
        p = {k: p[k] - lr * g[k] / (jnp.sqrt(G[k]) + tiny) for k in p}
        return p, G, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    data = [jnp.asarray(b.astype(dtype)) for b in batches]
    rng = np.random.default_rng(1)
    state = {"i": 0, "p": params, "G": accum}

    def run(k):
        loss = None
        for _ in range(k):
            x = data[state["i"] % len(data)]
            state["i"] += 1
            eps = rng.standard_normal((M, J), dtype=dtype)            # drawn as minivae draws it
            state["p"], state["G"], loss = step(state["p"], state["G"], x, eps)
        if loss is not None:
            loss.block_until_ready()                                # JAX dispatches asynchronously

    run.version = jax.__version__
    return run


# --- timing -----------------------------------------------------------------------------------

def time_interleaved(contenders, repeat, steps, warmup=5, clock=time.perf_counter, settle=0.3):
    """Per-step seconds: {name: [one value per repetition]}, contenders taking turns.

    ``settle``: before each turn, a pause of that many seconds, then 10 untimed steps. The
    threads a contender leaves behind wait for work by spinning for a while (OpenBLAS's
    for about 0.1 s): without the pause, the next contender's turn shares the cores with them.
    After a pause, the two-thread step's first 5 or so steps are slow (measured: 10 ms instead
    of 6-7 in float32, as if its two threads shared a core until the scheduler moved one);
    a training run steps back to back, so the untimed steps are what it sees.
    """
    for run in contenders.values():
        run(warmup)
    names = list(contenders)
    times = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]   # rotate who goes first
        for name in order:
            if settle > 0:
                time.sleep(settle)
                contenders[name](10)
            t0 = clock()
            contenders[name](steps)
            times[name].append((clock() - t0) / steps)
    return times


LATENCY_CODE = """
import numpy as np
from minivae.model import VAE
from minivae.optim import Adagrad
from minivae.fast import aevb_step
model = VAE(784, 500, 20, dtype="float32", random_state=0)
step = aevb_step(model, Adagrad(0.02), "B", 1, weight_decay=1 / 60000)
rng = np.random.default_rng(0)
x = (rng.random((100, 784)) < 0.13).astype(np.float32)
assert type(step).__name__ == "FastAEVB" and np.isfinite(step(x, None, rng).loss)
"""


def fresh_process_seconds(cache_dir):
    """Wall time of a new interpreter that imports minivae, builds the model and takes one step."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", LATENCY_CODE], env=env, check=True)
    return time.perf_counter() - t0


def latency(cold_runs, warm_runs=5):
    with tempfile.TemporaryDirectory() as warm_dir:
        fresh_process_seconds(warm_dir)                       # fills this cache
        warm = [fresh_process_seconds(warm_dir) for _ in range(warm_runs)]
    cold = []
    for _ in range(cold_runs):
        with tempfile.TemporaryDirectory() as cold_dir:
            cold.append(fresh_process_seconds(cold_dir))
    return statistics.median(warm), statistics.median(cold)


def check_epoch(args):
    """Per-step bounds of one fixed-seed float64 epoch over all of MNIST, both backends."""
    from minivae.data import load_mnist, minibatches

    X, _ = load_mnist("train", data_dir=args.data_dir, download=False)
    bounds, seconds = {}, {}
    for backend, step_class in (("numpy", AEVB), ("numba", FastAEVB)):
        model = VAE(D, H, J, dtype="float64", random_state=0)
        step, rng = step_class(model, Adagrad(LR), "B", L, weight_decay=1.0 / N_DATA), np.random.default_rng(1)
        per_step = []
        t0 = time.perf_counter()
        for x in minibatches(X, M, rng):
            per_step.append(float(step(x, None, rng).elbo.mean()))
        seconds[backend] = time.perf_counter() - t0
        bounds[backend] = np.array(per_step)
    rel = np.abs(bounds["numba"] - bounds["numpy"]) / np.abs(bounds["numpy"])
    return {"steps": len(rel), "max_rel_diff": float(rel.max()), "final_bound": float(bounds["numpy"][-1]),
            "seconds_numpy": seconds["numpy"], "seconds_numba": seconds["numba"]}


def breakdown(batches, steps):
    """Milliseconds per Numba step spent in each kernel, in the matrix products and in the rest
    (the step on one thread, ``two_threads=False``: on two, the timers would overlap)."""
    from minivae.fast import blas as blas_module
    from minivae.fast import forward as forward_module
    from minivae.fast import step as step_module

    out = {}
    for dtype in ("float32", "float64"):
        run = minivae_contender(True, dtype, batches, two_threads=False)   # timers on one thread only add up
        run(5)
        spent = {}

        def timed(name, f):
            def wrapper(*a, **k):
                t0 = time.perf_counter()
                r = f(*a, **k)
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
                return r
            return wrapper

        names = [n for n in ("bias_act", "bias_act_backward", "bernoulli_head", "_reparameterize_kl_rows",
                             "reparameterize_kl_backward", "adagrad_step", "count_bad", "sparse_index",
                             "sparse_matmul", "sparse_matmul_t") if hasattr(kernels, n)]
        fake_k = type(sys)("kernels_timed")
        fake_k.__dict__.update(kernels.__dict__)
        fake_np = type(sys)("numpy_timed")
        fake_np.__dict__.update(np.__dict__)
        fake_np.matmul = timed("matrix products", np.matmul)
        fake_np.copyto = timed("copies", np.copyto)
        for n in names:
            setattr(fake_k, n, timed(n, getattr(kernels, n)))
        with contextlib.ExitStack() as patches:          # where the one-thread step finds kernels and np.matmul
            for module, name, fake in ((step_module, "kernels", fake_k), (step_module, "np", fake_np),
                                       (forward_module, "kernels", fake_k), (blas_module, "np", fake_np)):
                patches.enter_context(mock.patch.object(module, name, fake))
            t0 = time.perf_counter()
            run(steps)
            total = time.perf_counter() - t0
        row = {k: 1e3 * v / steps for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
        row["rest (Python, eps, checks)"] = 1e3 * total / steps - sum(row.values())
        row["total"] = 1e3 * total / steps
        out[dtype] = row
    return out


def step_flops(density=1.0):
    """Floating-point operations of the 11 matrix products of one step (2 m k n each).

    ``density``: the nonzero fraction of x; the two products with x (the first and the
    last) then count only the terms with a nonzero pixel, as the sparse kernels compute them.
    """
    R = L * M
    products = [(M, D, H), (M, H, 2 * J), (R, J, H), (R, H, D),          # forward
                (H, R, D), (R, D, H), (J, R, H), (R, H, J),              # decoder backward
                (H, M, 2 * J), (M, 2 * J, H), (D, M, H)]                 # encoder backward
    flops = [2 * m * k * n for m, k, n in products]
    flops[0] *= density
    flops[-1] *= density
    return sum(flops)


def physical_floor(density, repeat=7):
    """GEMM peak (flop/s) and memory bandwidth (bytes/s) as measured here, per dtype, and the step's floors:
    with every product dense, and with the products with x counting only x's nonzero terms (``density``)."""
    out = {}
    for dtype in ("float32", "float64"):
        n = 1536
        rng = np.random.default_rng(0)
        a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
        c = np.empty((n, n), dtype)
        np.matmul(a, b, out=c)
        t = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            t.append(time.perf_counter() - t0)
        peak = 2 * n ** 3 / min(t)
        size = 8 * 2 ** 20                                             # 8 M elements: far beyond the caches
        u, v = np.ones(size, dtype), np.ones(size, dtype)
        w = np.empty(size, dtype)
        t = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.add(u, v, out=w)                                        # reads 2 arrays, writes 1
            t.append(time.perf_counter() - t0)
        bandwidth = 3 * size * np.dtype(dtype).itemsize / min(t)
        n_params = D * H + H + 2 * (H * J + J) + J * H + H + H * D + D
        adagrad_bytes = 5 * n_params * np.dtype(dtype).itemsize        # read p, g, G; write p, G
        floor = step_flops() / peak + adagrad_bytes / bandwidth
        sparse_floor = step_flops(density) / peak + adagrad_bytes / bandwidth
        out[dtype] = {"gemm_peak_gflops": peak / 1e9, "bandwidth_gb_s": bandwidth / 1e9,
                      "step_gflop": step_flops() / 1e9, "adagrad_mb": adagrad_bytes / 1e6,
                      "floor_ms": 1e3 * floor, "density": density, "sparse_step_gflop": step_flops(density) / 1e9,
                      "sparse_floor_ms": 1e3 * sparse_floor}
    return out


# --- main ---------------------------------------------------------------------------------------

def _quartiles(values):
    if len(values) < 2:
        return [values[0], values[0]]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return [q1, q3]


def main(args):
    import numba

    batches, data_desc = load_batches(args)
    versions = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for name, skip in (("torch", args.no_torch), ("jax", args.no_jax)):
        if skip:
            continue
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            print(f"({name} is not installed: its row is left out; pip install {name} to compare, "
                  "it is never a dependency of minivae)", file=sys.stderr)
    dtypes = ("float32", "float64")
    contenders = {}
    opt_kind = None
    for dt in dtypes:
        if not args.no_numpy:
            contenders[f"numpy/{dt}"] = minivae_contender(False, dt, batches)
        contenders[f"numba/{dt}"] = minivae_contender(True, dt, batches)
        contenders[f"dense/{dt}"] = minivae_contender(True, dt, batches, sparse_input=False, two_threads=False)
        contenders[f"sparse/{dt}"] = minivae_contender(True, dt, batches, sparse_input=True, two_threads=False)
        contenders[f"matmul/{dt}"] = matmul_contender(contenders[f"dense/{dt}"])
        if contenders[f"numba/{dt}"].step.takes_two_threads():
            contenders[f"serial/{dt}"] = serial_contender(dt, batches)
        if "torch" in versions:
            contenders[f"torch/{dt}"] = torch_contender(dt, batches, args.threads)
            opt_kind = contenders[f"torch/{dt}"].opt_kind
        if "jax" in versions:
            contenders[f"jax/{dt}"] = jax_contender(dt, batches)
    load_before = os.getloadavg()
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu needs --threads 1 (with more threads CPU time adds up over them).")
    times = time_interleaved(contenders, args.repeat, args.steps, settle=args.settle,
                             clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}

    def ratios(a, b):  # per-repetition ratios of speeds, b_time / a_time
        return [tb / ta for ta, tb in zip(times[a], times[b])]

    results = {"data": data_desc, "threads": args.threads, "repeat": args.repeat, "steps": args.steps,
               "clock": args.clock,
               "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
               "threading_layer": numba.threading_layer(), "versions": versions, "torch_adagrad": opt_kind,
               "cpu": platform.processor() or platform.machine(), "blas": blas_description()}
    names = ("numpy", "numba", "dense", "sparse", "serial", "matmul", "torch", "jax")
    for dt in dtypes:
        r = {f"{c}_ms": 1e3 * med[f"{c}/{dt}"] for c in names if f"{c}/{dt}" in med}
        r.update({f"{c}_ms_quartiles": [1e3 * q for q in _quartiles(times[f"{c}/{dt}"])]
                  for c in names if f"{c}/{dt}" in med})
        r.update({f"{c}_best_ms": 1e3 * best[f"{c}/{dt}"] for c in names if f"{c}/{dt}" in best})
        r.update({f"{c}_samples_per_s": M / med[f"{c}/{dt}"] for c in names if f"{c}/{dt}" in med})
        for fast in ("numba", "dense"):
            for other in ("numpy", "torch", "jax"):
                if f"{other}/{dt}" in med:
                    rs = ratios(f"{fast}/{dt}", f"{other}/{dt}")
                    r[f"{fast}_over_{other}"] = statistics.median(rs)
                    r[f"{fast}_over_{other}_quartiles"] = _quartiles(rs)
        rs = ratios(f"sparse/{dt}", f"dense/{dt}")
        r["sparse_over_dense"], r["sparse_over_dense_quartiles"] = statistics.median(rs), _quartiles(rs)
        rs = ratios(f"numba/{dt}", f"dense/{dt}")
        r["numba_over_dense"], r["numba_over_dense_quartiles"] = statistics.median(rs), _quartiles(rs)
        r["numba_takes_two_threads"] = contenders[f"numba/{dt}"].step.takes_two_threads()
        if f"serial/{dt}" in med:                       # the pair's speed-up over its own work on one thread
            rs = ratios(f"numba/{dt}", f"serial/{dt}")
            r["numba_over_serial"], r["numba_over_serial_quartiles"] = statistics.median(rs), _quartiles(rs)
            if f"jax/{dt}" in med:                      # fast/JAX if the two halves never waited (medians)
                r["half_serial_over_jax"] = med[f"jax/{dt}"] / (med[f"serial/{dt}"] / 2)
        shares = [1.0 / q for q in ratios(f"matmul/{dt}", f"dense/{dt}")]
        r["matmul_share_of_numba_step"] = statistics.median(shares)
        r["matmul_share_quartiles"] = _quartiles(shares)
        results[dt] = r
    if args.floor:
        results["floor"] = physical_floor(float(np.mean([np.count_nonzero(b) / b.size for b in batches])))
        for dt in dtypes:
            f = results["floor"][dt]
            f["numba_takes_sparse_products"] = contenders[f"numba/{dt}"].step.takes_sparse_products()
            f["numba_fraction_of_floor"] = (f["sparse_floor_ms"] if f["numba_takes_sparse_products"]
                                            else f["floor_ms"]) / results[dt]["numba_ms"]
            f["sparse_fraction_of_floor"] = f["sparse_floor_ms"] / results[dt]["sparse_ms"]
            f["dense_fraction_of_floor"] = f["floor_ms"] / results[dt]["dense_ms"]
    if not args.no_latency:
        warm, cold = latency(args.cold_runs)
        results["first_step_fresh_process_s"] = {"warm_cache": warm, "cold_cache": cold}
    if args.check_epoch:
        results["epoch_check"] = check_epoch(args)
    if args.breakdown:
        results["breakdown_ms"] = breakdown(batches, 10 * args.steps)

    la = results["load_average"]
    print(f"minivae training step: {D}-{H}-{J} tanh, Bernoulli, M={M}, L={L}, estimator B, "
          f"Adagrad lr {LR}, weight decay 1/{N_DATA}")
    print(f"data: {data_desc}; threads: {args.threads} (OpenBLAS, Numba [{results['threading_layer']}], torch, "
          f"XLA); {args.clock} clock; medians (quartiles) of {args.repeat} x {args.steps} steps; load average (1, 5, 15 min) "
          f"{' '.join(f'{v:.2f}' for v in la['before'])} before, {' '.join(f'{v:.2f}' for v in la['after'])} after")
    bl = results["blas"]
    if bl["library"]:
        unset = " and ".join(f"{k}={v}" for k, v in bl["unset"].items())
        print(f"BLAS: {bl['library']} {bl['version']}, {bl['kernels']} kernels (its own choice"
              + (f": {unset} unset for this run)" if unset else ")"))
    print(f"{'':34s}{'float32':>32s}{'float64':>32s}")
    print(f"{'':34s}" + f"{'ms/step':>8s}{'(quartiles)':>14s}{'samples/s':>10s}" * 2)
    rows = [("numpy", "minivae, NumPy path"), ("numba", "minivae, Numba path"),
            ("dense", "  with dense products"), ("sparse", "  with sparse products with x"),
            ("torch", f"PyTorch {versions.get('torch')}, {opt_kind} Adagrad"),
            ("jax", f"JAX {versions.get('jax')}, one jax.jit"), ("matmul", "matrix products only")]
    if results["float32"].get("numba_takes_two_threads"):
        rows[1] = ("numba", "minivae, Numba path (two-thread)")
        rows[2:4] = [("dense", "  one thread + BLAS's, dense"), ("sparse", "  one thread + BLAS's, sparse"),
                     ("serial", "  one thread, BLAS on one")]
    for key, label in rows:
        if f"{key}_ms" not in results["float32"]:
            continue
        cells = ""
        for dt in dtypes:
            ms, (q1, q3) = results[dt][f"{key}_ms"], results[dt][f"{key}_ms_quartiles"]
            cells += f"{ms:8.2f}{f'({q1:.2f}-{q3:.2f})':>14s}{M / ms * 1e3:10.0f}"
        print(f"{label:34s}{cells}")
    two = results["float32"].get("numba_takes_two_threads")   # numba / dense: what the pair earns
    for key, label in [("numba_over_numpy", "Numba / NumPy (speed)"), ("numba_over_torch", "Numba / PyTorch (speed)"),
                       ("numba_over_jax", "Numba / JAX (speed)"),
                       ("numba_over_dense", "two threads / one + BLAS's (speed)" if two else "Numba / dense products"),
                       ("numba_over_serial", "two threads / one (BLAS on one)"),
                       ("sparse_over_dense", "sparse / dense products"),
                       ("dense_over_torch", "dense products / PyTorch"), ("dense_over_jax", "dense products / JAX"),
                       ("matmul_share", "products / dense-product step")]:
        k = key if key != "matmul_share" else "matmul_share_of_numba_step"
        if k in results["float32"]:
            qk = key + "_quartiles"
            print(f"{label:34s}" + "".join(f"{results[dt][k]:8.2f}{'(%.2f-%.2f)' % tuple(results[dt][qk]):>14s}"
                                          + " " * 10 for dt in dtypes))
    if "half_serial_over_jax" in results["float32"]:
        print(f"{'JAX / half the one-thread work':34s}" + "".join(
            f"{results[dt].get('half_serial_over_jax', float('nan')):8.2f}" + " " * 24 for dt in dtypes)
            + "(the fast/JAX ratio with no waits)")
    if "floor" in results:
        for dt in dtypes:
            f = results["floor"][dt]
            print(f"physical floor, {dt}: {f['step_gflop']:.3f} GFLOP at the measured GEMM peak of "
                  f"{f['gemm_peak_gflops']:.0f} GFLOP/s + Adagrad's {f['adagrad_mb']:.1f} MB at "
                  f"{f['bandwidth_gb_s']:.1f} GB/s = {f['floor_ms']:.2f} ms; the dense-product step is at "
                  f"{100 * f['dense_fraction_of_floor']:.0f}% of it. Counting only x's nonzero terms "
                  f"(density {f['density']:.3f}): {f['sparse_step_gflop']:.3f} GFLOP, {f['sparse_floor_ms']:.2f} ms; "
                  f"the sparse-product step is at {100 * f['sparse_fraction_of_floor']:.0f}% of it. The Numba "
                  f"step as it runs here ({'sparse' if f['numba_takes_sparse_products'] else 'dense'} products) "
                  f"is at {100 * f['numba_fraction_of_floor']:.0f}% of its floor")
    if "first_step_fresh_process_s" in results:
        lat = results["first_step_fresh_process_s"]
        print(f"fresh process to end of first step (float32): warm Numba cache {lat['warm_cache']:.2f} s, "
              f"cold cache {lat['cold_cache']:.1f} s")
    if "breakdown_ms" in results:
        b = results["breakdown_ms"]
        print("where a Numba step's time goes (ms per step):")
        for part in b["float64"]:
            print(f"  {part:30s}" + "".join(f"{b[dt].get(part, 0.0):10.3f}" for dt in dtypes))
    if "epoch_check" in results:
        ec = results["epoch_check"]
        print(f"full float64 epoch ({ec['steps']} steps), per-step bounds: max relative difference "
              f"{ec['max_rel_diff']:.1e} (final bound {ec['final_bound']:.2f} nats; "
              f"NumPy {ec['seconds_numpy']:.1f} s, Numba {ec['seconds_numba']:.1f} s)")
    print(json.dumps(results))
    print(f"(minivae from {os.path.dirname(minivae_file)})")


if __name__ == "__main__":
    main(ARGS)
