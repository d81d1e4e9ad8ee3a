"""The paper's comparisons as sweeps: every cell of Figure 2 or 3 is one ordinary ``minivae train`` run.

A sweep is a list of independent commands, each writing its own run
directory under ``--out``::

    runs/fig2/mnist-J3-aevb/        config.json, history.json, checkpoint.npz, train.log
    runs/fig2/mnist-J3-wake-sleep/
    ...
    runs/fig2/figure2.png           drawn from whatever cells have a history

:func:`run_cells` is the local runner: worker processes (``subprocess``, one
per core by default), each with one BLAS/OpenMP/Numba thread, so ``--jobs 2``
on two cores runs two cells side by side without oversubscribing them. It
skips cells that are finished (their history reaches the budget), resumes cells
cut short (a checkpoint exists: ``--resume``) and starts the others. Stopping
it (Ctrl-C, SIGTERM, or killing the runner outright: the children get SIGTERM
when their parent dies) leaves every running cell with a checkpoint, and the
same command run again finishes the sweep without redoing finished cells.

On a cluster, ``--print-commands`` prints the same list, one command per line,
for a job array or GNU parallel; once they have run, the same ``minivae
figure2 ...`` command finds every cell finished and only draws the figure.
On a Dask cluster, ``--dask ADDRESS`` has its workers run the same commands
(:mod:`minivae.run.cluster`): the commands are the interface either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..utils import check_scalar

__all__ = ["Cell", "figure2_cells", "figure3_cells", "cell_status", "run_cells", "summary", "format_summary",
           "draw_figure2",
           "draw_figure3", "SweepInterrupted", "FIGURE2_LATENTS"]

#: Figure 2's latent sizes and hidden units per data set (Section 5).
FIGURE2_LATENTS = {"mnist": ((3, 5, 10, 20, 200), 500), "frey": ((2, 5, 10, 20), 200)}
FIGURE2_ALGORITHMS = ("aevb", "wake-sleep")
FIGURE3_ALGORITHMS = ("aevb", "wake-sleep", "mcem")
FIGURE3_TRAIN_SIZES = (1000, 50000)

#: Environment of every worker: one thread per library, so that --jobs N uses N cores.
SINGLE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "NUMBA_NUM_THREADS": "1"}

_RUN_FILES = ("config.json", "history.json", "history.csv")


class SweepInterrupted(RuntimeError):
    """The runner was stopped by a signal (``signum``); the running cells were stopped with a checkpoint."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


@dataclass(frozen=True)
class Cell:
    """One cell of a figure: a ``minivae train`` command and the run directory it writes.

    Attributes
    ----------
    name : str
        The run directory's name under the sweep's ``--out``, e.g. ``mnist-J20-wake-sleep``.
    args : tuple of str
        The ``minivae train`` arguments that define the run (not ``--out``,
        ``--samples``, ``--resume``).
    samples : int
        The budget in training samples evaluated.
    out : Path
        The run directory.
    key : dict
        What the figure needs to place it: dataset, J, algorithm, train_size.
    """

    name: str
    args: tuple
    samples: int
    out: Path
    key: dict = field(default_factory=dict, compare=False)

    def train_args(self, resume=False):
        """The arguments after ``minivae``: ``train ... --samples S --out DIR [--resume]``."""
        tail = ["--resume"] if resume else []
        return ["train", *self.args, "--samples", str(self.samples), "--out", str(self.out),
                "--no-progress", "--no-figures", *tail]

    def command_line(self):
        """The shell command a user (or a scheduler) runs for this cell."""
        return shlex.join(["minivae", *self.train_args()])


def _checkpoint_every(samples_between, N):
    """Epochs between checkpoints so that one is written about every ``samples_between`` samples (>= 1 epoch)."""
    return max(1, math.ceil(samples_between / N))


def _common(seed, data_dir, eval_points):
    args = ["--seed", str(seed), "--eval-points", str(eval_points)]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    return args


def figure2_cells(out, samples, datasets=("mnist", "frey"), seed=0, data_dir=None, eval_points=20):
    """Figure 2's cells: MNIST J in {3, 5, 10, 20, 200} with H = 500 and Frey Face J in {2, 5, 10, 20}
    with H = 200 (the presets' other settings: Adagrad, lr 0.02 / 0.01, M = 100, L = 1, estimator B,
    the parameter prior, float32), each trained with AEVB and with wake-sleep on the same seed."""
    out = Path(out)
    cells = []
    for dataset in datasets:
        if dataset not in FIGURE2_LATENTS:
            raise ValueError(f"Figure 2 has the data sets {', '.join(FIGURE2_LATENTS)}; got {dataset!r}.")
        latents, H = FIGURE2_LATENTS[dataset]
        N = 60000 if dataset == "mnist" else 1700
        for J in latents:
            for algorithm in FIGURE2_ALGORITHMS:
                name = f"{dataset}-J{J}-{algorithm}"
                args = ["--preset", dataset, "-J", str(J), "-H", str(H), "--algorithm", algorithm,
                        "--checkpoint-every", str(_checkpoint_every(60000, N)), *_common(seed, data_dir, eval_points)]
                cells.append(Cell(name, tuple(args), int(samples), out / name,
                                  dict(dataset=dataset, J=J, algorithm=algorithm)))
    return cells


