"""Find a data file on disk, or download it once, verified, into the user cache.

Every real data file minivae reads is listed in :data:`REMOTE_FILES` with the
sha256 of its published bytes (the table in ``shared/data/README.md``) and the
public addresses it can be downloaded from. :func:`locate` looks for the file
in :func:`~minivae.data.paths.search_dirs` order (``data_dir`` argument,
``$MINIVAE_DATA``, user cache); only if it is missing everywhere, and
``download=True``, it calls :func:`fetch`, which streams the file into
``user_cache_dir()/<subdir>/`` and checks its sha256 before the file appears
under its final name. An interrupted download or a wrong checksum therefore
never leaves anything that looks like a complete file.

Files found on disk are not hashed again on every load (it would cost as much
as reading them); the readers check their structure instead.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..utils import atomic_write
from .paths import DATA_ENV_VAR, search_dirs, user_cache_dir

__all__ = [
    "REMOTE_FILES",
    "RemoteFile",
    "DataNotFoundError",
    "DownloadError",
    "fetch",
    "locate",
    "sha256_file",
]

_CHUNK = 1 << 20  # bytes read from the network (and hashed) at a time
_USER_AGENT = "minivae (Python urllib; teaching VAE)"


@dataclass(frozen=True)
class RemoteFile:
    """One published data file: where it lives on disk and on the web.

    Attributes
    ----------
    subdir : str
        Folder inside a data directory (``mnist``, ``binarized_mnist``, ``frey``).
    filename : str
        Name of the file as downloaded (and as stored in the user cache).
    sha256 : str
        Hex sha256 of the downloaded bytes.
    urls : tuple of str
        Where to download it from, tried in order (canonical first, then mirrors).
    local_names : tuple of str
        Every name accepted on disk, in the order they are looked for
        (e.g. the ``.gz`` file and its uncompressed twin).
    """

    subdir: str
    filename: str
    sha256: str
    urls: tuple[str, ...]
    local_names: tuple[str, ...]


def _mnist(name: str, sha256: str) -> RemoteFile:
    gz = f"{name}.gz"
    return RemoteFile(
        "mnist",
        gz,
        sha256,
        (f"http://yann.lecun.com/exdb/mnist/{gz}", f"https://ossci-datasets.s3.amazonaws.com/mnist/{gz}"),
        (gz, name),
    )


def _binarized(split: str, sha256: str) -> RemoteFile:
    # Larochelle publishes the .amat files uncompressed, so the checksum is the
    # one of the decompressed bytes in the README (identical to the originals).
    amat = f"binarized_mnist_{split}.amat"
    return RemoteFile(
        "binarized_mnist",
        amat,
        sha256,
        (f"http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/{amat}",),
        (amat, f"{amat}.gz"),
    )


#: Every file the loaders read, keyed by its name without compression suffix.
REMOTE_FILES: dict[str, RemoteFile] = {
    "train-images-idx3-ubyte": _mnist(
        "train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte": _mnist(
        "train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte": _mnist(
        "t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte": _mnist(
        "t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
    "binarized_mnist_train": _binarized(
        "train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"
    ),
    "binarized_mnist_valid": _binarized(
        "valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"
    ),
    "binarized_mnist_test": _binarized(
        "test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"
    ),
    "frey_rawface": RemoteFile(
        "frey",
        "frey_rawface.mat",
        "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
        ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",),
        ("frey_rawface.mat",),
    ),
}


class DownloadError(OSError):
    """No URL delivered the file with the expected checksum.

    Attributes
    ----------
    filename : str
    failures : list of str
        One ``"<url> (<reason>)"`` entry per URL tried, in order.
    """

    def __init__(self, filename: str, failures: list[str]):
        self.filename = filename
        self.failures = list(failures)
        super().__init__(f"Could not download {filename}: " + "; ".join(self.failures) + ".")

    def __str__(self) -> str:
        return self.args[0]


class DataNotFoundError(FileNotFoundError):
    """A data file is in none of the search directories and could not be downloaded.

    Attributes
    ----------
    filename : str
    searched : list of Path
        Every directory looked in, in order.
    failures : list of str
        The URLs tried and why each failed (empty when ``download=False``).
    """

    def __init__(self, message: str, filename: str, searched: list[Path], failures: list[str]):
        self.filename = filename
        self.searched = list(searched)
        self.failures = list(failures)
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


class _BadDownload(Exception):
    """The server answered, but the bytes are incomplete or not the expected ones."""


def sha256_file(path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, sha256: str, timeout: float) -> None:
    """Stream ``url`` into ``dest`` through a temporary file; raise unless complete and verified."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        h = hashlib.sha256()
        n = 0
        # atomic_write removes its temporary file if anything below raises,
        # so dest either keeps its old content or gets the verified bytes.
        with atomic_write(dest) as f:
            while chunk := response.read(_CHUNK):
                h.update(chunk)
                f.write(chunk)
                n += len(chunk)
            if length is not None and n != int(length):
                raise _BadDownload(f"connection closed after {n} of {int(length)} bytes")
            digest = h.hexdigest()
            if digest != sha256:
                raise _BadDownload(f"sha256 {digest} of the {n} bytes received is not the expected {sha256}")


