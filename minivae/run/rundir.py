"""A run directory: one training process at a time, and nothing left behind by a failed start.

``minivae train --out DIR`` holds ``DIR/.lock`` (the pid and host of the
process) for as long as it runs, and removes it on exit. A second process finds
the lock held and stops with one line naming the pid; a lock whose owner is
gone (killed, power cut) is stale and is taken over.

On POSIX the lock is an ``flock`` on the file, which the kernel releases when
its process dies, however it dies: two processes starting together, or both
finding the same stale lock, can never both win. (Where ``fcntl`` is missing,
the pid in the file is checked instead.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunLocked", "run_lock", "check_unlocked", "fresh_run_dir"]

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another live process is training into this run directory."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # it exists, owned by someone else
        return True
    return True


def _read_owner(path):
    try:
        pid_text, _, host = path.read_text().partition(" ")
        return int(pid_text), host.strip()
    except (OSError, ValueError):
        return None, ""


def _locked(directory, path):
    """The one-line refusal, naming the owner (read again for a moment if it is still writing its pid)."""
    for _ in range(50):
        pid, host = _read_owner(path)
        if pid is not None:
            break
        time.sleep(0.01)
    owner = "pid unknown" if pid is None else f"pid {pid}" + ("" if host == socket.gethostname() else f" on {host}")
    return RunLocked(f"{directory} is in use by another minivae process ({owner}); "
                     "wait for it to finish, or choose another --out.")


def _held(fd):
    """Whether another process holds the flock on ``fd`` (probing takes and releases it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def check_unlocked(directory):
    """Raise :class:`RunLocked` if a live process holds ``directory/.lock``; return the pid of a stale lock's owner.

    Returns
    -------
    int or None
        The pid recorded in a lock whose owner is gone (a killed run), or None
        if there is no lock (or it cannot be read).
    """
    path = Path(directory) / LOCK_NAME
    if not path.is_file():
        return None
    pid, host = _read_owner(path)
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if _held(fd):
                raise _locked(directory, path)
        finally:
            os.close(fd)
        return pid
    if pid is not None and (host != socket.gethostname() or _alive(pid)) and pid != os.getpid():
        raise _locked(directory, path)
    return pid


@contextlib.contextmanager
def run_lock(directory):
    """Hold ``directory/.lock`` while the block runs; raise :class:`RunLocked` if a live process holds it."""
    path = Path(directory) / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n".encode()
    if fcntl is None:  # pragma: no cover - Windows: create exclusively, take over a dead owner's file
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                check_unlocked(directory)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        else:
            raise RunLocked(f"could not take the lock {path}; remove it if no minivae process uses {directory}.")
    else:
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _locked(directory, path) from None
            try:                        # the owner before us may have removed the file as it exited: retry
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
    os.write(fd, me)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):   # removed while still held, then released
            path.unlink()
        os.close(fd)


@contextlib.contextmanager
def fresh_run_dir(directory):
    """Create ``directory`` if needed; if the block fails and it was created here, remove it again.

    Only a directory this call created is removed (with the parents it created, if they are
    empty), and only if it holds nothing but what the failed start wrote (no checkpoint): a
    user's folder is never deleted. Losing the lock (:class:`RunLocked`) removes nothing: the
    directory belongs to the process that holds it, even if both saw it missing.
    """
    directory = Path(directory)
    created = [d for d in (directory, *directory.parents) if not d.exists()]      # innermost first
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, f"--out {directory} exists and is not a directory; "
                                 "choose another --out", str(directory)) from None
    try:
        yield directory
    except BaseException as e:
        if created and not isinstance(e, RunLocked) and not (directory / "checkpoint.npz").exists():
            shutil.rmtree(directory, ignore_errors=True)
            for parent in created[1:]:
                with contextlib.suppress(OSError):     # not empty: another run uses it
                    parent.rmdir()
        raise
