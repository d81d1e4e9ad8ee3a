"""Training-step throughput of the paper's MNIST model: NumPy path, Numba path, PyTorch.

The model and step of Kingma & Welling's MNIST experiment: 784-500-20, tanh,
Bernoulli decoder, M = 100, L = 1, estimator B, Adagrad with lr 0.02, weight
decay as the N(0, I) parameter prior (1/N with N = 60000). One step is what
``minivae.train`` does: draw eps, ``loss_and_grads``, ``optimizer.step``.

Prints a table, then one JSON line with every number:

1. samples/s of the NumPy path and the Numba path of minivae, and of the same
   model in PyTorch (autograd, ``torch.optim.Adagrad``, its CPU ``fused``
   update when available) if torch is installed, in float32 and float64. All
   start from the same initial weights and see the same minibatches (real MNIST
   grey levels, or random binary images of the same shape with
   ``--random-data`` or when MNIST is not found). Contenders are interleaved:
   each repetition times ``--steps`` steps of each in turn (in a rotating
   order), after a warm-up; the table shows medians over ``--repeat``
   repetitions, and ratios are taken pair by pair within each repetition.
2. The step's matrix products alone: the same 11 ``np.matmul`` calls into the
   same buffers as the Numba step (the floor no NumPy program can pass), and
   the fraction of a Numba step they take (median and quartiles of the
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

    python benchmarks/bench_train.py [--threads 2] [--repeat 15] [--steps 30] [--data-dir DIR]
                                     [--random-data] [--no-torch] [--no-latency] [--check-epoch] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

D, H, J, M, L, LR, N_DATA = 784, 500, 20, 100, 1, 0.02, 60000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for OpenBLAS, Numba and torch (default: usable cores)")
    parser.add_argument("--repeat", type=int, default=15, help="timed repetitions per contender")
    parser.add_argument("--steps", type=int, default=30, help="training steps per repetition")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $MINIVAE_DATA, cache)")
    parser.add_argument("--random-data", action="store_true", help="random binary images instead of MNIST")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-latency", action="store_true", help="skip the fresh-process measurements")
    parser.add_argument("--cold-runs", type=int, default=1, help="fresh processes with an empty Numba cache")
    parser.add_argument("--check-epoch", action="store_true",
                        help="also compare a full float64 MNIST epoch between the backends")
    parser.add_argument("--breakdown", action="store_true", help="also time each part of a Numba step")
    return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread counts must be set before numpy, numba or torch start their pools
    for var in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

from minivae import kernels  # noqa: E402
from minivae.backend import use_backend  # noqa: E402
from minivae.model import VAE  # noqa: E402
from minivae.optim import Adagrad  # noqa: E402


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

def minivae_contender(backend, dtype, batches):
    model = VAE(D, H, J, decoder="bernoulli", activation="tanh", init="paper", dtype=dtype, random_state=0)
    opt = Adagrad(LR)
    rng = np.random.default_rng(1)
    data = [b.astype(dtype) for b in batches]
    state = {"i": 0}

    def run(k):
        with use_backend(backend):
            for _ in range(k):
                x = data[state["i"] % len(data)]
                state["i"] += 1
                eps = model.sample_eps(M, L, rng)
                model.loss_and_grads(x, eps, "B")
                opt.step(model.params, model.grads, weight_decay=1.0 / N_DATA)

    run.model, run.data = model, data
    return run


def matmul_contender(numba_run):
    """The 11 products of a Numba step of this model, same shapes, same buffers, nothing else."""
    model, data = numba_run.model, numba_run.data
    numba_run(1)                                            # make sure the buffers exist
    ws = model._numba_workspaces[(M, L)]                    # the Numba step's own buffers
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


# --- timing -----------------------------------------------------------------------------------

def time_interleaved(contenders, repeat, steps, warmup=5):
    """Per-step seconds: {name: [one value per repetition]}, contenders taking turns."""
    for run in contenders.values():
        run(warmup)
    names = list(contenders)
    times = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]   # rotate who goes first
        for name in order:
            t0 = time.perf_counter()
            contenders[name](steps)
            times[name].append((time.perf_counter() - t0) / steps)
    return times


LATENCY_CODE = """
import numpy as np
from minivae.model import VAE
from minivae.optim import Adagrad
model = VAE(784, 500, 20, dtype="float32", random_state=0)
opt = Adagrad(0.02)
rng = np.random.default_rng(0)
x = (rng.random((100, 784)) < 0.13).astype(np.float32)
loss, elbo = model.loss_and_grads(x, model.sample_eps(100, 1, rng), "B")
opt.step(model.params, model.grads, weight_decay=1 / 60000)
assert np.isfinite(loss)
"""


def fresh_process_seconds(cache_dir):
    """Wall time of a new interpreter that imports minivae, builds the model and takes one step."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, MINIVAE_BACKEND="numba")
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
    for backend in ("numpy", "numba"):
        model = VAE(D, H, J, dtype="float64", random_state=0)
        opt, rng = Adagrad(LR), np.random.default_rng(1)
        per_step = []
        t0 = time.perf_counter()
        with use_backend(backend):
            for x in minibatches(X, M, rng):
                loss, elbo = model.loss_and_grads(x, model.sample_eps(M, L, rng), "B")
                opt.step(model.params, model.grads, weight_decay=1.0 / N_DATA)
                per_step.append(float(elbo.mean()))
        seconds[backend] = time.perf_counter() - t0
        bounds[backend] = np.array(per_step)
    rel = np.abs(bounds["numba"] - bounds["numpy"]) / np.abs(bounds["numpy"])
    return {"steps": len(rel), "max_rel_diff": float(rel.max()), "final_bound": float(bounds["numpy"][-1]),
            "seconds_numpy": seconds["numpy"], "seconds_numba": seconds["numba"]}