def _reason(err: BaseException) -> str:
    """A short, one-line reason for a failed URL."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed after {len(err.partial)} bytes"
    return str(err) or type(err).__name__


def fetch(filename: str, urls, sha256: str, dest_dir, timeout: float = 30.0, verbose: bool = True) -> Path:
    """Download ``filename`` into ``dest_dir`` from the first URL that delivers it intact.

    Parameters
    ----------
    filename : str
        Name of the file in ``dest_dir``.
    urls : sequence of str
        Full URLs of the file, tried in order (a 404, a timeout, a dropped
        connection or a wrong checksum moves on to the next one).
    sha256 : str
        Expected hex sha256 of the file's bytes.
    dest_dir : str or Path
        Created if needed.
    timeout : float
        Seconds to wait for the connection and for each read.
    verbose : bool
        Say on stderr which URL is being downloaded.

    Returns
    -------
    Path
        ``dest_dir / filename``. If that file already exists with the right
        checksum, it is returned without any network access.

    Raises
    ------
    DownloadError
        Every URL failed; the message lists each URL and why.
    """
    dest_dir = Path(dest_dir)
    dest = dest_dir / filename
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    # Outside the loop: a cache directory we cannot write to is not a network problem.
    dest_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        if verbose:
            print(f"minivae: downloading {url} -> {dest}", file=sys.stderr)
        try:
            _download(url, dest, sha256, timeout)
        except (OSError, http.client.HTTPException, _BadDownload) as err:
            # OSError covers URLError, HTTPError, timeouts and resets.
            failures.append(f"{url} ({_reason(err)})")
            continue
        return dest
    if not failures:
        failures.append("no URL is known for this file")
    raise DownloadError(filename, failures)


def _find(spec: RemoteFile, dirs: list[Path]) -> Path | None:
    """The first existing ``<dir>/<subdir>/<name>`` over dirs, then over accepted names."""
    for d in dirs:
        for name in spec.local_names:
            path = d / spec.subdir / name
            if path.is_file():
                return path
    return None


def locate(key: str, data_dir=None, download: bool = True, timeout: float = 30.0) -> Path:
    """Path of the data file ``key`` (a key of :data:`REMOTE_FILES`), downloading it if needed.

    Parameters
    ----------
    key : str
        E.g. ``"train-images-idx3-ubyte"``, ``"binarized_mnist_test"``, ``"frey_rawface"``.
    data_dir : str, Path or None
        Searched first; then ``$MINIVAE_DATA``; then the user cache.
    download : bool
        If the file is nowhere, download it into ``user_cache_dir()/<subdir>/``.
    timeout : float
        Passed to :func:`fetch`.

    Raises
    ------
    DataNotFoundError
        Names the file, every directory looked in, the URLs tried, and how to
        provide the file.
    """
    spec = REMOTE_FILES[key]
    dirs = search_dirs(data_dir)
    found = _find(spec, dirs)
    if found is not None:
        return found
    failures: list[str] = []
    if download:
        try:
            return fetch(spec.filename, spec.urls, spec.sha256, user_cache_dir() / spec.subdir, timeout=timeout)
        except DownloadError as err:
            failures = err.failures
            cause = err
    else:
        cause = None
    names = " or ".join(spec.local_names)
    looked = ", ".join(str(d / spec.subdir) for d in dirs)
    tried = "downloading it failed: " + "; ".join(failures) if download else "download=False, so nothing was downloaded"
    message = (
        f"Data file {names} was not found in any of {looked}, and {tried}; "
        f"put the file in <DIR>/{spec.subdir}/ and pass data_dir=<DIR> or set {DATA_ENV_VAR}=<DIR>."
    )
    raise DataNotFoundError(message, spec.filename, dirs, failures) from cause
