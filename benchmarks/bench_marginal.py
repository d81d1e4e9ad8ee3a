"""How far the Appendix D estimate of log p(x) is from a known answer (a script, not a test).

Two parts, each printing a Markdown table of the estimate minus the answer over datapoints:
its mean (the bias), the standard error of that mean, the sd, the largest errors, and the
time per datapoint.

``linear-gaussian``
    The linear-Gaussian model (:func:`minivae.teaching.linear_gaussian.linear_gaussian`,
    D = 10, noise 0.5), whose log p(x) is exact. For each J, ``--points`` datapoints drawn
    from each of the ``--seeds`` models. One setting is changed at a time from the paper's
    (L = 50 posterior samples, 4 leapfrog steps, 100 burn-in transitions with the step size
    tuned to 90 % acceptance, one chain): L, the number of chains (C independent chains
    per datapoint, their estimates of 1/p(x) averaged), the burn-in, a fixed step size, and
    where the chain starts (one draw from the prior, or the highest of 1000). L = 10 with
    J = 5 fits a diagonal q (5 samples cannot fit a full covariance in 5 dimensions).

``trained``
    Trained models (run directories of ``minivae train``), on the first ``--images``
    training and test images, against two importance-sampled estimates with K = ``--K``:
    with the encoder as proposal (:func:`minivae.evaluate.log_likelihood`; not for MCEM,
    which trains no encoder), and with a proposal built from HMC chains
    (:func:`mixture_importance_log_likelihood`), which needs no encoder. Both are
    unbiased for p(x), so in log space they are too low on average, never too high
    by more than t nats with probability above exp(-t) (Markov's inequality).

``paired``
    Trained runs compared with each other on the same images (Figure 3's cells, say): the
    Appendix D estimate per image for each run, on the first ``--images`` training and test
    images (the images Figure 3 evaluates), then for every run after the first its mean
    minus the first run's, with the standard error of that difference over images. The
    images are the same for every run, so most of their spread (about 45 nats between
    MNIST images) cancels in the difference; the standard error of the difference is shown
    beside the one of two independent means, which is what Figure 3's error bars are.

Usage::

    export MINIVAE_DATA=/work/shared/data OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
    python benchmarks/bench_marginal.py linear-gaussian [--J 2 5] [--seeds 10 11 12] [--points 100]
    python -m minivae train --preset mnist -J 3 -H 100 --epochs 10 --out /tmp/mnist-J3 --no-figures
    python -m minivae train --preset frey --samples 200000 --out /tmp/frey-J2 --no-figures
    python -m minivae train --preset mnist -J 3 -H 100 --algorithm mcem --train-size 1000 --samples 1000000 \\
        --eval-points 2 --eval-train-size 100 --out /tmp/mcem-N1000 --no-figures
    python benchmarks/bench_marginal.py trained /tmp/mnist-J3 /tmp/frey-J2 /tmp/mcem-N1000 [--images 200]
    python benchmarks/bench_marginal.py paired runs/fig3/mnist-N1000-aevb runs/fig3/mnist-N1000-mcem [--images 1000]

How long: on one thread of an AMD EPYC (Zen 4) shared with two busy processes, the
linear-Gaussian part takes about a minute; the trained part about 3 minutes per model
and 200 + 200 images, most of it in the two importance-sampled references. The three
training runs above take about 20 s, 20 s and 12 minutes (MCEM runs the readable code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy.special import logsumexp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's minivae

from minivae.baselines.hmc import hmc_sample, log_joint
from minivae.baselines.marginal import appendix_d_log_likelihood, chain_starts, fit_gaussian, log_gaussian
from minivae.estimator import log_standard_normal
from minivae.evaluate import log_likelihood, logmeanexp
from minivae.teaching.linear_gaussian import linear_gaussian

#: The paper's settings (Appendix D): L = 50, 4 leapfrog steps, 100 burn-in transitions, adaptive step size.
PAPER = dict(L=50, n_leapfrog=4, burn_in=100)

#: Part (a)'s rows: (label, changes from PAPER; "chains" and "start" are this script's, the rest
#: go to appendix_d_log_likelihood). "start": "prior" is one prior draw per datapoint (the start
#: before this benchmark), an int n the highest of n prior draws (chain_starts; 1000 is the default now).
SETTINGS = [
    ("paper, start: one prior draw", dict(start="prior")),
    ("paper, start: highest of 1000 prior draws", dict()),
    ("L = 10", dict(L=10)),
    ("L = 200", dict(L=200)),
    ("4 chains", dict(chains=4)),
    ("burn-in 20", dict(burn_in=20)),
    ("burn-in 500", dict(burn_in=500)),
    ("fixed step 0.05", dict(step_size=0.05, adapt=False)),
    ("fixed step 0.5", dict(step_size=0.5, adapt=False)),
]


def appendix_d(model, x, rng, chains=1, start=1000, **kwargs):
    """Appendix D's estimate (M,) from ``chains`` independent chains per datapoint, each started at
    ``start`` ("prior": one prior draw; n: the highest of n), their estimates of 1/p(x) averaged."""
    kwargs = {**PAPER, **kwargs}
    if kwargs["L"] // 2 <= model.J:
        kwargs["density"] = "diagonal"        # too few samples for a full covariance
    runs = []
    for _ in range(chains):
        z0 = (rng.standard_normal((len(x), model.J), dtype=model.dtype) if start == "prior"
              else chain_starts(model, x, rng, start))
        runs.append(appendix_d_log_likelihood(model, x, rng, z0=z0, **kwargs)[0])
    return -logmeanexp(-np.stack(runs), axis=0)                     # (M,)


def mixture_importance_log_likelihood(model, x, rng, K=5000, chains=8, n=50, inflate=2.0, prior_weight=0.05,
                                      chunk=500):
    """Importance-sampled log p(x) per datapoint with a proposal built from HMC chains, for a decoder alone.

    The proposal is a defensive mixture (Hesterberg, 1995): with weight 1 - prior_weight, a
    Gaussian per chain fitted to its n states (covariance times ``inflate``, so its tails are
    wider than the posterior's, as importance sampling needs); with weight prior_weight, the
    prior N(0, I), so that no weight exceeds p(x|z) / prior_weight. One chain starts at
    :func:`chain_starts`, the others at prior draws, so the proposal has a component in every
    mode any of them found. The estimate is unbiased for p(x) whatever the chains did; how
    well they did decides only its variance.

    Returns
    -------
    ndarray (M,), nats.
    """
    M, J = len(x), model.J
    fits = []
    for c in range(chains):
        z0 = chain_starts(model, x, rng) if c == 0 else rng.standard_normal((M, J), dtype=model.dtype)
        z = hmc_sample(model, x, z0, n, 4, rng, burn_in=200)                      # (n, M, J)
        mean, cov = fit_gaussian(z.astype(np.float64))
        fits.append((mean, inflate * cov + 1e-10 * np.eye(J)))
    chols = [np.linalg.cholesky(cov) for _, cov in fits]                          # (M, J, J) each
    weights = np.array([(1.0 - prior_weight) / chains] * chains + [prior_weight])

    def log_q(z):                                                                 # (k, M, J) -> (k, M)
        parts = [log_gaussian(z, mean, cov) for mean, cov in fits] + [log_standard_normal(z)]
        return logsumexp(np.stack(parts) + np.log(weights)[:, None, None], axis=0)

    total = np.full(M, -np.inf)
    for k0 in range(0, K, chunk):
        k = min(chunk, K - k0)
        component = rng.choice(chains + 1, size=(k, M), p=weights)               # (k, M)
        e = rng.standard_normal((k, M, J))
        z = e.copy()                                                              # the prior's draws
        for c, ((mean, _), chol) in enumerate(zip(fits, chols)):
            z = np.where((component == c)[..., None], mean + np.einsum("mij,kmj->kmi", chol, e), z)
        log_w = log_joint(model, x, z.astype(model.dtype)) - log_q(z)            # (k, M)
        total = np.logaddexp(total, logmeanexp(log_w, axis=0) + np.log(k))
    return total - np.log(K)


def summary(err, seconds, n_per_time):
    err = np.asarray(err)
    return dict(n=len(err), bias=float(err.mean()), se=float(err.std(ddof=1) / np.sqrt(len(err))),
                sd=float(err.std(ddof=1)), min=float(err.min()), max=float(err.max()),
                ms=1000.0 * seconds / n_per_time)


def row(cells):
    return "| " + " | ".join(cells) + " |"


def linear_gaussian_part(args):
    print("Appendix D estimate minus the exact log p(x), linear-Gaussian model (D = 10, noise 0.5), "
          f"{args.points} datapoints from each of the models with seeds {args.seeds}:\n")
    print(row(["J", "setting", "n", "bias (nats)", "se of bias", "sd", "min", "max", "ms / datapoint"]))
    print(row(["---"] * 9))
    results = []
    for J in args.J:
        for label, change in SETTINGS:
            errors, seconds = [], 0.0
            try:
                for seed in args.seeds:
                    lg = linear_gaussian(D=10, J=J, scales=(1.5, 0.7, 1.0, 2.0, 0.5)[:max(J, 2)], seed=seed)
                    x = lg.sample(args.points, rng=seed)
                    rng = np.random.default_rng([seed, 1])
                    t = time.perf_counter()
                    est = appendix_d(lg.model, x, rng, **change)
                    seconds += time.perf_counter() - t
                    errors.append(est - lg.log_px(x))
            except ValueError as e:                  # e.g. a step size so large that a chain never moves
                results.append(dict(J=J, setting=label, error=str(e)))
                print(row([str(J), label, "", f"no estimate: {str(e).split(',')[0]}", "", "", "", "", ""]), flush=True)
                continue
            s = summary(np.concatenate(errors), seconds, len(args.seeds) * args.points)
            results.append(dict(J=J, setting=label, **s))
            print(row([str(J), label, str(s["n"]), f"{s['bias']:+.3f}", f"{s['se']:.3f}", f"{s['sd']:.3f}",
                       f"{s['min']:+.2f}", f"{s['max']:+.2f}", f"{s['ms']:.1f}"]), flush=True)
    return results


def load_run(run, images):
    """A run directory's config and trained model (as `minivae evaluate` reads them), and its first
    ``images`` training images (of the run's training set) and test images: [("train", x), ("test", x)]."""
    from minivae.run.cli import _load_run
    cfg, data, model = _load_run(run)
    x_train = data.x_train[:cfg.train_size] if cfg.train_size else data.x_train
    return cfg, model, [("train", x_train[:images]), ("test", data.x_test[:images])]


def trained_part(args):
    print(f"Appendix D estimate minus importance-sampled log p(x) (K = {args.K}), the first {args.images} "
          "training and test images of each run:\n")
    print(row(["run", "images", "estimate", "start", "mean (nats)", "minus IS, encoder: bias ± se (sd; min, max)",
               "minus IS, HMC mixture: bias ± se (sd; min, max)", "ms / image"]))
    print(row(["---"] * 8))
    results = []
    for run in args.runs:
        cfg, model, sets = load_run(run, args.images)
        for which, x in sets:
            rng = np.random.default_rng(args.seed)
            refs, ms = {}, {}
            if cfg.algorithm != "mcem":                # MCEM trains no encoder
                t = time.perf_counter()
                refs["encoder"] = log_likelihood(model, x, K=args.K, rng=rng)
                ms["encoder"] = 1000 * (time.perf_counter() - t) / len(x)
            t = time.perf_counter()
            refs["mixture"] = mixture_importance_log_likelihood(model, x, rng, K=args.K)
            ms["mixture"] = 1000 * (time.perf_counter() - t) / len(x)
            name = f"{run} ({cfg.algorithm}, J = {model.J})"
            for ref, values in refs.items():
                print(row([name, f"{len(x)} {which}", f"IS, {ref}", "", f"{values.mean():.2f}", "", "",
                           f"{ms[ref]:.0f}"]))
            for start in args.starts:
                start = start if start == "prior" else int(start)
                t = time.perf_counter()
                est = appendix_d(model, x, rng, start=start)
                seconds = time.perf_counter() - t
                cells = []
                r = dict(run=run, algorithm=cfg.algorithm, J=model.J, set=which, start=start, mean=float(est.mean()))
                for ref in ("encoder", "mixture"):
                    if ref not in refs:
                        cells.append("(no encoder)")
                        continue
                    s = summary(est - refs[ref], seconds, len(x))
                    r[ref] = s
                    cells.append(f"{s['bias']:+.3f} ± {s['se']:.3f} ({s['sd']:.2f}; {s['min']:+.1f}, {s['max']:+.1f})")
                print(row([name, f"{len(x)} {which}", "Appendix D", "one prior draw" if start == "prior"
                           else f"highest of {start}", f"{est.mean():.2f}", *cells, f"{1000 * seconds / len(x):.0f}"]),
                      flush=True)
                results.append(r)
    return results


def paired_part(args):
    per_image = {}                                   # (run, set) -> (M,) estimates
    for run in args.runs:
        _, model, sets = load_run(run, args.images)
        for which, x in sets:
            t = time.perf_counter()
            per_image[run, which] = appendix_d(model, x, np.random.default_rng(args.seed))
            print(f"{run}: {which} {per_image[run, which].mean():.2f} ({len(x)} images, "
                  f"{time.perf_counter() - t:.0f} s)", flush=True)
    first = args.runs[0]
    print(f"\nAppendix D estimate of each run minus {first}'s, on the same images:\n")
    print(row(["run", "images", "mean (nats)", "minus the first: mean ± se of the paired difference",
               "sd of the difference", "se of two independent means", "images where it is higher"]))
    print(row(["---"] * 7))
    results = []
    for run in args.runs[1:]:
        for which in ("train", "test"):
            a, b = per_image[run, which], per_image[first, which]
            d = a - b
            se = float(d.std(ddof=1) / np.sqrt(len(d)))
            unpaired = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
            print(row([run, f"{len(d)} {which}", f"{a.mean():.2f}", f"{d.mean():+.2f} ± {se:.2f}",
                       f"{d.std(ddof=1):.2f}", f"{unpaired:.2f}", f"{np.mean(d > 0):.1%}"]))
            results.append(dict(run=run, first=first, set=which, n=len(d), mean=float(a.mean()),
                                first_mean=float(b.mean()), difference=float(d.mean()), se=se,
                                sd=float(d.std(ddof=1)), unpaired_se=unpaired, higher=float(np.mean(d > 0))))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    a = sub.add_parser("linear-gaussian", help="against the exact log p(x) of the linear-Gaussian model")
    a.add_argument("--J", type=int, nargs="+", default=[2, 5], help="latent sizes (default 2 5)")
    a.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12], help="model seeds (default 10 11 12)")
    a.add_argument("--points", type=int, default=100, help="datapoints per model (default 100)")
    b = sub.add_parser("trained", help="against importance sampling on trained models")
    b.add_argument("runs", nargs="+", help="run directories of `minivae train`")
    b.add_argument("--images", type=int, default=200, help="training and test images each (default 200)")
    b.add_argument("--K", type=int, default=5000, help="importance samples (default 5000)")
    b.add_argument("--starts", nargs="+", default=["prior", "100", "1000"],
                   help="chain starts: prior (one draw) or n (the highest of n draws); default prior 100 1000")
    b.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("paired", help="trained runs against the first of them, on the same images")
    c.add_argument("runs", nargs="+", help="run directories of `minivae train` (at least two)")
    c.add_argument("--images", type=int, default=1000, help="training and test images each (default 1000)")
    c.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.part == "paired" and len(args.runs) < 2:
        parser.error("paired compares runs with the first of them: give at least two run directories.")
    t = time.perf_counter()
    parts = dict(zip(("linear-gaussian", "trained", "paired"), (linear_gaussian_part, trained_part, paired_part)))
    results = parts[args.part](args)
    print(f"\n{time.perf_counter() - t:.0f} s")
    print(json.dumps({"benchmark": f"marginal-{args.part}", "seconds": round(time.perf_counter() - t, 1),
                      "results": results}))


if __name__ == "__main__":
    main()