def breakdown(batches, steps):
    """Milliseconds per Numba step spent in each kernel, in the matrix products and in the rest."""
    from minivae import model as model_module

    out = {}
    for dtype in ("float32", "float64"):
        run = minivae_contender("numba", dtype, batches)
        run(5)
        spent = {}

        def timed(name, f):
            def wrapper(*a, **k):
                t0 = time.perf_counter()
                r = f(*a, **k)
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
                return r
            return wrapper

        names = ["bias_act", "bias_act_backward", "bernoulli_head", "reparameterize_kl",
                 "reparameterize_kl_backward", "adagrad_step", "count_bad"]
        saved = {n: getattr(kernels, n) for n in names}
        saved_np = model_module.np
        fake_np = type(sys)("numpy_timed")
        fake_np.__dict__.update(np.__dict__)
        fake_np.matmul = timed("matrix products", np.matmul)
        fake_np.copyto = timed("copies", np.copyto)
        try:
            for n in names:
                setattr(kernels, n, timed(n, saved[n]))
            model_module.np = fake_np
            t0 = time.perf_counter()
            run(steps)
            total = time.perf_counter() - t0
        finally:
            for n in names:
                setattr(kernels, n, saved[n])
            model_module.np = saved_np
        row = {k: 1e3 * v / steps for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
        row["rest (Python, eps, checks)"] = 1e3 * total / steps - sum(row.values())
        row["total"] = 1e3 * total / steps
        out[dtype] = row
    return out


# --- main ---------------------------------------------------------------------------------------

def main(args):
    import numba

    batches, data_desc = load_batches(args)
    torch_version = None
    if not args.no_torch:
        try:
            import torch
            torch_version = torch.__version__
        except ImportError:
            pass
    dtypes = ("float32", "float64")
    contenders = {}
    opt_kind = None
    for dt in dtypes:
        contenders[f"numpy/{dt}"] = minivae_contender("numpy", dt, batches)
        contenders[f"numba/{dt}"] = minivae_contender("numba", dt, batches)
        contenders[f"matmul/{dt}"] = matmul_contender(contenders[f"numba/{dt}"])
        if torch_version:
            contenders[f"torch/{dt}"] = torch_contender(dt, batches, args.threads)
            opt_kind = contenders[f"torch/{dt}"].opt_kind
    load_before = os.getloadavg()[0]
    times = time_interleaved(contenders, args.repeat, args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}

    def ratios(a, b):  # per-repetition ratios of speeds, b_time / a_time
        return [tb / ta for ta, tb in zip(times[a], times[b])]

    def ratio(a, b):  # their median
        return statistics.median(ratios(a, b))

    results = {"data": data_desc, "threads": args.threads, "repeat": args.repeat, "steps": args.steps,
               "load_average_1min": [load_before, os.getloadavg()[0]],
               "threading_layer": numba.threading_layer(), "versions": {
                   "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                   "torch": torch_version}, "torch_adagrad": opt_kind, "cpu": platform.processor() or platform.machine()}
    for dt in dtypes:
        r = {f"{c}_ms": 1e3 * med[f"{c}/{dt}"] for c in ("numpy", "numba", "matmul", "torch") if f"{c}/{dt}" in med}
        r.update({f"{c}_best_ms": 1e3 * best[f"{c}/{dt}"] for c in ("numpy", "numba", "matmul", "torch")
                  if f"{c}/{dt}" in best})
        r.update({f"{c}_samples_per_s": M / med[f"{c}/{dt}"] for c in ("numpy", "numba", "torch")
                  if f"{c}/{dt}" in med})
        r["numba_over_numpy"] = ratio(f"numba/{dt}", f"numpy/{dt}")
        if torch_version:
            r["numba_over_torch"] = ratio(f"numba/{dt}", f"torch/{dt}")
        shares = [1.0 / q for q in ratios(f"matmul/{dt}", f"numba/{dt}")]
        r["matmul_share_of_numba_step"] = statistics.median(shares)
        if len(shares) >= 2:
            q1, _, q3 = statistics.quantiles(shares, n=4)
            r["matmul_share_quartiles"] = [q1, q3]
        results[dt] = r
    if not args.no_latency:
        warm, cold = latency(args.cold_runs)
        results["first_step_fresh_process_s"] = {"warm_cache": warm, "cold_cache": cold}
    if args.check_epoch:
        results["epoch_check"] = check_epoch(args)
    if args.breakdown:
        results["breakdown_ms"] = breakdown(batches, 10 * args.steps)

    print(f"minivae training step: {D}-{H}-{J} tanh, Bernoulli, M={M}, L={L}, estimator B, "
          f"Adagrad lr {LR}, weight decay 1/{N_DATA}")
    print(f"data: {data_desc}; threads: {args.threads} (OpenBLAS, Numba [{results['threading_layer']}], torch); "
          f"medians (and best) of {args.repeat} x {args.steps} steps; load average "
          f"{load_before:.1f} before, {results['load_average_1min'][1]:.1f} after")
    print(f"{'':28s}{'float32':>30s}{'float64':>30s}")
    print(f"{'':28s}" + f"{'ms/step':>10s}{'(best)':>9s}{'samples/s':>11s}" * 2)
    rows = [("numpy", "minivae, NumPy path"), ("numba", "minivae, Numba path"),
            ("torch", f"PyTorch, {opt_kind} Adagrad" if torch_version else None),
            ("matmul", "matrix products only")]
    for key, label in rows:
        if label is None:
            continue
        cells = ""
        for dt in dtypes:
            ms = results[dt][f"{key}_ms"]
            cells += f"{ms:10.2f}{'(' + format(results[dt][key + '_best_ms'], '.2f') + ')':>9s}{M / ms * 1e3:11.0f}"
        print(f"{label:28s}{cells}")
    for key, label in [("numba_over_numpy", "Numba / NumPy (speed)"), ("numba_over_torch", "Numba / PyTorch (speed)"),
                       ("matmul_share_of_numba_step", "products / Numba step")]:
        if key in results["float32"]:
            print(f"{label:28s}" + "".join(f"{results[dt][key]:30.2f}" for dt in dtypes))
    if "matmul_share_quartiles" in results["float32"]:
        print(f"{'  (quartiles over repetitions)':28s}"
              + "".join(f"{'%.2f-%.2f' % tuple(results[dt]['matmul_share_quartiles']):>30s}" for dt in dtypes))
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


if __name__ == "__main__":
    main(ARGS)
