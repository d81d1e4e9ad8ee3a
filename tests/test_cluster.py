"""Sweeps on a Dask cluster (``--dask``): a LocalCluster of two worker processes on 127.0.0.1 runs
tiny cells on a tiny fake MNIST; a cell whose worker is killed resumes from its checkpoint, a Ctrl-C
of the submitter stops the cells so that the same command carries on, finished cells are never sent."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from minivae.run import cli
from minivae.run.cluster import run_cell, run_cells_on_dask
from minivae.run.rundir import RunLocked, run_lock
from minivae.run.sweep import cell_status
from test_sweep import REPO, _fake_mnist, _lock_released, _paused, _pausing_python, _tiny_cells, _wait_for

SAMPLES = 3000         # 3 recorded points (100, 500, 3000), a checkpoint every 300 samples


@pytest.fixture
def client():
    """A client of a fresh two-worker cluster (one thread each), whose workers run this copy of minivae."""
    distributed = pytest.importorskip("distributed", reason="the Dask tests need pip install -e '.[cluster]'")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        where = client.run(lambda: __import__("minivae").__file__)
        assert all(Path(f).is_relative_to(REPO) for f in where.values()), where
        yield client


def _pause_on_workers(client, wrapper, name):
    """The workers start cells through the pausing wrapper of test_sweep; cell ``name`` pauses once, mid-run."""
    client.run(exec, f"import os, sys; sys.executable = {str(wrapper)!r}; os.environ['TEST_PAUSE_CELL'] = {name!r}", {})


def _commands(cell):
    """The ``minivae train`` commands the cell's train.log records, one per start."""
    return [line for line in (cell.out / "train.log").read_text().splitlines() if line.startswith("$ ")]


def test_every_cell_runs_on_the_workers_and_running_again_sends_nothing(tmp_path, client):
    cells = _tiny_cells(tmp_path / "sweep", _fake_mnist(tmp_path / "data"), SAMPLES)
    logs = []
    assert run_cells_on_dask(cells, client.scheduler.address, log=logs.append) == {c.name: 0 for c in cells}
    assert "4 cells: 0 finished, 4 to run on the Dask cluster" in logs[0]
    assert sum("finished c" in line for line in logs) == 4
    for cell in cells:
        assert cell_status(cell) == "finished" and len(_commands(cell)) == 1
        assert json.loads((cell.out / "history.json").read_text())["samples"][-1] == SAMPLES
    before = {c.name: [(c.out / f).stat().st_mtime_ns for f in ("history.json", "train.log")] for c in cells}

    logs = []       # finished cells are read from the shared path: no scheduler is even contacted
    assert run_cells_on_dask(cells, "tcp://127.0.0.1:1", log=logs.append) == {c.name: 0 for c in cells}
    assert logs == ["4 cells: 4 finished, 0 to run"]
    assert {c.name: [(c.out / f).stat().st_mtime_ns for f in ("history.json", "train.log")] for c in cells} == before


def _parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_killed_workers_cell_resumes_from_its_checkpoint(tmp_path, client):
    """The cell pauses mid-run after two recorded points; its worker is killed (SIGKILL). The child gets
    SIGTERM from the kernel (PDEATHSIG), checkpoints and exits; the scheduler gives the task to a live
    worker, which waits for the lock and resumes: the points recorded before the kill are kept, not
    computed again."""
    cell = _tiny_cells(tmp_path / "sweep", _fake_mnist(tmp_path / "data"), SAMPLES)[0]
    _pause_on_workers(client, _pausing_python(tmp_path), cell.name)
    workers = client.run(os.getpid)
    results, logs = {}, []
    submitter = threading.Thread(target=lambda: results.update(
        run_cells_on_dask([cell], client.scheduler.address, log=logs.append)))
    submitter.start()
    _wait_for(lambda: _paused(cell))
    before = json.loads((cell.out / "history.json").read_text())
    child = int((cell.out / ".lock").read_text().split()[0])
    worker = _parent(child)
    assert worker in workers.values()
    os.kill(worker, signal.SIGKILL)

    submitter.join(300)
    assert not submitter.is_alive() and results == {cell.name: 0}, logs
    assert cell_status(cell) == "finished"
    assert [c.endswith("--resume") for c in _commands(cell)] == [False, True]
    after = json.loads((cell.out / "history.json").read_text())
    assert len(before["samples"]) == 2 and after["samples"] == [100, 500, SAMPLES]
    for key in ("samples", "train_elbo", "seconds"):                  # seconds: the same wall times, not redone
        assert after[key][:2] == before[key]
    assert "SIGTERM received: stopped after step" in (cell.out / "train.log").read_text()   # the orphan checkpointed


