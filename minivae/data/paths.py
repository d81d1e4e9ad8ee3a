"""Where minivae looks for data files, in order.

1. an explicit ``data_dir`` argument;
2. the directory named by the environment variable ``MINIVAE_DATA``;
3. a per-user cache: ``$MINIVAE_CACHE``, else ``$XDG_CACHE_HOME/minivae``,
   else ``~/.cache/minivae``. Downloads and generated data go here.

Each directory has the layout of the published files: ``mnist/``,
``binarized_mnist/``, ``frey/`` (and ``digits-synthetic/`` in the cache).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "MINIVAE_DATA"
CACHE_ENV_VAR = "MINIVAE_CACHE"


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
