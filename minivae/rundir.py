"""A run directory: one training process at a time, and nothing left behind by a failed start.

``minivae train --out DIR`` holds ``DIR/.lock`` (the pid and host of the
process) for as long as it runs. A second process finds the lock, sees that its
owner is alive, and stops with one line; a lock whose owner is gone (killed,
power cut) is stale and is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
from pathlib import Path

__all__ = ["RunLocked", "run_lock", "fresh_run_dir"]

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


@contextlib.contextmanager
def run_lock(directory):
    """Hold ``directory/.lock`` while the block runs; raise :class:`RunLocked` if a live process holds it."""
    path = Path(directory) / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _read_owner(path)
            if pid is not None and (host != socket.gethostname() or _alive(pid)) and pid != os.getpid():
                where = "" if host == socket.gethostname() else f" on {host}"
                raise RunLocked(f"{directory} is in use by another minivae process (pid {pid}{where}); "
                                "wait for it to finish, or choose another --out.") from None
            with contextlib.suppress(FileNotFoundError):   # stale: its owner is gone
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        break
    else:
        raise RunLocked(f"could not take the lock {path}; remove it if no minivae process uses {directory}.")
    try:
        yield path
    finally:
        pid, _ = _read_owner(path)
        if pid == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@contextlib.contextmanager
def fresh_run_dir(directory):
    """Create ``directory`` if needed; if the block fails and it was created here, remove it again.

    Only a directory this call created is removed, and only if it holds
    nothing but what the failed start wrote (no checkpoint): a user's folder is never deleted.
    """
    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, f"--out {directory} exists and is not a directory; "
                                 "choose another --out", str(directory)) from None
    try:
        yield directory
    except BaseException:
        if created and not (directory / "checkpoint.npz").exists():
            shutil.rmtree(directory, ignore_errors=True)
        raise
