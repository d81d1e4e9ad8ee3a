"""Where minivae looks for data files, in order.

1. an explicit ``data_dir`` argument;
2. the directory named by the environment variable ``MINIVAE_DATA``;
3. a per-user cache: ``$MINIVAE_CACHE``, else ``$XDG_CACHE_HOME/minivae``,
   else ``~/.cache/minivae``. Downloads and generated data go here.

Each directory has the layout of the published files: ``mnist/``,
``binarized_mnist/``, ``frey/`` (and ``digits-synthetic/`` in the cache).

A file found nowhere is downloaded into the cache, from its published
addresses or, if ``MINIVAE_DATA_URL`` is set, from a server with the same
layout (see :func:`download_base_url`).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

DATA_ENV_VAR = "MINIVAE_DATA"
CACHE_ENV_VAR = "MINIVAE_CACHE"
DATA_URL_ENV_VAR = "MINIVAE_DATA_URL"


def user_cache_dir() -> Path:
    """The per-user cache directory (not created here)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "minivae"


def search_dirs(data_dir=None) -> list[Path]:
    """The directories searched for data files, most specific first."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(user_cache_dir())
    return dirs


def download_base_url() -> str | None:
    """The base URL of ``$MINIVAE_DATA_URL`` without a trailing slash, or None if it is unset.

    When set, it replaces every published address: the file ``<subdir>/<name>``
    is downloaded from ``$MINIVAE_DATA_URL/<subdir>/<name>`` only, e.g.
    ``http://10.0.0.5:8000/mnist/train-images-idx3-ubyte.gz``. A classroom
    without internet serves a copy of the data folder (``python -m http.server``
    in it) and points this variable at it; the tests use it the same way.
    The files are still checked against their sha256.

    Raises
    ------
    ValueError
        The variable is set but is not an http:// or https:// URL.
    """
    env = os.environ.get(DATA_URL_ENV_VAR, "").strip()
    if not env:
        return None
    try:
        parts = urllib.parse.urlsplit(env)
        parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            f"{DATA_URL_ENV_VAR}={env!r} is not an http:// or https:// base URL; set it to the address of a folder "
            f"holding mnist/, binarized_mnist/ and frey/ (e.g. http://10.0.0.5:8000) or unset it."
        )
    return env.rstrip("/")