_SUBMITTER = """
import json, sys
from pathlib import Path
from minivae.run.cluster import run_cells_on_dask
from minivae.run.sweep import Cell, SweepInterrupted
cells = [Cell(c["name"], tuple(c["args"]), c["samples"], Path(c["out"])) for c in json.loads(sys.argv[1])]
try:
    run_cells_on_dask(cells, sys.argv[2])
except SweepInterrupted as e:
    sys.exit(f"interrupted: {e}")
"""


def test_ctrl_c_of_the_submitter_stops_the_cells_and_running_again_carries_on(tmp_path, client):
    cell = _tiny_cells(tmp_path / "sweep", _fake_mnist(tmp_path / "data"), SAMPLES)[0]
    _pause_on_workers(client, _pausing_python(tmp_path), cell.name)
    spec = json.dumps([dict(name=cell.name, args=list(cell.args), samples=cell.samples, out=str(cell.out))])
    submitter = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_SUBMITTER), spec, client.scheduler.address],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(lambda: _paused(cell))
    submitter.send_signal(signal.SIGINT)
    assert submitter.wait(300) == 1
    assert "interrupted: SIGINT received: tasks cancelled, 1 running cell(s) stopped with a checkpoint; run the " \
           "same command again" in submitter.stderr.read().decode()
    assert _lock_released(cell) and cell_status(cell) == "partial"          # stopped before the submitter exited

    assert run_cells_on_dask([cell], client.scheduler.address, log=lambda line: None) == {cell.name: 0}
    assert cell_status(cell) == "finished"
    assert [c.endswith("--resume") for c in _commands(cell)] == [False, True]


def test_a_task_waits_for_the_lock_then_says_who_holds_it(tmp_path):
    cell = _tiny_cells(tmp_path / "sweep", tmp_path / "data", SAMPLES)[0]
    cell.out.mkdir(parents=True)
    with run_lock(cell.out):
        with pytest.raises(RunLocked, match=f"in use by another minivae process \\(pid {os.getpid()}\\)"):
            run_cell(cell, lock_wait=0)
    assert not (cell.out / "train.log").exists()


def test_a_cell_locked_by_another_process_fails_on_the_cluster_with_that_reason(tmp_path, client):
    cell = _tiny_cells(tmp_path / "sweep", tmp_path / "data", SAMPLES)[0]
    cell.out.mkdir(parents=True)
    logs = []
    with run_lock(cell.out):
        assert run_cells_on_dask([cell], client.scheduler.address, log=logs.append, retries=1, lock_wait=0) == \
            {cell.name: 2}
    assert f"failed   c0 on the cluster: RunLocked('{cell.out} is in use by another minivae process (pid " \
           f"{os.getpid()})" in logs[-1]


def test_a_cell_killed_before_its_first_checkpoint_starts_over(tmp_path):
    """What a run killed at once leaves (its config, no checkpoint) is cleared and the cell trained from the start."""
    cell = _tiny_cells(tmp_path / "sweep", _fake_mnist(tmp_path / "data"), SAMPLES)[0]
    cell.out.mkdir(parents=True)
    (cell.out / "config.json").write_text("{}")
    assert run_cell(cell) == 0 and cell_status(cell) == "finished"
    assert [c.endswith("--resume") for c in _commands(cell)] == [False]


def test_the_dask_flag_sends_the_cells_with_shared_paths(tmp_path, monkeypatch, capsys):
    from minivae.run import cluster
    sent = []
    monkeypatch.setattr(cluster, "run_cells_on_dask", lambda cells, address: sent.append((cells, address)) or {})
    find_spec = importlib.util.find_spec                            # as if distributed were installed, then not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "distributed" else
                        find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    argv = ["figure2", "--samples", "1e6", "--out", "fig2", "--datasets", "frey", "--data-dir", "data"]
    assert cli.main(argv + ["--dask", "tcp://10.0.0.5:8786"]) == 0
    (cells, address), = sent
    assert address == "tcp://10.0.0.5:8786" and len(cells) == 8
    assert all(c.out == tmp_path / "fig2" / c.name and str(tmp_path / "data") in c.args for c in cells)
    capsys.readouterr()

    for extra in (["--jobs", "2"], ["--print-commands"]):
        assert cli.main(argv + ["--dask", "tcp://10.0.0.5:8786", *extra]) == 2
        assert "--dask sends the cells to the cluster's workers" in capsys.readouterr().err
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else
                        find_spec(name, *a))
    assert cli.main(argv + ["--dask", "tcp://10.0.0.5:8786"]) == 2
    assert "pip install 'minivae[cluster]'" in capsys.readouterr().err
    assert len(sent) == 1
