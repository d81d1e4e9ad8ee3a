"""Sweeps: the cells of Figures 2 and 3 are the paper's settings as ordinary `minivae train` commands;
the runner skips finished cells, resumes cut ones, survives being killed; the figures draw whatever
is there."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from fake_data import fake_mnist_splits
from minivae.run import cli
from minivae.run.sweep import (Cell, cell_status, draw_figure2, draw_figure3, figure2_cells, figure3_cells,
                               format_summary, run_cells, summary)

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _config(cell):
    """The Config the cell's command line gives (parsed by the real parser)."""
    args = cli.build_parser().parse_args(cell.train_args())
    return cli._config_from_args(args)


def test_figure2_cells_are_the_papers_settings():
    cells = figure2_cells("runs/fig2", 1_000_000)
    assert len(cells) == 18 and len({c.out for c in cells}) == 18
    seen = {}
    for cell in cells:
        cfg = _config(cell)
        seen[(cfg.dataset, cfg.J, cfg.algorithm)] = cfg
        assert cfg.samples == 1_000_000 and cfg.seed == 0 and cfg.optimizer == "adagrad" and cfg.M == 100
        assert cfg.L == 1 and cfg.estimator == "B" and cfg.weight_decay and cfg.dtype == "float32"
        assert cfg.record == "elbo" and cfg.train_size is None
        assert cell.out == Path("runs/fig2") / cell.name
    mnist = {J for d, J, a in seen if d == "mnist"}
    frey = {J for d, J, a in seen if d == "frey"}
    assert mnist == {3, 5, 10, 20, 200} and frey == {2, 5, 10, 20}
    assert all(seen[k].H == (500 if k[0] == "mnist" else 200) for k in seen)
    assert all(seen[k].lr == (0.02 if k[0] == "mnist" else 0.01) for k in seen)
    assert all(seen[k].decoder == ("bernoulli" if k[0] == "mnist" else "gaussian") for k in seen)
    assert {a for _, _, a in seen} == {"aevb", "wake-sleep"}
    for d, J, a in seen:                             # the two algorithms of a panel differ in nothing else
        other = seen[(d, J, "wake-sleep" if a == "aevb" else "aevb")]
        assert {k for k, v in seen[(d, J, a)].to_dict().items() if other.to_dict()[k] != v} == {"algorithm"}


def test_figure3_cells_are_the_papers_settings():
    cells = figure3_cells("runs/fig3", 200_000)
    assert len(cells) == 6
    for cell in cells:
        cfg = _config(cell)
        assert (cfg.J, cfg.H, cfg.dataset, cfg.record, cfg.eval_train_size) == (3, 100, "mnist", "marginal", 1000)
        assert cfg.train_size in (1000, 50000) and cfg.algorithm in ("aevb", "wake-sleep", "mcem")
    assert {(c.key["train_size"], c.key["algorithm"]) for c in cells} == \
        {(n, a) for n in (1000, 50000) for a in ("aevb", "wake-sleep", "mcem")}