def figure3_cells(out, samples, train_sizes=FIGURE3_TRAIN_SIZES, algorithms=FIGURE3_ALGORITHMS, seed=0,
                  data_dir=None, eval_points=10, eval_size=1000):
    """Figure 3's cells: J = 3, H = 100 on the first 1000 and 50000 MNIST training images, AEVB,
    wake-sleep and MCEM; the history records the Appendix D estimate of log p(x) and its standard
    error on ``eval_size`` train and test points (1000 each, as the paper; on 100 the standard error
    over images is about 4.5 nats, larger than the differences between the algorithms)."""
    out = Path(out)
    cells = []
    for N in train_sizes:
        for algorithm in algorithms:
            name = f"mnist-N{N}-{algorithm}"
            args = ["--preset", "mnist", "-J", "3", "-H", "100", "--algorithm", algorithm, "--train-size", str(N),
                    "--record", "marginal", "--eval-train-size", str(eval_size),
                    "--checkpoint-every", str(_checkpoint_every(60000, N)), *_common(seed, data_dir, eval_points)]
            cells.append(Cell(name, tuple(args), int(samples), out / name,
                              dict(dataset="mnist", J=3, algorithm=algorithm, train_size=N)))
    return cells


# --- the state of a cell, read from its run directory -------------------------------------------

def read_history(cell):
    """The cell's history dict, or None if it has none (or an unreadable one: a write was cut)."""
    try:
        return json.loads((cell.out / "history.json").read_text())
    except (OSError, ValueError):
        return None


def cell_status(cell):
    """"finished" (the history reaches the budget), "partial" (a checkpoint to resume from) or "new"."""
    history = read_history(cell)
    if history and history.get("samples") and history["samples"][-1] >= cell.samples \
            and not (cell.out / ".lock").exists():
        return "finished"
    if (cell.out / "checkpoint.npz").is_file():
        return "partial"
    return "new"


def _prepare(cell):
    """Make a cell startable: a run killed before its first checkpoint cannot be resumed, so its
    config and history (nothing else) are removed and it starts over."""
    status = cell_status(cell)
    if status == "new" and cell.out.is_dir():
        for name in _RUN_FILES:
            path = cell.out / name
            if path.exists():
                path.unlink()
    return status


# --- the local runner -------------------------------------------------------------------------

def _find_prctl():
    """libc's prctl, looked up in the runner: the child, forked from a process that may run other threads
    (a Dask worker), must not call the dynamic loader between fork and exec."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
    except (AttributeError, OSError):
        return None


_PRCTL = _find_prctl()


def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the thread that started it dies (with the runner, even by SIGKILL),
    so it checkpoints and stops."""
    _PRCTL(1, signal.SIGTERM)                  # PR_SET_PDEATHSIG = 1


def _child_env():
    env = dict(os.environ, **SINGLE_THREAD)
    here = str(Path(__file__).resolve().parents[2])          # the children run this very copy of minivae
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _start(cell, log):
    status = _prepare(cell)
    cell.out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "minivae", *cell.train_args(resume=status == "partial")]
    logfile = open(cell.out / "train.log", "ab")
    logfile.write(f"\n$ {shlex.join(argv)}\n".encode())
    logfile.flush()
    proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=_child_env(), preexec_fn=_die_with_parent if _PRCTL else None)
    logfile.close()                                           # the child holds its own descriptor
    log(f"[{time.strftime('%H:%M:%S')}] {'resume' if status == 'partial' else 'start '} {cell.name} (pid {proc.pid})")
    return proc


@contextlib.contextmanager
def _noting_signals():
    """While the block runs, SIGINT and SIGTERM only append their number to the list it yields (main thread only)."""
    stop, previous = [], {}
    if sys.platform != "win32" and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _unfinished(cells):
    """({name: 0} for the finished cells, which are never run again, [the other cells])."""
    results = {c.name: 0 for c in cells if cell_status(c) == "finished"}
    return results, [c for c in cells if c.name not in results]


