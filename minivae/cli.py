"""The command line: ``minivae train | evaluate | sample | plot | gradcheck``.

Each run lives in one output directory::

    config.json        the full configuration (reload with Config.from_dict)
    history.json/.csv  lower bound per datapoint (train, test) against samples seen
    checkpoint.npz     model, optimiser, RNG states and loop position (resumable)
    bound.png samples.png reconstructions.png latent.png [manifold.png if J = 2]
    evaluation.json    written by ``minivae evaluate``
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from .config import DATASETS, PRESETS, Config, preset
from .utils import atomic_write

# Flags that map one-to-one onto Config fields: (flag, field, type, help).
_CONFIG_FLAGS = [
    ("--dataset", "dataset", str, f"data set: {', '.join(DATASETS)}"),
    ("--binarize", "binarize", str, "none (grey levels as Bernoulli means, as the paper) or dynamic"),
    ("--data-dir", "data_dir", str, "folder holding mnist/, frey/, binarized_mnist/ (else $MINIVAE_DATA, else the cache)"),
    ("--decoder", "decoder", str, "bernoulli (Appendix C.1) or gaussian (C.2)"),
    ("-H", "H", int, "hidden units of encoder and decoder"),
    ("-J", "J", int, "latent size (the paper's N_z)"),
    ("--activation", "activation", str, "hidden activation: tanh, relu, softplus, sigmoid"),
    ("--init", "init", str, "paper = N(0, 0.01^2), or glorot"),
    ("--dtype", "dtype", str, "float32 (fast) or float64"),
    ("--optimizer", "optimizer", str, "adagrad (the paper's), sgd or adam"),
    ("--lr", "lr", float, "learning rate (the paper picks Adagrad's from 0.01, 0.02, 0.1)"),
    ("-M", "M", int, "minibatch size"),
    ("-L", "L", int, "samples of z per datapoint"),
    ("--estimator", "estimator", str, "SGVB estimator A (generic) or B (analytic KL)"),
    ("--epochs", "epochs", float, "training budget in epochs (default 10 if no budget is given)"),
    ("--samples", "samples", int, "training budget in training samples evaluated (instead of --epochs)"),
    ("--seed", "seed", int, "random seed (initial weights, minibatches, noise)"),
    ("--eval-points", "eval_points", int, "log-spaced points at which the train and test bounds are recorded"),
    ("--eval-train-size", "eval_train_size", int, "training points (fixed random subset) the train bound averages over"),
]


def _defaults_text(name):
    d = {**Config().to_dict(), **PRESETS[name]}
    return ", ".join(f"{k}={d[k]}" for k in ("dataset", "decoder", "H", "J", "optimizer", "lr", "M", "L"))


def _add_config_flags(p):
    p.add_argument("--preset", choices=sorted(PRESETS), default="mnist",
                   help="the paper's set-ups; flags below override it. "
                        + "; ".join(f"{n}: {_defaults_text(n)}" for n in PRESETS) + " (default: mnist)")
    for flag, field, typ, text in _CONFIG_FLAGS:
        default = getattr(Config(), field)
        p.add_argument(flag, dest=field, type=typ, default=None,
                       help=f"{text} (default: from the preset, else {default})")
    p.add_argument("--sigmoid-mean", dest="sigmoid_mean", action=argparse.BooleanOptionalAction, default=None,
                   help="Gaussian decoder: squash the mean into (0, 1) as for Frey Face (default: on)")
    p.add_argument("--weight-decay", dest="weight_decay", action=argparse.BooleanOptionalAction, default=None,
                   help="the N(0, I) prior on the parameters, i.e. the paper's weight decay (default: on)")


def _config_from_args(args):
    changes = {field: getattr(args, field) for _, field, _, _ in _CONFIG_FLAGS if getattr(args, field) is not None}
    for field in ("sigmoid_mean", "weight_decay"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    if changes.get("epochs") is None and changes.get("samples") is None:
        changes["epochs"] = 10.0
    return preset(args.preset, **changes)


def _write_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _write_history(out, history):
    _write_json(out / "history.json", history)
    keys = ["samples", "epoch", "seconds", "train_elbo", "test_elbo"]
    with atomic_write(out / "history.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for row in zip(*(history[k] for k in keys)):
            w.writerow(row)


def _load_data(cfg, download=True):
    from .data import DataNotFoundError, load_dataset
    try:
        return load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=download, seed=cfg.seed)
    except DataNotFoundError as e:
        if cfg.dataset.startswith("mnist"):   # no silent fallback: say what works offline
            raise DataNotFoundError(f"{e} To train offline without MNIST, use the generated digits "
                                    "(not MNIST): minivae train --preset digits", e.filename, e.searched,
                                    e.failures) from e
        raise


def _build(cfg, D):
    from .model import VAE
    from .optim import make_optimizer
    model = VAE(D=D, H=cfg.H, J=cfg.J, decoder=cfg.decoder, sigmoid_mean=cfg.sigmoid_mean,
                activation=cfg.activation, init=cfg.init, dtype=cfg.dtype, random_state=cfg.seed)
    return model, make_optimizer(cfg.optimizer, cfg.lr)


def _load_run(run_dir):
    """Config, data and trained model of a run directory."""
    from .checkpoint import load_checkpoint
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a minivae run directory (no config.json); "
                                "give the --out folder of a 'minivae train' run.")
    cfg = Config.from_dict(json.loads(cfg_path.read_text()))
    data = _load_data(cfg)
    model, _ = _build(cfg, data.x_train.shape[1])
    load_checkpoint(run_dir / "checkpoint.npz", model)
    return cfg, data, model


def make_figures(out, model, data, history, seed=0):
    """Write every figure of a run into ``out``; returns the file names written."""
    from . import plots
    rng = np.random.default_rng([seed, 3])
    shape = data.image_shape
    written = []
    plots.plot_bound(dict(history, label=f"AEVB, J={model.J}"), out / "bound.png", title=f"{data.name}: lower bound")
    written.append("bound.png")
    plots.plot_samples(model, out / "samples.png", n=100, rng=rng, image_shape=shape)
    written.append("samples.png")
    plots.plot_reconstructions(model, data.x_test, out / "reconstructions.png", image_shape=shape, n=10, rng=rng)
    written.append("reconstructions.png")
    plots.plot_latent(model, data.x_test, data.y_test, out / "latent.png", rng=rng)
    written.append("latent.png")
    if model.J == 2:
        plots.plot_manifold(model, out / "manifold.png", image_shape=shape, n=20)
        written.append("manifold.png")
    return written


# --- sub-commands -------------------------------------------------------------------

def cmd_train(args):
    from .train import TrainingDiverged, fit
    cfg = _config_from_args(args)
    out = Path(args.out or f"runs/{cfg.dataset}-J{cfg.J}")
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.npz"
    if args.resume and (out / "config.json").is_file():
        old = Config.from_dict(json.loads((out / "config.json").read_text()))
        budget = ("epochs", "samples", "eval_points")
        diff = [k for k in cfg.to_dict() if k not in budget and cfg.to_dict()[k] != old.to_dict()[k]]
        if diff:
            raise ValueError(f"--resume: {out} was trained with other settings ({', '.join(diff)}); "
                             "use the same flags or another --out.")
    elif ckpt.exists() and not args.resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out.")
    data = _load_data(cfg, download=not args.no_download)
    binarize = cfg.binarize == "dynamic"
    model, opt = _build(cfg, data.x_train.shape[1])
    _write_json(out / "config.json", cfg.to_dict())
    print(f"minivae: {model!r} on {data.name} ({len(data.x_train)} train / {len(data.x_test)} test), "
          f"{cfg.optimizer} lr={cfg.lr}, M={cfg.M}, L={cfg.L}, estimator {cfg.estimator} -> {out}", flush=True)
    t = time.perf_counter()
    try:
        history = fit(model, opt, data.x_train, data.x_test, M=cfg.M, L=cfg.L, estimator=cfg.estimator,
                      samples=cfg.samples, epochs=cfg.epochs, binarize=binarize, weight_decay=cfg.weight_decay,
                      seed=cfg.seed, eval_points=cfg.eval_points, eval_train_size=cfg.eval_train_size,
                      progress=not args.no_progress, checkpoint=ckpt, checkpoint_every=cfg.checkpoint_every,
                      resume=args.resume, config=cfg.to_dict(),
                      on_eval=lambda h: _write_history(out, h))
    except TrainingDiverged as e:
        print(f"minivae: {e}", file=sys.stderr)
        return 1
    _write_history(out, history)
    print(f"trained {history['samples'][-1]} samples in {time.perf_counter() - t:.1f} s; "
          f"lower bound per datapoint: train {history['train_elbo'][-1]:.2f}, test {history['test_elbo'][-1]:.2f} nats")
    if not args.no_figures:
        names = make_figures(out, model, data, history, cfg.seed)
        print(f"figures: {', '.join(names)} in {out}")
    return 0


def cmd_evaluate(args):
    from .evaluate import dataset_elbo, log_likelihood
    cfg, data, model = _load_run(args.run)
    x = data.x_test[:args.n] if args.n else data.x_test
    if cfg.binarize == "dynamic":   # evaluate on one fixed binarisation of the test set
        from .data import binarize_dynamic
        x = binarize_dynamic(x, np.random.default_rng([args.seed, 4]))
    rng = np.random.default_rng(args.seed)
    elbo = dataset_elbo(model, x, rng, L=args.L, estimator=cfg.estimator)
    result = {"n_test": len(x), "elbo": elbo, "elbo_L": args.L, "seed": args.seed}
    print(f"test lower bound per datapoint (L={args.L}, fresh noise): {elbo:.3f} nats on {len(x)} images")
    if args.K > 0:
        t = time.perf_counter()
        ll = log_likelihood(model, x, K=args.K, rng=rng, progress=not args.no_progress)
        se = float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1 else float("nan")
        result.update(log_px=float(ll.mean()), log_px_se=se, K=args.K, seconds=time.perf_counter() - t)
        print(f"importance-sampled log p(x) (K={args.K}): {ll.mean():.3f} +- {se:.3f} nats "
              f"({time.perf_counter() - t:.0f} s)")
    _write_json(Path(args.run) / "evaluation.json", result)
    return 0


def cmd_sample(args):
    from . import plots
    cfg, data, model = _load_run(args.run)
    path = Path(args.output or Path(args.run) / "samples.png")
    plots.plot_samples(model, path, n=args.n, rng=np.random.default_rng(args.seed), image_shape=data.image_shape,
                       sample=args.binary)
    print(f"wrote {path}")
    return 0


def cmd_plot(args):
    cfg, data, model = _load_run(args.run)
    history = json.loads((Path(args.run) / "history.json").read_text())
    names = make_figures(Path(args.run), model, data, history, cfg.seed)
    print(f"figures: {', '.join(names)} in {args.run}")
    return 0


def cmd_gradcheck(args):
    from .gradcheck import TOLERANCE, check_model
    from .model import VAE
    worst = 0.0
    for decoder, sigmoid_mean in (("bernoulli", True), ("gaussian", True), ("gaussian", False)):
        for estimator in ("A", "B"):
            model = VAE(D=args.D, H=args.H, J=args.J, decoder=decoder, sigmoid_mean=sigmoid_mean,
                        init="glorot", random_state=args.seed)
            rng = np.random.default_rng(args.seed + 1)
            x = rng.random((args.M, args.D))
            errors = check_model(model, x, model.sample_eps(args.M, args.L, rng), estimator, n_data=100)
            name, err = max(errors.items(), key=lambda kv: kv[1])
            worst = max(worst, err)
            label = decoder + (" (sigmoid mean)" if decoder == "gaussian" and sigmoid_mean else "")
            print(f"{label:26s} estimator {estimator}  L={args.L}: worst relative error {err:.1e} ({name})")
    ok = worst <= TOLERANCE
    print(f"{'OK' if ok else 'FAILED'}: worst {worst:.1e}, tolerance {TOLERANCE:.0e} "
          "(a correct gradient gives about 1e-10 in float64)")
    return 0 if ok else 1


def build_parser():
    p = argparse.ArgumentParser(prog="minivae", description="The Variational Auto-Encoder of Kingma & Welling (AEVB), "
                                "in NumPy with hand-written gradients.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE with AEVB (Algorithm 1)",
                       description="Train with AEVB; writes config, history, checkpoint and figures into --out.")
    _add_config_flags(t)
    t.add_argument("--out", help="output directory (default: runs/<dataset>-J<J>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data files")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-figures", action="store_true", help="skip the figures at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test lower bound and importance-sampled log p(x) of a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("run", help="output directory of a 'minivae train' run")
    e.add_argument("-K", type=int, default=5000, help="importance samples per test image (0: bound only)")
    e.add_argument("-n", type=int, default=1000, help="test images to evaluate (0: all)")
    e.add_argument("-L", type=int, default=1, help="samples per image for the lower bound")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="draw z ~ N(0, I) and show the decoder's output",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("run", help="output directory of a 'minivae train' run")
    s.add_argument("-n", type=int, default=100, help="number of samples")
    s.add_argument("--seed", type=int, default=0, help="seed")
    s.add_argument("--binary", action="store_true", help="show samples of x instead of the decoder's mean")
    s.add_argument("-o", "--output", help="PNG path (default: <run>/samples.png)")
    s.set_defaults(func=cmd_sample)

    pl = sub.add_parser("plot", help="(re)draw every figure of a run from its checkpoint and history")
    pl.add_argument("run", help="output directory of a 'minivae train' run")
    pl.set_defaults(func=cmd_plot)

    g = sub.add_parser("gradcheck", help="check every hand-written gradient by finite differences (float64)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("-D", type=int, default=6, help="data size of the small model")
    g.add_argument("-H", type=int, default=5, help="hidden units")
    g.add_argument("-J", type=int, default=3, help="latent size")
    g.add_argument("-M", type=int, default=4, help="minibatch size")
    g.add_argument("-L", type=int, default=3, help="samples per datapoint")
    g.add_argument("--seed", type=int, default=0, help="seed")
    g.set_defaults(func=cmd_gradcheck)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as e:
        print(f"minivae: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
