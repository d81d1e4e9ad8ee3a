"""Small helpers every layer of minivae may use: randomness, input checks, safe writes.

This module sits at the bottom of the package and imports nothing from it.
"""

from __future__ import annotations

import contextlib
import errno
import math
import numbers
import os
import re
import secrets
import socket
import stat
import time
from pathlib import Path

import numpy as np

__all__ = [
    "as_generator",
    "atomic_write",
    "check_matrix",
    "check_scalar",
    "CorruptFileError",
    "remove_stale_parts",
]


class CorruptFileError(ValueError):
    """A file exists but its contents are not what its format promises."""


def as_generator(random_state=None) -> np.random.Generator:
    """Resolve ``random_state`` (None, an int or a Generator) to a Generator, once.

    Every stochastic function in minivae takes a Generator; no global
    ``np.random.*`` state is ever used, so every run is reproducible from its seeds.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise TypeError(
        f"random_state must be None, an int or a numpy Generator, not {type(random_state).__name__}."
    )


def check_matrix(x, name: str = "x", n_cols: int | None = None, support: str = "real"):
    """Check that ``x`` is a finite 2-D float array; return it unchanged.

    Parameters
    ----------
    x : ndarray, shape (M, D)
    name : str
        How the error message calls the array.
    n_cols : int or None
        The expected D, if known.
    support : {"real", "unit"}
        ``"unit"`` also requires every value in [0, 1] (the Bernoulli decoder's support).

    Raises
    ------
    ValueError
        One sentence naming what is wrong and what to do.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (M, D), one row per datapoint; got shape {x.shape}."
            + (" Flatten images first, e.g. x.reshape(len(x), -1)." if x.ndim > 2 else "")
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"{name} must hold floats (float32 or float64), not {x.dtype}; "
            "for uint8 images use x.astype(np.float32) / 255."
        )
    if n_cols is not None and x.shape[1] != n_cols:
        raise ValueError(f"{name} has {x.shape[1]} columns but the model expects D = {n_cols}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows).")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the data before use.")
    if support == "unit":
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} has values in [{lo:g}, {hi:g}] but the Bernoulli decoder needs pixels in [0, 1]; "
                "rescale the data (e.g. divide by 255) or use the Gaussian decoder."
            )
    return x


def check_scalar(value, name: str, kind=int, *, min_val=None, max_val=None, include_boundaries: str = "both",
                 allow_none: bool = False):
    """Check that ``value`` is one number of ``kind`` within the bounds; return it unchanged.

    The one check of every scalar setting (as scikit-learn's ``check_scalar``),
    made once where the value enters: the command line, the configuration,
    :func:`minivae.train.fit`, a constructor.

    Parameters
    ----------
    value : the number to check
    name : str
        How the error message calls it (``"M"``, ``"--jobs"``, ``"the learning rate"``).
    kind : int or float
        ``int``: an integer (Python or NumPy; a bool is not one). ``float``: a
        finite real number (an integer too).
    min_val, max_val : number or None
        The bounds, if any.
    include_boundaries : {"both", "left", "right", "neither"}
        Which bounds the value may equal.
    allow_none : bool
        Whether None stands for "not given" (all points, no budget) and passes
        (the message, for a value given, does not mention it).

    Raises
    ------
    ValueError
        One sentence: ``"<name> must be <what>; got <value>."``
    """
    if value is None and allow_none:
        return value
    left = include_boundaries in ("both", "left")
    right = include_boundaries in ("both", "right")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
        ok = False
    elif kind is not int and not math.isfinite(value):
        ok = False
    else:
        ok = ((min_val is None or (value >= min_val if left else value > min_val))
              and (max_val is None or (value <= max_val if right else value < max_val)))
    if not ok:
        raise ValueError(f"{name} must be {_requirement(kind, min_val, max_val, left, right)}; got {value!r}.")
    return value