def _report(cell, rc, log):
    """Log the end of a cell's run: finished, or failed with the exit code and where to read why."""
    state = "finished" if rc == 0 and cell_status(cell) == "finished" else f"failed (exit {rc})"
    log(f"[{time.strftime('%H:%M:%S')}] {state:8s} {cell.name}" + ("" if rc == 0 else f": see {cell.out / 'train.log'}"))


def run_cells(cells, jobs=None, log=print, poll=0.2):
    """Run every unfinished cell, at most ``jobs`` at a time; return {cell name: exit code}.

    Finished cells are skipped (exit code 0, nothing touched); cells with a
    checkpoint are resumed. On SIGINT or SIGTERM the running cells get SIGTERM
    (each finishes its step, writes a checkpoint and exits), then
    :class:`SweepInterrupted` is raised.
    """
    jobs = (os.cpu_count() or 1) if jobs is None else check_scalar(int(jobs), "--jobs", int, min_val=1)
    results, pending = _unfinished(cells)
    log(f"{len(cells)} cells: {len(results)} finished, {len(pending)} to run, {min(jobs, max(len(pending), 1))} "
        f"at a time (one thread each)")
    running = {}
    with _noting_signals() as stop:
        while pending or running:
            while pending and len(running) < jobs and not stop:
                cell = pending.pop(0)
                running[cell.name] = (cell, _start(cell, log))
            for name, (cell, proc) in list(running.items()):
                rc = proc.poll()
                if rc is not None:
                    del running[name]
                    results[name] = rc
                    _report(cell, rc, log)
            if stop:
                for cell, proc in running.values():
                    proc.send_signal(signal.SIGTERM)
                for cell, proc in running.values():
                    proc.wait()
                raise SweepInterrupted(f"{signal.Signals(stop[0]).name} received: {len(running)} running cell(s) "
                                       "stopped with a checkpoint; run the same command again to finish the sweep.", stop[0])
            time.sleep(poll)
    return results


def summary(cells):
    """One row per cell: name, status, samples reached, the last recorded train and test values.

    Returns
    -------
    list of dict with keys name, status, samples, train, test (None where the cell has no history).
    """
    rows = []
    for cell in cells:
        h = read_history(cell)
        last = h and h.get("samples")
        rows.append(dict(name=cell.name, status=cell_status(cell), samples=h["samples"][-1] if last else None,
                         train=h["train_elbo"][-1] if last else None, test=h["test_elbo"][-1] if last else None))
    return rows


def format_summary(rows):
    """The rows of :func:`summary` as a fixed-width text table."""
    lines = [f"{'cell':28s} {'status':9s} {'samples':>10s} {'train':>9s} {'test':>9s}"]
    for r in rows:
        num = (lambda v: f"{v:9.2f}" if v is not None else f"{'-':>9s}")
        samples = f"{int(r['samples']):10d}" if r["samples"] is not None else f"{'-':>10s}"
        lines.append(f"{r['name']:28s} {r['status']:9s} {samples} {num(r['train'])} {num(r['test'])}")
    return "\n".join(lines)


# --- drawing ---------------------------------------------------------------------------------

def _runs(cells):
    out = []
    for cell in cells:
        h = read_history(cell)
        if h and h.get("samples"):
            out.append(dict(cell.key, samples=h["samples"], train=h["train_elbo"], test=h["test_elbo"],
                            train_se=h.get("train_se"), test_se=h.get("test_se"),
                            finished=cell_status(cell) == "finished", budget=cell.samples))
    return out


def _panels(cells, group, title):
    """Cells grouped into panels (one per value of ``group``), each holding its algorithms' histories."""
    panels = {}
    for cell in cells:
        panels.setdefault(group(cell.key), {"title": title(cell.key), "runs": []})
    for run in _runs(cells):
        panels[group(run)]["runs"].append(run)
    return list(panels.values())


def draw_figure2(cells, path):
    """Figure 2 from the cells' histories: one row per data set, one panel per J."""
    from .plots import plot_figure2
    names = {"mnist": "MNIST", "frey": "Frey Face"}
    rows = []
    for dataset in dict.fromkeys(c.key["dataset"] for c in cells):
        these = [c for c in cells if c.key["dataset"] == dataset]
        rows.append(_panels(these, lambda k: k["J"], lambda k: f"{names[k['dataset']]}, $N_z$ = {k['J']}"))
    return plot_figure2(rows, path)


def draw_figure3(cells, path):
    """Figure 3 from the cells' histories: one panel per training-set size."""
    from .plots import plot_figure3
    panels = _panels(cells, lambda k: k["train_size"], lambda k: f"MNIST, $N_{{train}}$ = {k['train_size']}")
    return plot_figure3([panels], path)
