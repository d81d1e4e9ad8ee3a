"""Find a data file on disk, or download it once, verified, into the user cache.

Every real data file minivae reads is listed in :data:`REMOTE_FILES` with the
sha256 and the size of its published bytes (the table in
``shared/data/README.md``) and the public addresses it can be downloaded from.
:func:`locate` looks for the file in :func:`~minivae.data.paths.search_dirs`
order (``data_dir`` argument, ``$MINIVAE_DATA``, user cache); only if it is
missing everywhere, and ``download=True``, it calls :func:`fetch`, which
streams the file into ``user_cache_dir()/<subdir>/`` and checks its sha256
before the file appears under its final name. An interrupted download or a
wrong checksum therefore never leaves anything that looks like a complete file,
and the temporary files of killed downloads are removed at the next call.

A download never hangs and never fills the disk: each URL has a total
:data:`DEADLINE` (connection, redirects and body together), it is cut off once
it exceeds the expected size by 10 % plus 64 KiB (:func:`size_cap`), and
redirects are followed only to the hosts listed for the file
(:attr:`RemoteFile.hosts`), never from https down to http. Whatever goes wrong
on the network (an HTTP error, a malformed response, a reset, a refused
redirect) moves on to the next URL, and the error raised when every URL failed
gives one line per URL. ``$MINIVAE_DATA_URL`` replaces the published addresses
with a server of one's own (:func:`~minivae.data.paths.download_base_url`).

Files found on disk are not hashed again on every load (it would cost as much
as reading them); the readers check their structure instead.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..utils import atomic_write, remove_stale_parts
from .paths import DATA_ENV_VAR, DATA_URL_ENV_VAR, download_base_url, search_dirs, user_cache_dir

__all__ = [
    "REMOTE_FILES",
    "RemoteFile",
    "DataNotFoundError",
    "DownloadError",
    "DEADLINE",
    "fetch",
    "locate",
    "sha256_file",
    "size_cap",
]

#: Seconds one URL may take in all (connection, redirects, every byte); then the next URL is tried.
#: 30 minutes: the largest file, binarized_mnist_train.amat (78 MB), at 45 kB/s.
DEADLINE = 1800.0

_CHUNK = 1 << 20  # at most this many bytes read from the network (and hashed) at a time
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
    size : int
        Number of downloaded bytes; a download is cut off at ``size_cap(size)``.
    urls : tuple of str
        Where to download it from, tried in order (canonical first, then mirrors).
    local_names : tuple of str
        Every name accepted on disk, in the order they are looked for
        (e.g. the ``.gz`` file and its uncompressed twin).
    hosts : tuple of str
        The hosts a redirect may lead to: those of ``urls`` and their
        ``www.``/bare twin at the same institution.
    """

    subdir: str
    filename: str
    sha256: str
    size: int
    urls: tuple[str, ...]
    local_names: tuple[str, ...]
    hosts: tuple[str, ...]


def _mnist(name: str, sha256: str, size: int) -> RemoteFile:
    gz = f"{name}.gz"
    return RemoteFile(
        "mnist",
        gz,
        sha256,
        size,
        (f"http://yann.lecun.com/exdb/mnist/{gz}", f"https://ossci-datasets.s3.amazonaws.com/mnist/{gz}"),
        (gz, name),
        ("yann.lecun.com", "ossci-datasets.s3.amazonaws.com"),
    )


def _binarized(split: str, sha256: str, size: int) -> RemoteFile:
    # Larochelle publishes the .amat files uncompressed, so the checksum and the
    # size are those of the decompressed bytes in the README (identical to the originals).
    amat = f"binarized_mnist_{split}.amat"
    return RemoteFile(
        "binarized_mnist",
        amat,
        sha256,
        size,
        (f"http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/{amat}",),
        (amat, f"{amat}.gz"),
        ("www.cs.toronto.edu", "cs.toronto.edu"),
    )


