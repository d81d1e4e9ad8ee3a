"""Finding and downloading data files, against a local HTTP server on 127.0.0.1 only.

The server serves copies of real files made in tmp_path at test time; it runs
in a daemon thread, every socket has a timeout, and it stops at the end of
each test (or after a watchdog delay, whichever comes first).
"""

import dataclasses
import gzip
import hashlib
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest

from minivae.data import DataNotFoundError, DownloadError, fetch, load_frey, load_mnist, locate
from minivae.data import download as dl

LABELS = "t10k-labels-idx1-ubyte.gz"  # 4542 bytes: small, real, with a published sha256
LABELS_SHA = dl.REMOTE_FILES["t10k-labels-idx1-ubyte"].sha256


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /ok/<name> the file; /missing/<name> a 404; /drop/<name> half the file, then hang up."""

    timeout = 5  # seconds per socket operation, so a stuck client cannot hold the thread

    def do_GET(self):
        self.server.hits.append(self.path)
        route, _, name = self.path.lstrip("/").partition("/")
        path = self.server.root / name
        if route == "missing" or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))  # the full size, even for /drop/
        self.end_headers()
        if route == "drop":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True  # the socket closes with half the promised bytes sent
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, data_dir):
    """A local server over tmp_path/served, holding copies of two real files."""
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(data_dir / "mnist" / LABELS, root / LABELS)
    shutil.copy(data_dir / "frey" / "frey_rawface.mat", root / "frey_rawface.mat")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.root = root
    httpd.hits = []
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
    """Empty data_dir, $MINIVAE_DATA and user cache, so nothing real is found."""
    dirs = {k: tmp_path / k for k in ("arg", "env", "cache")}
    dirs["arg"].mkdir()
    monkeypatch.setenv("MINIVAE_DATA", str(dirs["env"]))
    monkeypatch.setenv("MINIVAE_CACHE", str(dirs["cache"]))
    return dirs


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


def test_canonical_urls_and_mirrors():
    mnist = dl.REMOTE_FILES["train-images-idx3-ubyte"]
    assert mnist.urls == ("http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
                          "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz")
    assert dl.REMOTE_FILES["frey_rawface"].urls == ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",)
    assert dl.REMOTE_FILES["binarized_mnist_valid"].urls[0].endswith("binarized_mnist/binarized_mnist_valid.amat")


def test_load_mnist_missing_with_download_false(isolated_dirs):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz or t10k-images-idx3-ubyte"):
        load_mnist("test", data_dir=isolated_dirs["arg"], download=False)