def test_print_commands_prints_one_train_command_a_line_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "fig2"
    assert cli.main(["figure2", "--samples", "1e6", "--out", str(out), "--datasets", "frey", "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(line.startswith("minivae train --preset frey ") for line in lines)
    assert all("--samples 1000000 " in line and f"--out {out}/frey-J" in line for line in lines)
    assert not out.exists()


def test_bad_sweep_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["figure2", "--samples", "1.5", "--out", "x"])
    assert "whole number" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--jobs must be a positive integer"):
        run_cells([], jobs=0, log=lambda s: None)


def _write_history(cell, samples, lock=False, checkpoint=False):
    cell.out.mkdir(parents=True, exist_ok=True)
    s = [int(v) for v in np.unique(np.geomspace(100, samples, 8).round(-2))]
    h = {"samples": s, "train_elbo": [-200 + 10 * np.log(x) for x in s], "test_elbo": [-205 + 10 * np.log(x) for x in s],
         "seconds": [0.0] * len(s), "epoch": [0.0] * len(s)}
    (cell.out / "history.json").write_text(json.dumps(h))
    if checkpoint:
        (cell.out / "checkpoint.npz").write_bytes(b"")
    if lock:
        (cell.out / ".lock").write_text("1 host\n")


def test_summary_rows(tmp_path):
    cells = [Cell("a", (), 1000, tmp_path / "a"), Cell("b", (), 1000, tmp_path / "b")]
    _write_history(cells[0], 1000)
    rows = summary(cells)
    assert rows[0]["status"] == "finished" and rows[0]["samples"] == 1000 and rows[1] == \
        dict(name="b", status="new", samples=None, train=None, test=None)
    text = format_summary(rows).splitlines()
    assert text[0].split() == ["cell", "status", "samples", "train", "test"] and text[2].split() == ["b", "new", "-", "-", "-"]


def test_cell_status_reads_the_run_directory(tmp_path):
    cell = Cell("c", (), 1000, tmp_path / "c")
    assert cell_status(cell) == "new"
    _write_history(cell, 500, checkpoint=True)
    assert cell_status(cell) == "partial"
    _write_history(cell, 1000, checkpoint=True, lock=True)           # the last point is written, the run still ends
    assert cell_status(cell) == "partial"
    (cell.out / ".lock").unlink()
    assert cell_status(cell) == "finished"
    (cell.out / "history.json").write_text("{\"samples\": [1")     # a write cut short
    assert cell_status(cell) == "partial"


def test_the_figures_draw_whatever_is_there(tmp_path, capsys):
    """Finished and unfinished cells are drawn, missing ones say so; with every cell finished,
    the same figure2 command runs nothing and only draws."""
    cells = figure2_cells(tmp_path, 10000)
    for cell in cells[:6]:
        _write_history(cell, 10000)
    _write_history(cells[6], 3000, checkpoint=True)
    fig = draw_figure2(cells, tmp_path / "figure2.png")
    assert (tmp_path / "figure2.png").read_bytes()[:8] == PNG
    assert len(fig.axes) == 9
    empty = [ax for ax in fig.axes if any(t.get_text() == "not run yet" for t in ax.texts)]
    assert len(empty) == 9 - 4                                       # 4 panels have some run: J=3, 5, 10 (x2) and 20
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["AEVB (train)", "AEVB (test)", "Wake-Sleep (train)", "Wake-Sleep (test)"]
    assert any("AEVB: 3e+03 of 1e+04 samples" in t.get_text() for t in fig.axes[3].texts)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == labels       # one legend for the figure

    frey = [c for c in cells if c.key["dataset"] == "frey"]
    for cell in frey:
        _write_history(cell, 10000)
    assert cli.main(["figure2", "--samples", "10000", "--out", str(tmp_path), "--datasets", "frey"]) == 0
    printed = capsys.readouterr().out
    assert "8 cells: 8 finished, 0 to run" in printed
    last = json.loads((frey[0].out / "history.json").read_text())
    row = next(line for line in printed.splitlines() if line.startswith("frey-J2-aevb "))
    assert row.split() == ["frey-J2-aevb", "finished", str(last["samples"][-1]), f"{last['train_elbo'][-1]:.2f}",
                           f"{last['test_elbo'][-1]:.2f}"]
    assert not any((c.out / "train.log").exists() for c in frey)

    cells3 = figure3_cells(tmp_path / "f3", 5000)
    for cell in cells3[:4]:
        _write_history(cell, 5000)
    fig = draw_figure3(cells3, tmp_path / "f3" / "figure3.png")
    assert len(fig.axes) == 2 and (tmp_path / "f3" / "figure3.png").is_file()
    assert fig.axes[0].get_legend_handles_labels()[1][-2:] == ["MCEM (train)", "MCEM (test)"]


def test_figure3_draws_each_points_standard_error_as_an_error_bar(tmp_path):
    """A history with ``train_se``/``test_se`` (the Appendix D evaluator's) gets a bar of one standard
    error either side of each point; a history without them (Figure 2's bound) gets none."""
    cells = figure3_cells(tmp_path, 5000, train_sizes=(1000,), algorithms=("aevb", "mcem"))
    _write_history(cells[0], 5000)
    h = json.loads((cells[0].out / "history.json").read_text())
    h["train_se"], h["test_se"] = [1.5] * len(h["samples"]), [0.5] * len(h["samples"])
    (cells[0].out / "history.json").write_text(json.dumps(h))
    _write_history(cells[1], 5000)
    ax = draw_figure3(cells, tmp_path / "figure3.png").axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2                                         # AEVB's train and test; MCEM has none
    for bar, se, values in zip(bars, (1.5, 0.5), (h["train_elbo"], h["test_elbo"])):
        segments = bar.lines[2][0].get_segments()                 # one vertical segment per point
        np.testing.assert_allclose([s[:, 1] for s in segments], [[v - se, v + se] for v in values])


# --- the runner, for real: tiny wake-sleep cells on a tiny fake MNIST ----------------------------

def _fake_mnist(root):
    return fake_mnist_splits(root, n_train=600, n_test=100)


def _tiny_cells(out, data, samples):
    args = ("--dataset", "mnist", "--data-dir", str(data), "-H", "8", "-J", "2", "--algorithm", "wake-sleep",
            "--eval-points", "3", "--eval-train-size", "100", "--checkpoint-every", "0.5")
    return [Cell(f"c{k}", args + ("--seed", str(k)), samples, out / f"c{k}", {}) for k in range(4)]


_RUNNER = """
import json, sys
from pathlib import Path
from minivae.run.sweep import Cell, run_cells
sys.executable = sys.argv[2]          # the children start through the pausing wrapper
cells = [Cell(c["name"], tuple(c["args"]), c["samples"], Path(c["out"])) for c in json.loads(sys.argv[1])]
run_cells(cells, jobs=1)
"""

# A child of the runner (``-m minivae train ... --out DIR``): the cell named by TEST_PAUSE_CELL
# stops at its second recorded bound, writes DIR.paused (beside DIR) and waits there until a signal
# comes (the signal then reaches minivae's own handler: the run finishes its step and checkpoints).
# It pauses once: a later run of the cell (DIR.paused exists) goes on.
_PAUSING = """
import os, runpy, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
marker = out.parent / (out.name + ".paused")
if out.name == os.environ.get("TEST_PAUSE_CELL") and not marker.exists():
    import minivae.run.cli as cli
    write, calls = cli._write_history, []

    def paused(where, history):
        write(where, history)
        calls.append(1)
        if len(calls) == 2:
            got, handlers = [], {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            def noting(signum, frame):
                got.append(signum)
                handlers[signum](signum, frame)
            for s in handlers:
                signal.signal(s, noting)
            marker.touch()
            while not got:
                time.sleep(0.01)
            for s, h in handlers.items():
                signal.signal(s, h)

    cli._write_history = paused
sys.argv = ["minivae", *args[2:]]
runpy.run_module("minivae", run_name="__main__")
"""


def _pausing_python(tmp_path):
    """An executable that runs ``python -m minivae ...`` as above: give it to a runner as ``sys.executable``."""
    (tmp_path / "pausing.py").write_text(_PAUSING)
    wrapper = tmp_path / "python-pausing"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "pausing.py"}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _paused(cell):
    """Whether the cell has paused (see _PAUSING)."""
    return (cell.out.parent / f"{cell.name}.paused").exists()


