"""Figures 2 and 3 on a Dask distributed cluster: every cell is the same ``minivae train`` command as in
:func:`~minivae.run.sweep.run_cells`, run by a worker, its run directory on a file system all machines share.

``minivae figure2 ... --dask ADDRESS`` calls :func:`run_cells_on_dask`, which
sends each unfinished cell to the scheduler at ``ADDRESS`` as one task,
:func:`run_cell`. Finished cells are never sent. Each worker thread runs one
cell at a time, as a child process with one BLAS/OpenMP/Numba thread, so a
worker started with ``--nthreads 4`` trains four cells on four cores.

What happens when something dies:

- **A worker dies** (killed, out of memory, its node lost): its children get
  SIGTERM (``PR_SET_PDEATHSIG``), finish their step, write a checkpoint and
  exit. The scheduler gives the task to another worker (Dask's
  ``allowed-failures``, 3 by default, bounds how often), where :func:`run_cell`
  waits for the dying child to release the run directory's lock, finds the
  checkpoint and starts ``minivae train --resume``. A cell killed before its
  first checkpoint starts over. The resume is decided by the task itself, from
  the run directory, never by the submitter.
- **A cell's run stops on a signal** it did not get from the submitter (the
  batch system ending a job, say): the task raises :class:`CellInterrupted`,
  and Dask runs it again (``retries``), which resumes.
- **The lock stays held** (another ``minivae`` process really trains that cell):
  after ``lock_wait`` seconds the task raises :class:`~minivae.run.rundir.RunLocked`,
  retried like the above; a cell never trains in two processes at once.
- **Ctrl-C (or SIGTERM) of the submitter**: the tasks not started are cancelled,
  the running cells get SIGTERM and stop with a checkpoint, then
  :class:`~minivae.run.sweep.SweepInterrupted` is raised; the same command run
  again carries on. If the submitter is killed outright, the running cells train
  on to the end; the command run again sends them anew, and each task waits
  for its cell's lock as above.

``distributed`` is imported here only inside :func:`run_cells_on_dask`: the rest
of minivae runs without it (``pip install "minivae[cluster]"`` installs it).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import threading
import time

from .rundir import RunLocked, check_unlocked
from .sweep import SweepInterrupted, _noting_signals, _report, _start, _unfinished, cell_status

__all__ = ["run_cells_on_dask", "run_cell", "CellInterrupted", "LOCK_WAIT"]

#: Seconds a task waits for a cell's lock to be released (a killed worker's child finishing its step).
LOCK_WAIT = 600.0

# On each worker: the children running for each submission (its token), so that the submitter's
# Ctrl-C can stop them, and the submissions stopped, whose tasks start nothing any more.
_children: dict = {}
_stopped: set = set()
_guard = threading.Lock()


class CellInterrupted(RuntimeError):
    """A cell's ``minivae train`` stopped on a signal (with a checkpoint) that the submitter did not send."""


