"""Finding and downloading data files, against a local HTTP server on 127.0.0.1 only.

The server serves copies of real files made in tmp_path at test time; it runs
in a daemon thread, every socket has a timeout, and it stops at the end of
each test (or after a watchdog delay, whichever comes first). Some routes
misbehave on purpose (slow, oversized, malformed, redirecting); none of them
sends more than a bounded number of bytes.
"""

import contextlib
import dataclasses
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pytest

from minivae.data import DataNotFoundError, DownloadError, fetch, load_frey, load_mnist, locate
from minivae import utils
from minivae.data import download as dl

LABELS = "t10k-labels-idx1-ubyte.gz"  # 4542 bytes: small, real, with a published sha256
LABELS_SHA = dl.REMOTE_FILES["t10k-labels-idx1-ubyte"].sha256
MiB = 1 << 20


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes, each ending in a file name (only its last component is looked up):

    /ok/ the file; /missing/ a 404; /error/ a 500; /drop/ half the file, then hang up;
    /reset/ half the file, then a TCP reset; /garbage/ no HTTP at all;
    /slow/ one byte a second (at most SLOW_BYTES, then hang up); /huge/ zeros without Content-Length (at most 64 MiB);
    /claim-huge/ announces 300 MiB (sends at most 8 MiB); /badlen/<value>/ Content-Length: <value>;
    /redirect/?to=<url> a 302 to <url> (no Location without ?to); /hop/<path> a 302 to /ok/<path>.
    """

    timeout = 5  # seconds per socket operation, so a stuck client cannot hold the thread

    def do_GET(self):
        self.server.hits.append(self.path)
        path_part, _, query = self.path.partition("?")
        route, _, name = path_part.lstrip("/").partition("/")
        if route == "badlen":
            value, _, name = name.partition("/")
            value = urllib.parse.unquote(value)
        if route == "redirect":
            self.send_response(302)
            for to in urllib.parse.parse_qs(query).get("to", []):
                self.send_header("Location", to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route == "hop":
            self.send_response(302)
            self.send_header("Location", f"{self.server.url}/ok/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route == "garbage":
            self.wfile.write(b"HELLO\r\n\r\n")
            return
        if route == "error":
            self.send_error(500)
            return
        if route == "huge":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body ends when the connection does
            self._send_zeros(64 * MiB)
            return
        if route == "claim-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(300 * MiB))
            self.end_headers()
            self._send_zeros(8 * MiB)
            return
        path = self.server.root / name.rpartition("/")[2]
        if route == "missing" or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", value if route == "badlen" else str(len(data)))  # full size for /drop/
        self.end_headers()
        if route == "drop":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True  # the socket closes with half the promised bytes sent
            return
        if route == "reset":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # with linger 0, close sends a TCP reset
            return
        if route == "slow":
            with contextlib.suppress(OSError):  # the client hung up
                for i in range(min(SLOW_BYTES, len(data))):
                    self.wfile.write(data[i: i + 1])
                    self.wfile.flush()
                    time.sleep(1.0)
                self.server.slow_ended = True           # the route ran to its end: no client gave up
            return
        self.wfile.write(data)

    def _send_zeros(self, total):
        block = bytes(64 << 10)
        try:
            while self.server.sent < total:
                self.wfile.write(block)
                self.server.sent += len(block)
        except OSError:  # the client hung up
            return

    def log_message(self, *args):
        pass


SLOW_BYTES = 60   # a minute of /slow/: a client that waits for its end missed its deadline


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up on a misbehaving route is expected here


@pytest.fixture
def server(tmp_path, data_dir):
    """A local server over tmp_path/served, holding copies of two real files."""
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(data_dir / "mnist" / LABELS, root / LABELS)
    shutil.copy(data_dir / "frey" / "frey_rawface.mat", root / "frey_rawface.mat")
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.root = root
    httpd.hits = []
    httpd.sent = 0
    httpd.slow_ended = False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, httpd.shutdown)  # never outlives a hung test by more than a minute
    watchdog.daemon = True
    watchdog.start()
    yield httpd
    watchdog.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port_url():
    """An http://127.0.0.1 URL on which nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Empty data_dir, $MINIVAE_DATA and user cache, so nothing real is found; no $MINIVAE_DATA_URL."""
    dirs = {k: tmp_path / k for k in ("arg", "env", "cache")}
    dirs["arg"].mkdir()
    monkeypatch.delenv("MINIVAE_DATA_URL", raising=False)
    monkeypatch.setenv("MINIVAE_DATA", str(dirs["env"]))
    monkeypatch.setenv("MINIVAE_CACHE", str(dirs["cache"]))
    return dirs