def _start_runner(cells, pause, tmp_path):
    """The runner in its own process; the cell named ``pause`` waits, once trained a little, for a signal."""
    wrapper = _pausing_python(tmp_path)
    spec = json.dumps([dict(name=c.name, args=list(c.args), samples=c.samples, out=str(c.out)) for c in cells])
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(_RUNNER), spec, str(wrapper)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, TEST_PAUSE_CELL=pause))


def _wait_for(condition, timeout=300.0):     # (the timeout only turns a hang into a failure)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _lock_released(cell):
    return not (cell.out / ".lock").exists()


@pytest.mark.slow
def test_killing_the_runner_and_running_it_again_finishes_without_redoing_finished_cells(tmp_path):
    """Four cells, one at a time. Stop the runner with SIGTERM while cell 1 runs, then kill it
    outright (SIGKILL) while cell 2 runs: each running child still checkpoints and stops. The
    third run finishes every cell; the cells finished before were not touched (mtimes), and the
    cut ones were resumed from their checkpoints, not started over."""
    data = _fake_mnist(tmp_path / "data")
    cells = _tiny_cells(tmp_path / "sweep", data, samples=30000)

    runner = _start_runner(cells, "c1", tmp_path)
    _wait_for(lambda: _paused(cells[1]))      # cell 1 waits, mid-run, for the signal
    assert cell_status(cells[0]) == "finished"
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(60) != 0 and b"run the same command again" in runner.stderr.read()
    _wait_for(lambda: _lock_released(cells[1]))
    assert cell_status(cells[1]) == "partial" and cell_status(cells[2]) == "new"
    first = {name: (cells[0].out / name).stat().st_mtime_ns for name in ("history.json", "checkpoint.npz")}

    runner = _start_runner(cells, "c2", tmp_path)
    _wait_for(lambda: _paused(cells[2]))
    runner.kill()                                    # no chance to clean up: the children learn by PDEATHSIG
    runner.wait(60)
    _wait_for(lambda: _lock_released(cells[2]))
    assert cell_status(cells[2]) == "partial"
    second = {name: (cells[1].out / name).stat().st_mtime_ns for name in ("history.json", "checkpoint.npz")}

    logs = []
    results = run_cells(cells, jobs=2, log=logs.append)
    assert results == {"c0": 0, "c1": 0, "c2": 0, "c3": 0}
    assert all(cell_status(c) == "finished" for c in cells)
    assert {name: (cells[0].out / name).stat().st_mtime_ns for name in first} == first
    assert {name: (cells[1].out / name).stat().st_mtime_ns for name in second} == second
    assert any("resume c2 " in line for line in logs) and not any("start  c0" in line for line in logs)
    assert "--resume" in (cells[2].out / "train.log").read_text()
    for cell in cells:
        h = json.loads((cell.out / "history.json").read_text())
        assert h["samples"][-1] == 30000 and len(h["samples"]) == 3   # one history, not a restarted one


def test_worker_environment_is_single_threaded_and_runs_this_copy(tmp_path, monkeypatch):
    from minivae.run import sweep
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = sweep._child_env()
    assert all(env[k] == "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"))
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"]


def test_only_runs_the_matching_cells_and_says_when_none_match(tmp_path, capsys):
    out = tmp_path / "fig2"
    assert cli.main(["figure2", "--samples", "1e6", "--out", str(out), "--only", "frey-J2-*", "mnist-J20-aevb",
                     "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("--out ")[1].split()[0] for line in lines] == \
        [f"{out}/mnist-J20-aevb", f"{out}/frey-J2-aevb", f"{out}/frey-J2-wake-sleep"]
    assert cli.main(["figure2", "--samples", "1e6", "--out", str(out), "--only", "mnist-J7-*"]) == 2
    assert "matches no cell; the cells are: mnist-J3-aevb" in capsys.readouterr().err