def _requirement(kind, min_val, max_val, left, right):
    """What :func:`check_scalar` asks for, in words: "a positive integer", "a finite number > 0", ..."""
    if min_val is not None and max_val is not None:
        what = "an integer" if kind is int else "a number"
        return f"{what} in {'[' if left else '('}{min_val}, {max_val}{']' if right else ')'}"
    if kind is int and max_val is None and left and min_val in (0, 1):
        return "a non-negative integer" if min_val == 0 else "a positive integer"
    what = "an integer" if kind is int else "a finite number"
    if min_val is not None:
        return f"{what} {'>=' if left else '>'} {min_val}"
    if max_val is not None:
        return f"{what} {'<=' if right else '<'} {max_val}"
    return what


#: A temporary file untouched for this long (seconds) is stale even if its writer seems alive.
STALE_PART_AGE = 24 * 3600.0

# The first label of this machine's name, with only [A-Za-z0-9-] kept: it goes into
# temporary file names so that a pid is only ever checked on the machine it belongs to
# (a cache on a network disk is shared by several machines).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "localhost"

# .<name>.<host>.<pid>.<random hex>.part; <name> may itself contain dots, the rest cannot.
_PART = re.compile(r"^\.(?P<rest>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]+\.part$")


def _open_part(path: Path) -> tuple[int, Path]:
    """Create ``.<name>.<host>.<pid>.<random>.part`` beside ``path``; return (fd, its path).

    The file is created with mode 0o666, which the umask then narrows, exactly
    as a plain ``open(path, "w")`` would (``tempfile.mkstemp`` would force 0o600).
    """
    while True:
        tmp = path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.part"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:  # 1 chance in 4 billion: draw another name
            continue


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success move it onto ``path``.

    The rename is atomic on POSIX and Windows, so a reader sees either the
    previous file or the complete new one, never a half-written file, even if
    the process is killed mid-write. On an exception the temporary file is
    removed and ``path`` is left as it was.

    The new file gets the permissions a plain ``open`` would give it: those
    of the file it replaces, else 0o666 narrowed by the umask (0o644 under
    the usual umask 022, 0o664 under 002 for a cache shared by a group).

    The temporary file is ``.<name>.<host>.<pid>.<random>.part``: if the
    process is killed before the rename, :func:`remove_stale_parts` can tell
    later that its writer is gone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        keep_mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        keep_mode = None
    fd, tmp = _open_part(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep_mode is not None:
            os.chmod(tmp, keep_mode)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and getattr(e, "filename", None) is None:
            hint = "; free some space or choose another folder" if e.errno == errno.ENOSPC else ""
            raise OSError(e.errno, f"{e.strerror or e} while writing {path}{hint}") from e   # name the file
        raise


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when it cannot be told)."""
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_parts(directory, max_age: float | None = None) -> list[Path]:
    """Delete the temporary ``.part`` files that killed writers left in ``directory``.

    :func:`atomic_write` (and so every download, checkpoint and run file) writes
    to ``.<name>.<host>.<pid>.<random>.part`` and renames it when complete; a
    process killed in between leaves that file behind. A ``.part`` file is
    removed when it was written on this machine by a process that no longer
    exists, or when it has not been modified for ``max_age`` seconds (the
    writer's pid may have been reused, or the file comes from another machine,
    or from an older minivae without the pid in the name). The temporary files
    of live writers are left alone. The directory is not searched recursively;
    files that cannot be removed (another user's) are skipped.

    Parameters
    ----------
    directory : str or Path
        A folder; one that does not exist or cannot be read is left alone.
    max_age : float or None
        Seconds; None means :data:`STALE_PART_AGE` (one day).

    Returns
    -------
    list of Path
        The files removed.
    """
    max_age = STALE_PART_AGE if max_age is None else max_age
    try:
        entries = list(os.scandir(directory))
    except OSError:  # missing, not a folder, or not ours to read: nothing to clean
        return []
    now = time.time()
    removed = []
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".part")):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:  # its writer just renamed or removed it
            continue
        m = _PART.match(entry.name)
        ours = m is not None and m["rest"].endswith(f".{_HOST}")
        if age > max_age or (ours and not _pid_alive(int(m["pid"]))):
            try:
                os.unlink(entry.path)
            except OSError:  # gone already, or another user's file
                continue
            removed.append(Path(entry.path))
    return removed
