"""The command line: ``minivae train | evaluate | sample | plot | gradcheck | figure2 | figure3``.

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
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .config import CHOICES, PRESETS, Config, preset
from ..utils import CorruptFileError, atomic_write, check_scalar

# The flags that set one Config field each, with their help: the flag is the field's name
# (--data-dir, -H) and takes the field's type; a field with a list of choices (config.CHOICES)
# gets that list at the end of its help.
_CONFIG_HELP = {
    "dataset": "data set",
    "binarize": "none uses grey levels as Bernoulli means, as the paper; dynamic draws fresh pixels each time",
    "data_dir": "folder holding mnist/, frey/, binarized_mnist/ (else $MINIVAE_DATA, else the cache)",
    "decoder": "p(x|z): bernoulli is Appendix C.1, gaussian C.2",
    "H": "hidden units of encoder and decoder",
    "J": "latent size (the paper's N_z)",
    "activation": "hidden activation",
    "init": "initial weights: paper = N(0, 0.01^2)",
    "dtype": "float32 is the faster",
    "optimizer": "adagrad is the paper's",
    "lr": "learning rate (the paper picks Adagrad's from 0.01, 0.02, 0.1)",
    "M": "minibatch size",
    "L": "samples of z per datapoint",
    "estimator": "SGVB estimator: A generic, B with the analytic KL",
    "algorithm": "training algorithm: aevb is Algorithm 1, the others (mcem: Monte-Carlo EM) the baselines of "
                 "Figures 2 and 3",
    "record": "what the history records: elbo the bound (Figure 2), marginal the Appendix D estimate of log p(x) "
              "(Figure 3; on eval-train-size points)",
    "train_size": "train on the first N training points only (Figure 3: 1000, 50000)",
    "epochs": "training budget in epochs (default 10 if no budget is given)",
    "samples": "training budget in training samples evaluated (instead of --epochs)",
    "seed": "random seed (initial weights, minibatches, noise)",
    "eval_points": "log-spaced points at which the train and test bounds are recorded",
    "eval_train_size": "training points (fixed random subset) the train bound averages over",
}


_BUDGET = ("epochs", "samples")   # the only settings a resumed run may change


def _defaults_text(name):
    d = {**Config().to_dict(), **PRESETS[name]}
    return ", ".join(f"{k}={d[k]}" for k in ("dataset", "decoder", "H", "J", "optimizer", "lr", "M", "L"))


def _add_config_flags(p):
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the paper's set-ups; flags below override it. "
                        + "; ".join(f"{n}: {_defaults_text(n)}" for n in PRESETS) + " (default: mnist)")
    types = {f.name: f.type.split()[0] for f in dataclasses.fields(Config)}      # "int | None" -> "int"
    for field, text in _CONFIG_HELP.items():
        flag = f"-{field}" if len(field) == 1 else "--" + field.replace("_", "-")
        choices = f"; one of: {', '.join(CHOICES[field])}" if field in CHOICES else ""
        p.add_argument(flag, dest=field, type={"int": int, "float": float, "str": str}[types[field]], default=None,
                       help=f"{text}{choices} (default: from the preset, else {getattr(Config(), field)})")
    p.add_argument("--sigmoid-mean", dest="sigmoid_mean", action=argparse.BooleanOptionalAction, default=None,
                   help="Gaussian decoder: squash the mean into (0, 1) as for Frey Face (default: on)")
    p.add_argument("--weight-decay", dest="weight_decay", action=argparse.BooleanOptionalAction, default=None,
                   help="the N(0, I) prior on the parameters, i.e. the paper's weight decay (default: on)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=float, default=None,
                   help="epochs between checkpoints; 0.25 writes four an epoch (default: 1)")


def _explicit_changes(args):
    """The configuration fields given on the command line (not defaults)."""
    changes = {field: getattr(args, field) for field in _CONFIG_HELP if getattr(args, field) is not None}
    for field in ("sigmoid_mean", "weight_decay", "checkpoint_every"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    return changes


def _config_from_args(args):
    changes = _explicit_changes(args)
    if changes.get("epochs") is None and changes.get("samples") is None:
        changes["epochs"] = 10.0
    return preset(args.preset or "mnist", **changes)


def _read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); restore it or start a new run.") from e
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path} is not a text file; restore it or start a new run.") from e


def _resume_config(args, out, stale_pid=None):
    """The configuration a resumed run continues with: the saved one, plus a new budget if given."""
    from ..checkpoint import load_checkpoint
    ckpt = out / "checkpoint.npz"
    if not ckpt.is_file():
        what = "is a directory" if ckpt.is_dir() else "does not exist"
        if stale_pid is not None and not ckpt.exists():
            raise FileNotFoundError(f"--resume: {ckpt} does not exist: the run there was killed (pid {stale_pid}) "
                                    "before its first checkpoint, so there is nothing to resume; run the same "
                                    "command without --resume to start it again.")
        raise FileNotFoundError(f"--resume: {ckpt} {what}, so there is nothing to resume; "
                                "drop --resume to start a new run in another --out.")
    if (out / "config.json").is_file():
        saved = _read_json(out / "config.json", "config")
    else:
        saved = load_checkpoint(ckpt)["config"]
    try:
        old = Config.from_dict(saved)
    except (TypeError, ValueError) as e:
        raise CorruptFileError(f"{out}/config.json does not describe a valid run ({e}).") from e
    changes = _explicit_changes(args)
    if args.preset is not None:
        implied = preset(args.preset, **changes).to_dict()
        changes = {**{k: v for k, v in implied.items() if k not in _BUDGET and k in PRESETS[args.preset]}, **changes}
    diff = [f"{k}={old.to_dict()[k]!r} in the run, {v!r} given" for k, v in changes.items()
            if k not in _BUDGET and old.to_dict()[k] != v]
    if diff:
        raise ValueError(f"--resume: {out} was trained with other settings ({'; '.join(diff)}); only "
                         "--epochs and --samples may change on resume: drop the other flags, or use another --out.")
    budget = {k: changes[k] for k in _BUDGET if k in changes}
    if budget:
        budget = {"epochs": None, "samples": None, **budget}
    return old.replace(**budget)


def _check_sizes(cfg, D):
    """Refuse a model or step that cannot fit in memory, before allocating it."""
    item = 4 if cfg.dtype == "float32" else 8
    H, J, M, L = cfg.H, cfg.J, cfg.M, cfg.L
    n_params = D * H + H * 2 * J + J * H + H * D * (2 if cfg.decoder == "gaussian" else 1)
    per_param = 3 + (2 if cfg.optimizer == "adam" else 1)            # parameter, gradient, optimiser state, copies
    need = item * (n_params * per_param + L * M * (6 * D + 8 * H + 6 * J))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        total = 1 << 40
    if need > 0.8 * total:
        raise ValueError(f"this model needs about {need / 2**30:.1f} GiB (H={H}, J={J}, M={M}, L={L}, D={D}) "
                         f"but the machine has {total / 2**30:.1f} GiB; choose smaller -H, -J, -M or -L.")


def _write_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _write_history(out, history):
    _write_json(out / "history.json", history)
    keys = ["samples", "epoch", "seconds", "train_elbo", "test_elbo", "train_se", "test_se"]
    with atomic_write(out / "history.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for row in zip(*(history[k] for k in keys)):
            w.writerow(row)


def _load_data(cfg, download=True):
    from ..data import DataNotFoundError, load_dataset
    try:
        return load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=download, seed=cfg.seed)
    except DataNotFoundError as e:
        if cfg.dataset.startswith("mnist"):   # no silent fallback: say what works offline
            raise DataNotFoundError(f"{e} To train offline without MNIST, use the generated digits "
                                    "(not MNIST): minivae train --preset digits", e.filename, e.searched,
                                    e.failures) from e
        raise


def _build(cfg, D):
    from ..model import VAE
    from ..optim import make_optimizer
    _check_sizes(cfg, D)
    model = VAE(D=D, H=cfg.H, J=cfg.J, decoder=cfg.decoder, sigmoid_mean=cfg.sigmoid_mean,
                activation=cfg.activation, init=cfg.init, dtype=cfg.dtype, random_state=cfg.seed)
    return model, make_optimizer(cfg.optimizer, cfg.lr)


def _load_run(run_dir):
    """Config, data and trained model of a run directory."""
    from ..checkpoint import load_checkpoint
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a minivae run directory (no config.json); "
                                "give the --out folder of a 'minivae train' run.")
    try:
        cfg = Config.from_dict(_read_json(cfg_path, "config"))
    except TypeError as e:
        raise CorruptFileError(f"{cfg_path} does not describe a valid run ({e}).") from e
    data = _load_data(cfg)
    model, _ = _build(cfg, data.x_train.shape[1])
    load_checkpoint(run_dir / "checkpoint.npz", model)
    return cfg, data, model


def _new_path(path):
    """``path``, or ``name-2.ext``, ``name-3.ext``, ... : the first that does not exist yet."""
    path = Path(path)
    k = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return candidate


def make_figures(out, model, data, history, seed=0, algorithm="aevb"):
    """Write every figure of a run into ``out``; returns the file names written."""
    from . import plots
    from .algorithms import label
    rng = np.random.default_rng([seed, 3])
    shape = data.image_shape
    written = []
    plots.plot_bound(dict(history, label=f"{label(algorithm)}, J={model.J}"), out / "bound.png", title=f"{data.name}: lower bound")
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

EXIT_ERROR, EXIT_DIVERGED = 2, 1
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}   # 128 + the signal's number, as shells report


def _marginal_evaluate(n):
    """fit's ``evaluate=`` hook for ``record = "marginal"``: Appendix D's log p(x) on the first n points."""
    from ..baselines.marginal import dataset_marginal_likelihood

    def evaluate(model, x, rng, estimator=None):
        return dataset_marginal_likelihood(model, x[:n], rng, estimator=estimator)
    return evaluate


def cmd_train(args):
    """``minivae train``: the run directory, the data, the model and its step, then :func:`minivae.train.fit`."""
    from .algorithms import build_step
    from .rundir import fresh_run_dir, run_lock
    from ..train import TrainingDiverged, TrainingInterrupted, fit
    from ..utils import remove_stale_parts
    cfg, out = _resumed_run(args) if args.resume else _new_run(args)
    data, x_train = _training_data(cfg, download=not args.no_download)    # before anything is written
    model, _ = _build(cfg, data.x_train.shape[1])
    step = build_step(cfg, model, len(x_train), fast=not args.readable)
    if args.resume:                               # refuse a damaged or foreign checkpoint before writing anything
        from ..checkpoint import load_checkpoint
        step.load_state_dict(load_checkpoint(out / "checkpoint.npz", model)["step_state"])
    threads = _threads(args, _run_threads(out) if args.resume else None)
    with fresh_run_dir(out), run_lock(out):
        remove_stale_parts(out)                                 # what a killed run left half-written
        files = _RunFiles(out, cfg, threads)
        if not args.resume:
            files.write_config()
        print(f"minivae: {cfg.algorithm}, {model!r} on {data.name} ({len(x_train)} train / {len(data.x_test)} test), "
              f"{cfg.optimizer} lr={cfg.lr}, M={cfg.M}, L={cfg.L}, estimator {cfg.estimator}, {step.code_path} path, "
              f"{threads} -> {out}", flush=True)
        t = time.perf_counter()
        try:
            history = fit(model, step, x_train, data.x_test, M=cfg.M, estimator=cfg.estimator,
                          samples=cfg.samples, epochs=cfg.epochs, binarize=cfg.binarize == "dynamic",
                          seed=cfg.seed, eval_points=cfg.eval_points, eval_train_size=cfg.eval_train_size,
                          progress=not args.no_progress, checkpoint=out / "checkpoint.npz",
                          checkpoint_every=cfg.checkpoint_every, resume=args.resume, config=cfg.to_dict(),
                          on_eval=files.write_history, on_checkpoint=files.write_config,
                          evaluate=_recorded_evaluator(cfg), catch_signals=True)
        except TrainingDiverged as e:
            print(f"minivae: {e}", file=sys.stderr)
            return EXIT_DIVERGED
        except TrainingInterrupted as e:
            print(f"minivae: {e}; continue with: minivae train --resume --out {out}", file=sys.stderr)
            return EXIT_SIGNAL.get(e.signum, 130)
        _write_history(out, history)
    what = "lower bound" if cfg.record == "elbo" else "estimated log p(x)"
    print(f"trained {history['samples'][-1]} samples in {time.perf_counter() - t:.1f} s; "
          f"{what} per datapoint: train {history['train_elbo'][-1]:.2f}, test {history['test_elbo'][-1]:.2f} nats")
    if not args.no_figures:
        names = make_figures(out, model, data, history, cfg.seed, cfg.algorithm)
        print(f"figures: {', '.join(names)} in {out}")
    return 0


def _resumed_run(args):
    """The configuration and folder of the run ``--resume`` continues."""
    from .rundir import check_unlocked
    if not args.out:
        raise ValueError("--resume needs --out, the run directory to continue.")
    out = Path(args.out)
    return _resume_config(args, out, check_unlocked(out)), out    # a live owner: one line naming its pid


def _new_run(args):
    """The configuration of a new run, and its folder: empty, or left by a run killed before its first checkpoint."""
    from .rundir import check_unlocked
    cfg = _config_from_args(args)
    out = Path(args.out or f"runs/{cfg.dataset}-J{cfg.J}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory; choose another --out.")
    stale_pid = check_unlocked(out)
    if out.is_dir() and any((out / name).exists() for name in ("checkpoint.npz", "config.json", "history.json")):
        if stale_pid is None or (out / "checkpoint.npz").exists():
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it "
                                  "or choose another --out.")
        print(f"minivae: the run in {out} was killed (pid {stale_pid}) before its first checkpoint; "
              "starting it again.", flush=True)
    return cfg, out


def _training_data(cfg, download=True):
    """The data set, and its training points (the first ``cfg.train_size`` of them if given)."""
    data = _load_data(cfg, download=download)
    if cfg.train_size is None:
        return data, data.x_train
    if cfg.train_size > len(data.x_train):
        raise ValueError(f"--train-size {cfg.train_size} is larger than the {len(data.x_train)} training points "
                         f"of {data.name}; give at most {len(data.x_train)}.")
    return data, data.x_train[:cfg.train_size]


def _recorded_evaluator(cfg):
    """What the history records: None (the step's own bound) for ``elbo``, Appendix D's log p(x) for ``marginal``."""
    return _marginal_evaluate(cfg.eval_train_size) if cfg.record == "marginal" else None


class _RunFiles:
    """config.json, threads.json and the history of a run directory, written as the run goes."""

    def __init__(self, out, cfg, threads):
        self.out, self.cfg, self.threads, self.written = out, cfg, threads, False

    def write_config(self, *_):
        """Once: at the start of a new run; on resume, once fit has accepted the checkpoint (a failed resume
        rewrites nothing)."""
        if not self.written:
            _write_json(self.out / "config.json", self.cfg.to_dict())
            _write_json(self.out / "threads.json", {"threads": int(self.threads.split()[0])})
            self.written = True

    def write_history(self, history):
        self.write_config()
        _write_history(self.out, history)


def _threads(args, previous=None):
    """Apply the thread count (--threads, else the run's own on resume, else the free cores) and say what it is.

    A resumed run keeps the count it started with: BLAS sums a product's terms in an
    order that can depend on the thread count, so only the same count resumes bit for bit.
    """
    from .threads import configure
    if args.threads is None and previous is not None:
        chosen = configure(previous)
        return f"{previous} thread{'s' if previous > 1 else ''} (as when the run started)"
    chosen = configure(args.threads)
    return f"{chosen['threads']} thread{'s' if chosen['threads'] > 1 else ''} ({chosen['source']})"


def _run_threads(out):
    """The thread count a run started with (``threads.json``), or None."""
    try:
        n = json.loads((Path(out) / "threads.json").read_text())["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def cmd_evaluate(args):
    from ..evaluate import dataset_elbo, log_likelihood
    check_scalar(args.n, "-n", int, min_val=0)
    check_scalar(args.K, "-K", int, min_val=0)
    check_scalar(args.L, "-L", int, min_val=1)
    cfg, data, model = _load_run(args.run)
    x = data.x_test[:args.n] if args.n else data.x_test
    if cfg.binarize == "dynamic":   # evaluate on one fixed binarisation of the test set
        from ..data import binarize_dynamic
        x = binarize_dynamic(x, np.random.default_rng([args.seed, 4]))
    fast = None
    if not args.readable:
        from ..fast import evaluate as fast
    print(f"minivae: evaluating on the {'readable NumPy' if fast is None else 'fast'} path, {_threads(args)}",
          flush=True)
    rng = np.random.default_rng(args.seed)
    elbo_fn = dataset_elbo if fast is None else fast.fast_dataset_elbo
    t = time.perf_counter()
    elbo = elbo_fn(model, x, rng, L=args.L, estimator=cfg.estimator)
    result = {"n_test": len(x), "elbo": elbo, "elbo_L": args.L, "seed": args.seed,
              "path": "readable" if fast is None else "fast"}
    print(f"test lower bound per datapoint (L={args.L}, fresh noise): {elbo:.3f} nats on {len(x)} images")
    if args.K > 0:
        ll_fn = log_likelihood if fast is None else fast.fast_log_likelihood
        ll = ll_fn(model, x, K=args.K, rng=rng, progress=not args.no_progress)
        se = float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1 else float("nan")
        result.update(log_px=float(ll.mean()), log_px_se=se, K=args.K)
        print(f"importance-sampled log p(x) (K={args.K}): {ll.mean():.3f} +- {se:.3f} nats")
    result["seconds"] = time.perf_counter() - t
    path = Path(args.output) if args.output else _new_path(Path(args.run) / "evaluation.json")
    replaced = path.exists()
    _write_json(path, result)
    print(f"wrote {path}" + (" (replacing the file that was there)" if replaced else ""))
    return 0


def cmd_sample(args):
    from . import plots
    check_scalar(args.n, "-n", int, min_val=1)
    cfg, data, model = _load_run(args.run)
    path = Path(args.output) if args.output else _new_path(Path(args.run) / f"samples-seed{args.seed}.png")
    replaced = path.exists()
    plots.plot_samples(model, path, n=args.n, rng=np.random.default_rng(args.seed), image_shape=data.image_shape,
                       sample=args.binary)
    print(f"wrote {path}" + (" (replacing the file that was there)" if replaced else ""))
    return 0


def cmd_plot(args):
    cfg, data, model = _load_run(args.run)
    history = _read_json(Path(args.run) / "history.json", "history")
    names = make_figures(Path(args.run), model, data, history, cfg.seed, cfg.algorithm)
    print(f"figures: {', '.join(names)} in {args.run} (redrawn)")
    return 0


def cmd_gradcheck(args):
    """Finite differences of the readable code (always), and of the fast step with --fast."""
    from ..estimator import log_parameter_prior, log_parameter_prior_grad
    from ..gradcheck import TOLERANCE, check_function, check_model
    from ..model import VAE
    worst = 0.0
    rows = []
    for decoder, sigmoid_mean in (("bernoulli", True), ("gaussian", True), ("gaussian", False)):
        for estimator in ("A", "B"):
            model = VAE(D=args.D, H=args.H, J=args.J, decoder=decoder, sigmoid_mean=sigmoid_mean,
                        init="glorot", random_state=args.seed)
            rng = np.random.default_rng(args.seed + 1)
            x = rng.random((args.M, args.D))
            eps = model.sample_eps(args.M, args.L, rng)
            label = decoder + (" (sigmoid mean)" if decoder == "gaussian" and sigmoid_mean else "")
            rows.append((f"{label:26s} estimator {estimator}  L={args.L}, readable", check_model(model, x, eps, estimator)))
            if args.fast:
                from ..fast.gradcheck import check_fast_model
                rows.append((f"{label:26s} estimator {estimator}  L={args.L}, fast", check_fast_model(model, x, eps, estimator)))
    params = VAE(D=args.D, H=args.H, J=args.J, init="glorot", random_state=args.seed).params
    rows.append(("parameter prior log N(theta; 0, I)",
                 check_function(lambda: log_parameter_prior(params), log_parameter_prior_grad(params), params)))
    for label, errors in rows:
        name, err = max(errors.items(), key=lambda kv: kv[1])
        worst = max(worst, err)
        print(f"{label}: worst relative error {err:.1e} ({name})")
    ok = worst <= TOLERANCE
    print(f"{'OK' if ok else 'FAILED'}: worst {worst:.1e}, tolerance {TOLERANCE:.0e} "
          "(a correct gradient gives about 1e-10 in float64)")
    return 0 if ok else 1


def _sweep_samples(text):
    """--samples of a sweep: an integer number of training samples, '1e6' allowed."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--samples must be a number of training samples, e.g. 1e6; got {text!r}")
    if not (value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"--samples must be a whole number >= 1; got {text!r}")
    return int(value)


def _cmd_figure(args, cells, draw, png):
    from .sweep import SweepInterrupted, cell_status, format_summary, run_cells, summary
    chosen = cells
    if args.only:
        from fnmatch import fnmatch
        chosen = [c for c in cells if any(fnmatch(c.name, pattern) for pattern in args.only)]
        if not chosen:
            raise ValueError(f"--only {' '.join(args.only)} matches no cell; the cells are: "
                             f"{', '.join(c.name for c in cells)}.")
    if args.dask and (args.print_commands or args.jobs is not None):
        raise ValueError("--dask sends the cells to the cluster's workers; --jobs (cells run here) and "
                         "--print-commands (cells run by you) do not go with it: choose one.")
    if args.print_commands:
        for cell in chosen:
            print(cell.command_line())
        return 0
    t = time.perf_counter()
    try:
        if args.dask:
            from importlib.util import find_spec
            if find_spec("distributed") is None:
                raise ValueError("--dask needs the optional package distributed: pip install 'minivae[cluster]'.")
            from .cluster import run_cells_on_dask
            results = run_cells_on_dask(chosen, args.dask)
        else:
            results = run_cells(chosen, jobs=args.jobs)
    except SweepInterrupted as e:
        print(f"minivae: {e}", file=sys.stderr)
        draw(cells, Path(args.out) / png)
        return EXIT_SIGNAL.get(e.signum, 130)
    done = [c for c in cells if cell_status(c) == "finished"]
    draw(cells, Path(args.out) / png)
    print(format_summary(summary(cells)))
    print(f"{len(done)} of {len(cells)} cells finished ({time.perf_counter() - t:.0f} s); "
          f"wrote {Path(args.out) / png}")
    failed = sorted(name for name, rc in results.items() if rc != 0)
    if failed:
        print(f"minivae: {len(failed)} cell(s) failed: {', '.join(failed)}; each one's train.log says why.",
              file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def _shared_paths(args):
    """With --dask the workers read --out and --data-dir: made absolute, they name the same shared folders."""
    if args.dask:
        args.out = os.path.abspath(args.out)
        args.data_dir = args.data_dir and os.path.abspath(args.data_dir)


def cmd_figure2(args):
    from .sweep import draw_figure2, figure2_cells
    _shared_paths(args)
    cells = figure2_cells(args.out, args.samples, datasets=args.datasets, seed=args.seed, data_dir=args.data_dir,
                          eval_points=args.eval_points)
    return _cmd_figure(args, cells, draw_figure2, "figure2.png")


def cmd_figure3(args):
    from .sweep import draw_figure3, figure3_cells
    _shared_paths(args)
    cells = figure3_cells(args.out, args.samples, train_sizes=args.train_sizes, seed=args.seed,
                          data_dir=args.data_dir, eval_points=args.eval_points, eval_size=args.eval_size)
    return _cmd_figure(args, cells, draw_figure3, "figure3.png")


def _add_sweep_flags(f, eval_points):
    f.add_argument("--samples", type=_sweep_samples, required=True,
                   help="training samples evaluated per cell (the paper's x axis runs to 1e8), e.g. 1e6")
    f.add_argument("--out", required=True, help="folder of the cells' run directories and the figure")
    f.add_argument("--jobs", type=int, default=None,
                   help="cells run at once here, each a process with one BLAS thread; None: one per core")
    f.add_argument("--seed", type=int, default=0, help="seed of every cell")
    f.add_argument("--eval-points", type=int, default=eval_points, help="log-spaced points recorded per cell")
    f.add_argument("--data-dir", default=None, help="passed to every cell (else $MINIVAE_DATA, else the cache)")
    f.add_argument("--only", nargs="+", metavar="PATTERN", default=None,
                   help="run only the cells whose name matches one of these patterns (e.g. 'mnist-J20-*'); "
                        "the figure still shows every cell that has a history")
    f.add_argument("--print-commands", action="store_true",
                   help="print the cells' 'minivae train' commands, one a line (for a scheduler), and run nothing; "
                        "the same command without this flag then only draws the figure")
    f.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run the cells on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://10.0.0.5:8786), "
                        "one cell per worker thread, each the same 'minivae train' command; --out and --data-dir "
                        "must be on a file system every worker shares. A cell whose worker dies resumes on another "
                        "from its checkpoint. Ctrl-C cancels the cells not started and stops the running ones with "
                        "a checkpoint: run the same command again to go on. Needs pip install 'minivae[cluster]'")


def build_parser():
    from .sweep import FIGURE2_LATENTS
    p = argparse.ArgumentParser(prog="minivae", description="The Variational Auto-Encoder of Kingma & Welling (AEVB), "
                                "in NumPy with hand-written gradients.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    # Flags train and evaluate share: which code runs, on how many threads, and whether a bar shows progress.
    running = argparse.ArgumentParser(add_help=False)
    running.add_argument("--no-progress", action="store_true", help="no progress bar")
    running.add_argument("--readable", action="store_true",
                         help="run the readable NumPy code even where the fast path could run "
                              "(it steps aside by itself, with a warning, for any edited or unsupported model)")
    running.add_argument("--threads", type=int, default=None,
                         help="threads for the matrix products and kernels (default: the cores not busy with other "
                              "work)")

    t = sub.add_parser("train", help="train a VAE with AEVB (Algorithm 1), or a baseline with --algorithm",
                       description="Train with AEVB; writes config, history, checkpoint and figures into --out.",
                       parents=[running])
    _add_config_flags(t)
    t.add_argument("--out", help="output directory (default: runs/<dataset>-J<J>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data files")
    t.add_argument("--no-figures", action="store_true", help="skip the figures at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test lower bound and importance-sampled log p(x) of a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, parents=[running])
    e.add_argument("run", help="output directory of a 'minivae train' run")
    e.add_argument("-K", type=int, default=5000, help="importance samples per test image (0: bound only)")
    e.add_argument("-n", type=int, default=1000, help="test images to evaluate (0: all)")
    e.add_argument("-L", type=int, default=1, help="samples per image for the lower bound")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise")
    e.add_argument("-o", "--output", help="JSON path (default: <run>/evaluation.json, or evaluation-2.json, ... "
                                          "if that exists)")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="draw z ~ N(0, I) and show the decoder's output",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("run", help="output directory of a 'minivae train' run")
    s.add_argument("-n", type=int, default=100, help="number of samples")
    s.add_argument("--seed", type=int, default=0, help="seed")
    s.add_argument("--binary", action="store_true", help="show samples of x instead of the decoder's mean")
    s.add_argument("-o", "--output", help="PNG path (default: <run>/samples-seed<seed>.png, never the run's "
                                          "own samples.png)")
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
    g.add_argument("--fast", action="store_true", help="also check the fast path's gradient by finite differences")
    g.set_defaults(func=cmd_gradcheck)

    f2 = sub.add_parser("figure2", help="the paper's Figure 2: AEVB vs wake-sleep, every latent size (a sweep)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Train every cell of Figure 2 (MNIST J = 3, 5, 10, 20, 200 with H = 500; "
                                    "Frey Face J = 2, 5, 10, 20 with H = 200; AEVB and wake-sleep) as one "
                                    "'minivae train' run each, skipping finished cells and resuming cut ones, "
                                    "then draw figure2.png into --out.")
    _add_sweep_flags(f2, 20)
    f2.add_argument("--datasets", nargs="+", choices=list(FIGURE2_LATENTS), default=list(FIGURE2_LATENTS),
                    help="which rows of the figure")
    f2.set_defaults(func=cmd_figure2)

    f3 = sub.add_parser("figure3", help="the paper's Figure 3: AEVB vs wake-sleep vs MCEM, log p(x), J = 3 (a sweep)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Train every cell of Figure 3 (J = 3, H = 100, the first 1000 and 50000 MNIST "
                                    "training images; AEVB, wake-sleep, MCEM), recording the Appendix D estimate "
                                    "of log p(x) on --eval-size train and test points, then draw figure3.png.")
    _add_sweep_flags(f3, 10)
    f3.add_argument("--train-sizes", nargs="+", type=int, default=[1000, 50000], help="training-set sizes")
    f3.add_argument("--eval-size", type=int, default=1000,
                    help="train and test points of each log p(x) estimate, as the paper (each point: their mean "
                         "and its standard error)")
    f3.set_defaults(func=cmd_figure3)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .rundir import RunLocked
    try:
        return args.func(args)
    except KeyboardInterrupt:      # before or after training (fit itself stops with a checkpoint)
        print("minivae: interrupted (Ctrl-C) before training started or after it ended; the files written so far "
              "are whole (a run with a checkpoint continues with --resume).", file=sys.stderr)
        return EXIT_SIGNAL[signal.SIGINT]
    except MemoryError:
        print("minivae: error: out of memory; choose a smaller model (-H, -J) or minibatch (-M, -L).",
              file=sys.stderr)
    except OSError as e:
        message = str(e)
        if getattr(e, "filename", None) and str(e.filename) not in message:
            message += f" ({e.filename})"
        print(f"minivae: error: {message}", file=sys.stderr)
    except (ValueError, TypeError, RunLocked) as e:
        print(f"minivae: error: {e}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