def _wait_unlocked(cell, timeout, poll=1.0):
    """Return once no live process holds ``cell.out``'s lock; raise :class:`RunLocked` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        try:
            check_unlocked(cell.out)
            return
        except RunLocked:
            if time.monotonic() >= end:
                raise
        time.sleep(poll)


def run_cell(cell, token="", lock_wait=LOCK_WAIT):
    """The task: run one cell on this worker as ``minivae train``, starting or resuming it as its run
    directory says, and wait for it.

    Parameters
    ----------
    cell : Cell
        The cell; ``cell.out`` must be the same path on the submitter and on every worker.
    token : str
        The submission this task belongs to (what :func:`_stop` stops).
    lock_wait : float
        Seconds to wait for another process to release the cell's run directory.

    Returns
    -------
    int or None
        The exit code of ``minivae train`` (0 when the cell was already finished),
        or None if the submission was stopped before the cell started.

    Raises
    ------
    CellInterrupted
        The run stopped on a signal the submitter did not send; Dask's retry resumes it.
    RunLocked
        Another process held the run directory for ``lock_wait`` seconds, or took it first.

    Notes
    -----
    The child is started and waited for by the task's own thread: Linux sends
    ``PR_SET_PDEATHSIG`` when the *thread* that forked the child ends, so the
    child must not outlive it, and it does not, unless the worker dies.
    """
    _wait_unlocked(cell, lock_wait)
    with _guard:                       # a Ctrl-C arriving now stops this child too (see _stop)
        if token in _stopped:
            return None
        if cell_status(cell) == "finished":
            return 0
        proc = _start(cell, log=print)            # decides: --resume from a checkpoint, or a fresh start
        _children.setdefault(token, {})[cell.name] = proc
    try:
        rc = proc.wait()
    finally:
        with _guard:
            _children[token].pop(cell.name)
    if rc != 0 and token not in _stopped:
        check_unlocked(cell.out)                  # another process took the lock first: RunLocked
        if rc < 0 or rc >= 128:                   # killed by a signal, or stopped with a checkpoint (130, 143)
            raise CellInterrupted(f"{cell.name}: minivae train stopped on a signal (exit {rc}); "
                                  f"it resumes from its checkpoint when run again")
    return rc


async def _stop(token):
    """Run on each worker by the submitter's Ctrl-C: this submission starts no child any more, and its
    running children get SIGTERM (each finishes its step, writes a checkpoint and exits).

    Returns the names of the cells stopped, once their children have exited."""
    with _guard:
        _stopped.add(token)
        running = dict(_children.get(token, {}))
    for proc in running.values():
        proc.send_signal(signal.SIGTERM)
    while _children.get(token):
        await asyncio.sleep(0.1)
    return sorted(running)


def run_cells_on_dask(cells, address, log=print, retries=3, lock_wait=LOCK_WAIT, poll=0.2):
    """Run every unfinished cell on the Dask cluster whose scheduler is at ``address``; return
    {cell name: exit code}, as :func:`~minivae.run.sweep.run_cells` does.

    Parameters
    ----------
    cells : list of Cell
        The cells; their run directories must be on a path every worker shares.
    address : str or distributed.Client
        The scheduler's address, e.g. ``tcp://10.1.2.3:8786`` (or a client connected to it).
    log : callable
        Receives one line per event.
    retries : int
        How many times Dask runs a task again after it raised (:class:`CellInterrupted`,
        :class:`~minivae.run.rundir.RunLocked`); a task on a worker that died is run
        again by the scheduler, up to its ``distributed.scheduler.allowed-failures``.
    lock_wait : float
        Seconds a task waits for a cell's lock (see :func:`run_cell`).
    poll : float
        Seconds between looks at the tasks (and at a Ctrl-C).

    Returns
    -------
    dict
        Cell name to exit code; a task that failed on the cluster counts as exit code 2.

    Raises
    ------
    SweepInterrupted
        On SIGINT or SIGTERM: the tasks not started are cancelled and the running cells
        stopped with a checkpoint; run the same command again to go on.
    """
    from distributed import Client, as_completed

    results, pending = _unfinished(cells)
    if not pending:
        log(f"{len(cells)} cells: {len(results)} finished, 0 to run")
        return results
    token = secrets.token_hex(4)
    client = address if isinstance(address, Client) else Client(address)
    try:
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        log(f"{len(cells)} cells: {len(results)} finished, {len(pending)} to run on the Dask cluster at "
            f"{client.scheduler.address} ({threads} worker threads now, one cell each)")
        with _noting_signals() as stop:
            futures = {client.submit(run_cell, cell, token, lock_wait, key=f"minivae-train-{cell.name}-{token}",
                                     retries=retries): cell for cell in pending}
            done = as_completed(futures)
            while not done.is_empty() and not stop:
                for future in done.next_batch(block=False):
                    results[futures[future].name] = _outcome(futures[future], future, log)
                time.sleep(poll)
            if stop:
                client.cancel(list(futures))
                stopped = sum(len(names) for names in client.run(_stop, token, on_error="ignore").values())
                raise SweepInterrupted(f"{signal.Signals(stop[0]).name} received: tasks cancelled, {stopped} running "
                                       "cell(s) stopped with a checkpoint; run the same command again to finish "
                                       "the sweep.", stop[0])
    finally:
        if client is not address:
            client.close()
    return results


def _outcome(cell, future, log):
    """The exit code a finished task stands for, logged as the local runner logs it."""
    if future.status == "finished":
        rc = future.result()
        _report(cell, rc, log)
        return rc
    why = repr(future.exception()) if future.status == "error" else f"the task was {future.status}"
    log(f"[{time.strftime('%H:%M:%S')}] failed   {cell.name} on the cluster: {why}")
    return 2