@contextlib.contextmanager
def _umask(value):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def _dead_pid():
    """The pid of a child process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _point(monkeypatch, key, *urls):
    """Make REMOTE_FILES[key] download from ``urls`` (local ones) for this test."""
    spec = dl.REMOTE_FILES[key]
    monkeypatch.setitem(dl.REMOTE_FILES, key, dataclasses.replace(spec, urls=tuple(urls)))


def test_fetch_downloads_verifies_and_caches(server, tmp_path):
    dest = tmp_path / "dest"
    path = fetch(LABELS, [f"{server.url}/ok/{LABELS}"], LABELS_SHA, dest, timeout=5, verbose=False)
    assert path == dest / LABELS
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABELS_SHA
    assert sorted(p.name for p in dest.iterdir()) == [LABELS]  # no temporary file left
    again = fetch(LABELS, [f"{server.url}/ok/{LABELS}"], LABELS_SHA, dest, timeout=5, verbose=False)
    assert again == path and server.hits == [f"/ok/{LABELS}"]  # the second call did not hit the server


def test_fetch_rejects_a_wrong_checksum_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="sha256") as err:
        fetch(LABELS, [f"{server.url}/ok/{LABELS}"], "0" * 64, dest, timeout=5, verbose=False)
    assert LABELS in str(err.value) and server.hits == [f"/ok/{LABELS}"]
    assert list(dest.iterdir()) == []


def test_fetch_dropped_connection_leaves_nothing_that_looks_complete(server, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="connection closed after") as err:
        fetch("frey_rawface.mat", [f"{server.url}/drop/frey_rawface.mat"],
              dl.REMOTE_FILES["frey_rawface"].sha256, dest, timeout=5, verbose=False)
    assert "1100584" in str(err.value)  # names how many bytes were promised
    assert list(dest.iterdir()) == []
    # a later call downloads the complete file instead of trusting a partial one
    path = fetch("frey_rawface.mat", [f"{server.url}/ok/frey_rawface.mat"],
                 dl.REMOTE_FILES["frey_rawface"].sha256, dest, timeout=5, verbose=False)
    assert path.stat().st_size == 1100584
    assert server.hits == ["/drop/frey_rawface.mat", "/ok/frey_rawface.mat"]


def test_fetch_falls_back_to_the_second_mirror(server, tmp_path):
    urls = [f"{server.url}/missing/{LABELS}", f"{server.url}/ok/{LABELS}"]
    path = fetch(LABELS, urls, LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False)
    assert server.hits == [f"/missing/{LABELS}", f"/ok/{LABELS}"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABELS_SHA


def test_fetch_all_urls_fail(server, tmp_path, closed_port_url):
    urls = [f"{closed_port_url}/{LABELS}", f"{server.url}/missing/{LABELS}"]
    with pytest.raises(DownloadError) as err:
        fetch(LABELS, urls, LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False)
    message = str(err.value)
    assert LABELS in message and all(url in message for url in urls) and "HTTP 404" in message
    assert isinstance(err.value, OSError) and err.value.failures[0].startswith(urls[0])
    assert list((tmp_path / "dest").iterdir()) == []


def test_missing_everywhere_names_the_file_dirs_urls_and_remedy(isolated_dirs, closed_port_url, monkeypatch):
    urls = (f"{closed_port_url}/a/frey_rawface.mat", f"{closed_port_url}/b/frey_rawface.mat")
    _point(monkeypatch, "frey_rawface", *urls)
    with pytest.raises(DataNotFoundError) as err:
        load_frey(data_dir=isolated_dirs["arg"])
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in message
    assert "frey_rawface.mat" in message and all(url in message for url in urls)
    for d in isolated_dirs.values():
        assert str(d / "frey") in message
    assert "MINIVAE_DATA" in message and "data_dir" in message
    assert err.value.searched == [isolated_dirs["arg"], isolated_dirs["env"], isolated_dirs["cache"]]
    assert list((isolated_dirs["cache"] / "frey").iterdir()) == []  # nothing half-downloaded


def test_download_false_does_not_touch_the_network(isolated_dirs, server, monkeypatch):
    _point(monkeypatch, "frey_rawface", f"{server.url}/ok/frey_rawface.mat")
    with pytest.raises(DataNotFoundError, match="download=False"):
        load_frey(data_dir=isolated_dirs["arg"], download=False)
    assert server.hits == [] and not isolated_dirs["cache"].exists()


def test_missing_file_is_downloaded_into_the_user_cache_once(isolated_dirs, server, data_dir, monkeypatch):
    _point(monkeypatch, "frey_rawface", f"{server.url}/missing/frey_rawface.mat", f"{server.url}/ok/frey_rawface.mat")
    X = load_frey("all", data_dir=isolated_dirs["arg"])
    assert X.shape == (1965, 560)
    assert (isolated_dirs["cache"] / "frey" / "frey_rawface.mat").is_file()
    np.testing.assert_array_equal(X, load_frey("all", data_dir=data_dir, download=False))
    load_frey("test", data_dir=isolated_dirs["arg"])  # found in the cache now
    assert server.hits == ["/missing/frey_rawface.mat", "/ok/frey_rawface.mat"]


def test_search_order_argument_then_env_then_cache(tmp_path, monkeypatch):
    dirs = [tmp_path / k for k in ("arg", "env", "cache")]
    for d in dirs:
        (d / "frey").mkdir(parents=True)
        (d / "frey" / "frey_rawface.mat").write_bytes(b"x")
    monkeypatch.setenv("MINIVAE_DATA", str(dirs[1]))
    monkeypatch.setenv("MINIVAE_CACHE", str(dirs[2]))
    assert locate("frey_rawface", data_dir=dirs[0], download=False) == dirs[0] / "frey" / "frey_rawface.mat"
    assert locate("frey_rawface", download=False) == dirs[1] / "frey" / "frey_rawface.mat"
    monkeypatch.delenv("MINIVAE_DATA")
    assert locate("frey_rawface", download=False) == dirs[2] / "frey" / "frey_rawface.mat"


def test_mnist_gz_is_preferred_but_uncompressed_accepted(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    monkeypatch.setenv("MINIVAE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "mnist").mkdir()
    raw = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    raw.write_bytes(b"x")
    assert locate("t10k-labels-idx1-ubyte", data_dir=tmp_path, download=False) == raw
    gz = tmp_path / "mnist" / LABELS
    gz.write_bytes(b"x")
    assert locate("t10k-labels-idx1-ubyte", data_dir=tmp_path, download=False) == gz


def test_checksum_table_matches_the_real_files(data_dir):
    """The sha256 table in download.py is the README's, checked against the real bytes."""
    for key, spec in dl.REMOTE_FILES.items():
        path = locate(key, data_dir=data_dir, download=False)
        data = path.read_bytes()
        if spec.filename.endswith(".amat") and path.name.endswith(".gz"):
            data = gzip.decompress(data)  # Larochelle publishes the .amat uncompressed
        assert hashlib.sha256(data).hexdigest() == spec.sha256, key
        assert len(data) == spec.size, key