#: Every file the loaders read, keyed by its name without compression suffix.
REMOTE_FILES: dict[str, RemoteFile] = {
    "train-images-idx3-ubyte": _mnist(
        "train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422
    ),
    "train-labels-idx1-ubyte": _mnist(
        "train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881
    ),
    "t10k-images-idx3-ubyte": _mnist(
        "t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877
    ),
    "t10k-labels-idx1-ubyte": _mnist(
        "t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542
    ),
    "binarized_mnist_train": _binarized(
        "train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d", 78400000
    ),
    "binarized_mnist_valid": _binarized(
        "valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2", 15680000
    ),
    "binarized_mnist_test": _binarized(
        "test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c", 15680000
    ),
    "frey_rawface": RemoteFile(
        "frey",
        "frey_rawface.mat",
        "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
        1100584,
        ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",),
        ("frey_rawface.mat",),
        ("cs.nyu.edu", "www.cs.nyu.edu"),
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

    def __init__(self, filename: str, failures: list[str], dest_dir=None):
        self.filename = filename
        self.failures = list(failures)
        by_hand = f", or put the file in {dest_dir} yourself" if dest_dir is not None else ""
        super().__init__(
            f"Could not download {filename}: " + "; ".join(self.failures)
            + f"; check the network connection, set {DATA_URL_ENV_VAR} to a server that has it{by_hand}."
        )

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
    """One URL did not deliver the file: a refused redirect, the deadline, too many bytes, a wrong checksum..."""


def sha256_file(path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def size_cap(size: int) -> int:
    """The most bytes read for a file of ``size`` bytes: 10 % more, plus 64 KiB."""
    return size + size // 10 + (64 << 10)


def _host(url: str) -> str:
    """The lower-case host name of ``url`` ("" if it has none or is malformed)."""
    try:
        return (urllib.parse.urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _redirect_refusal(old_url: str, new_url: str, allowed_hosts) -> str | None:
    """Why a redirect from ``old_url`` to ``new_url`` is not followed, or None if it may be.

    Followed: http or https to a host in ``allowed_hosts`` (ports are not
    compared), keeping https once there (http may move up to https, https
    never comes down to http).
    """
    try:
        new = urllib.parse.urlsplit(new_url)
        new.port  # raises ValueError for a port that is not a number
    except ValueError:
        return f"redirect to the malformed address {new_url!r} refused"
    host = (new.hostname or "").lower()
    if new.scheme not in ("http", "https"):
        return f"redirect to {new_url!r} refused, only http and https are followed"
    if urllib.parse.urlsplit(old_url).scheme == "https" and new.scheme != "https":
        return f"redirect from https down to http://{host} refused"
    if host not in allowed_hosts:
        return f"redirect to {host} refused, the hosts allowed for this file are {', '.join(sorted(allowed_hosts))}"
    return None


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handler, following only what :func:`_redirect_refusal` allows."""

    def __init__(self, allowed_hosts):
        super().__init__()
        self.allowed_hosts = frozenset(allowed_hosts)

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("Location") or headers.get("URI")
        if location is None:
            refusal = f"HTTP {code} redirect without a Location header"
        else:
            try:
                target = urllib.parse.urljoin(req.full_url, location.strip())
            except ValueError:
                target = location
            refusal = _redirect_refusal(req.full_url, target, self.allowed_hosts)
        if refusal is not None:
            fp.close()
            raise _BadDownload(refusal)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _content_length(headers) -> int | None:
    """The Content-Length the server announced, None without one; _BadDownload if malformed."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return None  # the length header must then be ignored (RFC 9112, section 6.3)
    values = {v.strip() for v in headers.get_all("Content-Length") or ()}
    if not values:
        return None
    if len(values) > 1 or not re.fullmatch(r"[0-9]{1,18}", next(iter(values))):
        raise _BadDownload(f"malformed Content-Length header {', '.join(sorted(values))!r}")
    return int(next(iter(values)))


def _download(url: str, dest: Path, sha256: str, timeout: float, deadline: float, cap, allowed_hosts) -> None:
    """Stream ``url`` into ``dest`` through a temporary file; raise unless complete and verified.

    ``cap`` (bytes, or None) and ``deadline`` (seconds from now) bound the
    download; the deadline is checked after the headers and after each read,
    and no single wait lasts more than ``min(timeout, deadline)`` seconds.
    """
    start = time.monotonic()

    def check_deadline(n):
        if time.monotonic() - start > deadline:
            raise _BadDownload(f"abandoned at the {deadline:g} s deadline with {n} bytes received")

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise _BadDownload("not an http:// or https:// URL")
    opener = urllib.request.build_opener(_RedirectPolicy(allowed_hosts))
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with opener.open(request, timeout=min(timeout, deadline)) as response:
        check_deadline(0)
        length = _content_length(response.headers)
        if cap is not None and length is not None and length > cap:
            raise _BadDownload(f"the server announced {length} bytes, more than the {cap} accepted for this file")
        h = hashlib.sha256()
        n = 0
        # atomic_write removes its temporary file if anything below raises,
        # so dest either keeps its old content or gets the verified bytes.
        with atomic_write(dest) as f:
            # read1 returns what one socket read delivers: however slowly the
            # server sends, each call waits at most the timeout.
            while chunk := response.read1(_CHUNK if cap is None else min(_CHUNK, cap + 1 - n)):
                n += len(chunk)
                if cap is not None and n > cap:
                    raise _BadDownload(f"the server sent more than the {cap} bytes accepted for this file")
                h.update(chunk)
                f.write(chunk)
                check_deadline(n)
            if length is not None and n != length:
                raise _BadDownload(f"connection closed after {n} of {length} bytes")
            digest = h.hexdigest()
            if digest != sha256:
                raise _BadDownload(f"sha256 {digest} of the {n} bytes received is not the expected {sha256}")


def _reason(err: BaseException) -> str:
    """A short, one-line reason for a failed URL."""
    if isinstance(err, urllib.error.HTTPError):
        text = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, urllib.error.URLError):
        text = str(err.reason)
    elif isinstance(err, http.client.IncompleteRead):
        text = f"connection closed after {len(err.partial)} bytes"
    elif isinstance(err, http.client.BadStatusLine):
        text = f"not an HTTP response, its first line is {err.line.strip()[:80]!r}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line, whatever the server sent


def _listed_size(sha256: str) -> int | None:
    """The size REMOTE_FILES gives for the file with this sha256, if it lists one."""
    for spec in REMOTE_FILES.values():
        if spec.sha256 == sha256:
            return spec.size
    return None


def fetch(filename: str, urls, sha256: str, dest_dir, timeout: float = 30.0, verbose: bool = True, *,
          size: int | None = None, deadline: float | None = None, allowed_hosts=()) -> Path:
    """Download ``filename`` into ``dest_dir`` from the first URL that delivers it intact.

    Parameters
    ----------
    filename : str
        Name of the file in ``dest_dir``.
    urls : sequence of str
        Full http:// or https:// URLs of the file, tried in order. Anything
        that goes wrong with one (an HTTP error, a timeout, a dropped
        connection, a malformed response, a refused redirect, the deadline,
        too many bytes, a wrong checksum) moves on to the next one.
    sha256 : str
        Expected hex sha256 of the file's bytes.
    dest_dir : str or Path
        Created if needed; temporary files that killed downloads left there
        are removed first (:func:`~minivae.utils.remove_stale_parts`).
    timeout : float
        Seconds to wait for the connection and for each read.
    verbose : bool
        Say on stderr which URL is being downloaded.
    size : int or None
        Expected number of bytes: no more than ``size_cap(size)`` are read,
        and a larger Content-Length is refused before reading. None: the size
        :data:`REMOTE_FILES` lists for this sha256 (no cap for a file it does
        not list).
    deadline : float or None
        Seconds one URL may take in all; None means :data:`DEADLINE` (30 min).
        It is checked after each read, so it is overrun by at most ``timeout``.
    allowed_hosts : iterable of str
        Hosts a redirect may lead to, besides the hosts of ``urls``.

    Returns
    -------
    Path
        ``dest_dir / filename``. If that file already exists with the right
        checksum, it is returned without any network access.

    Raises
    ------
    DownloadError
        Every URL failed; the message lists each URL and why, on one line.
    """
    dest_dir = Path(dest_dir)
    dest = dest_dir / filename
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    # Outside the loop: a cache directory we cannot write to is not a network problem.
    dest_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest_dir)
    size = _listed_size(sha256) if size is None else size
    cap = None if size is None else size_cap(size)
    deadline = DEADLINE if deadline is None else deadline
    urls = list(urls)
    allowed = {h.lower() for h in allowed_hosts} | {_host(u) for u in urls}
    failures = []
    for url in urls:
        if verbose:
            print(f"minivae: downloading {url} -> {dest}", file=sys.stderr)
        try:
            _download(url, dest, sha256, timeout, deadline, cap, allowed)
        except (OSError, http.client.HTTPException, ValueError, _BadDownload) as err:
            # OSError covers URLError, HTTPError, timeouts and resets; urllib and
            # http.client raise ValueError for some malformed addresses.
            failures.append(f"{url} ({_reason(err)})")
            continue
        return dest
    if not failures:
        failures.append("no URL is known for this file")
    raise DownloadError(filename, failures, dest_dir)


def _urls(spec: RemoteFile) -> tuple[str, ...]:
    """Where ``spec`` is downloaded from: ``$MINIVAE_DATA_URL/<subdir>/<filename>`` if set, else its URLs."""
    base = download_base_url()
    if base is None:
        return spec.urls
    return (f"{base}/{spec.subdir}/{spec.filename}",)


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

    Temporary files of killed downloads in ``user_cache_dir()/<subdir>/`` are
    removed on every call, whether or not the file is found elsewhere.

    Parameters
    ----------
    key : str
        E.g. ``"train-images-idx3-ubyte"``, ``"binarized_mnist_test"``, ``"frey_rawface"``.
    data_dir : str, Path or None
        Searched first; then ``$MINIVAE_DATA``; then the user cache.
    download : bool
        If the file is nowhere, download it into ``user_cache_dir()/<subdir>/``,
        from ``$MINIVAE_DATA_URL/<subdir>/<filename>`` if that variable is set,
        else from the file's published URLs.
    timeout : float
        Passed to :func:`fetch`.

    Raises
    ------
    DataNotFoundError
        Names the file, every directory looked in, the URLs tried, and how to
        provide the file.
    ValueError
        ``$MINIVAE_DATA_URL`` is set to something that is not an http(s) URL
        (only when a download is needed).
    """
    spec = REMOTE_FILES[key]
    remove_stale_parts(user_cache_dir() / spec.subdir)
    dirs = search_dirs(data_dir)
    found = _find(spec, dirs)
    if found is not None:
        return found
    failures: list[str] = []
    if download:
        try:
            return fetch(spec.filename, _urls(spec), spec.sha256, user_cache_dir() / spec.subdir, timeout=timeout,
                         size=spec.size, allowed_hosts=spec.hosts)
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