def test_canonical_urls_and_mirrors():
    mnist = dl.REMOTE_FILES["train-images-idx3-ubyte"]
    assert mnist.urls == ("http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
                          "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz")
    assert dl.REMOTE_FILES["frey_rawface"].urls == ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",)
    assert dl.REMOTE_FILES["binarized_mnist_valid"].urls[0].endswith("binarized_mnist/binarized_mnist_valid.amat")
    for key, spec in dl.REMOTE_FILES.items():  # every URL's host may be redirected to
        assert {urllib.parse.urlsplit(u).hostname for u in spec.urls} <= set(spec.hosts), key


def test_load_mnist_missing_with_download_false(isolated_dirs):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz or t10k-images-idx3-ubyte"):
        load_mnist("test", data_dir=isolated_dirs["arg"], download=False)


# --------------------------------------------------------------------------
# A download never hangs, never reads far more than the file, and never
# follows a redirect it should not.
# --------------------------------------------------------------------------

def test_a_server_sending_one_byte_a_second_is_abandoned_at_the_deadline(server, tmp_path):
    urls = [f"{server.url}/slow/{LABELS}", f"{server.url}/ok/{LABELS}"]
    t0 = time.monotonic()
    path = fetch(LABELS, urls, LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False, deadline=2.0)
    assert time.monotonic() - t0 >= 2.0 and not server.slow_ended   # at the deadline, not at the route's end
    assert server.hits == [f"/slow/{LABELS}", f"/ok/{LABELS}"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABELS_SHA


def test_the_module_deadline_applies_to_locate_and_is_named_in_the_error(isolated_dirs, server, monkeypatch,
                                                                        closed_port_url):
    _point(monkeypatch, "frey_rawface", f"{closed_port_url}/frey_rawface.mat")
    monkeypatch.setenv("MINIVAE_DATA_URL", f"{server.url}/slow")
    monkeypatch.setattr(dl, "DEADLINE", 1.5, raising=False)
    t0 = time.monotonic()
    with pytest.raises(DataNotFoundError) as err:
        locate("frey_rawface", data_dir=isolated_dirs["arg"])
    assert time.monotonic() - t0 >= 1.5 and not server.slow_ended   # at the deadline, not at the route's end
    message = str(err.value)
    assert "\n" not in message and f"{server.url}/slow/frey/frey_rawface.mat" in message
    assert "1.5 s deadline" in message
    assert list((isolated_dirs["cache"] / "frey").iterdir()) == []


def test_a_body_far_larger_than_the_file_is_cut_off_early(server, tmp_path):
    cap = dl.size_cap(dl.REMOTE_FILES["t10k-labels-idx1-ubyte"].size)
    assert 4542 < cap < 100_000
    with pytest.raises(DownloadError, match=f"more than the {cap} bytes accepted") as err:
        fetch(LABELS, [f"{server.url}/huge/{LABELS}"], LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False)
    assert "\n" not in str(err.value)
    assert server.sent < 48 * MiB  # the client hung up long before the 64 MiB body ended
    assert list((tmp_path / "dest").iterdir()) == []


def test_a_content_length_above_the_cap_is_refused_before_reading(server, tmp_path):
    urls = [f"{server.url}/claim-huge/{LABELS}", f"{server.url}/ok/{LABELS}"]
    with pytest.raises(DownloadError, match=f"announced {300 * MiB} bytes, more than the {dl.size_cap(1000)} accepted"):
        fetch(LABELS, urls[:1], LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False, size=1000)
    assert dl.size_cap(1000) == 1000 + 100 + 65536
    with pytest.raises(DownloadError, match=f"announced {300 * MiB} bytes"):
        fetch(LABELS, urls[:1], LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False)  # size from REMOTE_FILES
    assert list((tmp_path / "dest").iterdir()) == []
    path = fetch(LABELS, urls, LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False)  # then the next mirror
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABELS_SHA


ODDITIES = {
    "Content-Length abc": f"badlen/abc/{LABELS}",
    "negative Content-Length": f"badlen/-5/{LABELS}",
    "Content-Length 4.5e3": f"badlen/4.5e3/{LABELS}",
    "malformed redirect": "redirect/?to=" + urllib.parse.quote("http://[::1"),
    "redirect without Location": "redirect/",
    "redirect to ftp": "redirect/?to=" + urllib.parse.quote(f"ftp://127.0.0.1/{LABELS}"),
    "not HTTP": f"garbage/{LABELS}",
    "connection reset": f"reset/{LABELS}",
    "HTTP 500": f"error/{LABELS}",
}


@pytest.mark.parametrize("route", ODDITIES.values(), ids=ODDITIES.keys())
def test_every_http_oddity_moves_on_to_the_next_url(server, tmp_path, route):
    urls = [f"{server.url}/{route}", f"{server.url}/ok/{LABELS}"]
    path = fetch(LABELS, urls, LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABELS_SHA
    assert server.hits == [f"/{route}", f"/ok/{LABELS}"]


def test_when_every_url_is_odd_the_error_is_one_line_naming_each(server, tmp_path):
    urls = [f"{server.url}/{route}" for route in ODDITIES.values()]
    with pytest.raises(DownloadError) as err:
        fetch(LABELS, urls, LABELS_SHA, tmp_path / "dest", timeout=5, verbose=False)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message and message.startswith(f"Could not download {LABELS}: ")
    assert len(err.value.failures) == len(urls)
    assert all(f.startswith(url + " (") for f, url in zip(err.value.failures, urls))
    assert "malformed Content-Length header 'abc'" in message and "HTTP 500" in message
    assert "MINIVAE_DATA_URL" in message and str(tmp_path / "dest") in message  # what to do
    assert list((tmp_path / "dest").iterdir()) == []


def test_redirects_are_followed_only_to_allowed_hosts(server, tmp_path):
    port = server.server_address[1]
    same_host = f"{server.url}/redirect/?to=" + urllib.parse.quote(f"{server.url}/ok/{LABELS}")
    other_host = f"{server.url}/redirect/?to=" + urllib.parse.quote(f"http://localhost:{port}/ok/{LABELS}")
    path = fetch(LABELS, [same_host], LABELS_SHA, tmp_path / "a", timeout=5, verbose=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABELS_SHA
    assert server.hits[-1] == f"/ok/{LABELS}"

    n_hits = len(server.hits)
    refused = "redirect to localhost refused, the hosts allowed for this file are 127.0.0.1"
    with pytest.raises(DownloadError, match=refused):
        fetch(LABELS, [other_host], LABELS_SHA, tmp_path / "b", timeout=5, verbose=False)
    assert len(server.hits) == n_hits + 1  # the redirect was asked for, its target never

    path = fetch(LABELS, [other_host], LABELS_SHA, tmp_path / "c", timeout=5, verbose=False,
                 allowed_hosts=["localhost"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABELS_SHA


def test_the_redirect_policy():
    allowed = {"cs.nyu.edu", "www.cs.nyu.edu"}
    ok = dl._redirect_refusal
    assert ok("http://cs.nyu.edu/a", "https://www.cs.nyu.edu/a", allowed) is None  # up to https is fine
    assert ok("https://cs.nyu.edu/a", "https://CS.NYU.EDU:8443/b", allowed) is None  # host names, not ports
    assert "from https down to http://cs.nyu.edu refused" in ok("https://cs.nyu.edu/a", "http://cs.nyu.edu/a", allowed)
    assert "redirect to evil.example refused" in ok("https://cs.nyu.edu/a", "https://evil.example/a", allowed)
    assert "only http and https" in ok("http://cs.nyu.edu/a", "file:///etc/passwd", allowed)
    assert "malformed" in ok("http://cs.nyu.edu/a", "http://cs.nyu.edu:port/a", allowed)


def test_data_url_env_var_replaces_the_published_urls(isolated_dirs, server, monkeypatch, closed_port_url, data_dir):
    _point(monkeypatch, "frey_rawface", f"{closed_port_url}/frey_rawface.mat")  # never tried
    monkeypatch.setenv("MINIVAE_DATA_URL", f"{server.url}/ok/")
    X = load_frey("all", data_dir=isolated_dirs["arg"])
    np.testing.assert_array_equal(X, load_frey("all", data_dir=data_dir, download=False))
    assert server.hits == ["/ok/frey/frey_rawface.mat"]
    assert (isolated_dirs["cache"] / "frey" / "frey_rawface.mat").is_file()


def test_data_url_server_may_redirect_within_its_host_only(isolated_dirs, server, monkeypatch, closed_port_url):
    for key in ("t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        _point(monkeypatch, key, f"{closed_port_url}/{key}.gz")  # never tried
    port = server.server_address[1]
    monkeypatch.setenv("MINIVAE_DATA_URL", f"{server.url}/hop")  # /hop/... redirects to 127.0.0.1/ok/...
    assert locate("t10k-labels-idx1-ubyte", data_dir=isolated_dirs["arg"]).name == LABELS
    assert server.hits == [f"/hop/mnist/{LABELS}", f"/ok/mnist/{LABELS}"]
    monkeypatch.setenv("MINIVAE_DATA_URL", f"http://localhost:{port}/hop")  # now the redirect changes host
    with pytest.raises(DataNotFoundError, match="redirect to 127.0.0.1 refused"):
        locate("t10k-images-idx3-ubyte", data_dir=isolated_dirs["arg"])


@pytest.mark.parametrize("value", ["ftp://10.0.0.5/data", "localhost:8000", "http://", "http://host:port/"])
def test_a_malformed_data_url_is_one_clear_error(isolated_dirs, monkeypatch, value, closed_port_url):
    _point(monkeypatch, "frey_rawface", f"{closed_port_url}/frey_rawface.mat")  # never tried
    monkeypatch.setenv("MINIVAE_DATA_URL", value)
    with pytest.raises(DataNotFoundError, match="download=False"):
        locate("frey_rawface", data_dir=isolated_dirs["arg"], download=False)  # not needed, not read
    with pytest.raises(ValueError) as err:
        locate("frey_rawface", data_dir=isolated_dirs["arg"])
    message = str(err.value)
    assert "\n" not in message and f"MINIVAE_DATA_URL={value!r}" in message and "unset it" in message


# --------------------------------------------------------------------------
# Files in the cache
# --------------------------------------------------------------------------

def test_stale_parts_of_a_killed_download_are_removed_at_the_next_start(isolated_dirs, server, monkeypatch):
    frey_cache = isolated_dirs["cache"] / "frey"
    frey_cache.mkdir(parents=True)
    stale = frey_cache / f".frey_rawface.mat.{utils._HOST}.{_dead_pid()}.0badc0de.part"
    stale.write_bytes(b"half a download")
    live = frey_cache / f".frey_rawface.mat.{utils._HOST}.{os.getpid()}.0badc0de.part"
    live.write_bytes(b"another download, still running")
    (isolated_dirs["arg"] / "frey").mkdir()
    shutil.copy(server.root / "frey_rawface.mat", isolated_dirs["arg"] / "frey")
    locate("frey_rawface", data_dir=isolated_dirs["arg"], download=False)  # found elsewhere, cache cleaned anyway
    assert sorted(p.name for p in frey_cache.iterdir()) == [live.name]

    mnist_cache = isolated_dirs["cache"] / "mnist"
    mnist_cache.mkdir()
    (mnist_cache / f".{LABELS}.{utils._HOST}.{_dead_pid()}.0badc0de.part").write_bytes(b"x")
    fetch(LABELS, [f"{server.url}/ok/{LABELS}"], LABELS_SHA, mnist_cache, timeout=5, verbose=False)
    assert sorted(p.name for p in mnist_cache.iterdir()) == [LABELS]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_a_downloaded_file_gets_the_mode_the_umask_allows(server, tmp_path):
    with _umask(0o002):  # a cache shared by a group: group members may replace files too
        path = fetch(LABELS, [f"{server.url}/ok/{LABELS}"], LABELS_SHA, tmp_path / "shared", timeout=5, verbose=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    with _umask(0o022):
        path = fetch(LABELS, [f"{server.url}/ok/{LABELS}"], LABELS_SHA, tmp_path / "mine", timeout=5, verbose=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
