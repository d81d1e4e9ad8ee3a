"""Files minivae writes: permissions, temporary files left by killed writers, and the project's own files."""

import contextlib
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from minivae import utils
from minivae.utils import atomic_write, remove_stale_parts

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = 24 * 3600


@contextlib.contextmanager
def umask(value):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def dead_pid():
    """The pid of a child process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not utils._pid_alive(child.pid)
    return child.pid


def parts(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["022", "002", "077"])
def test_atomic_write_gives_the_mode_a_plain_open_gives(tmp_path, mask, expected):
    with umask(mask):
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    assert mode_of(tmp_path / "new.bin") == mode_of(tmp_path / "plain.bin") == expected


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    with umask(0o022):
        with atomic_write(path, "w") as f:
            f.write('{"a": 1}')
    assert path.read_text() == '{"a": 1}' and mode_of(path) == 0o640


def test_the_temporary_file_names_host_and_pid_and_goes_away(tmp_path):
    path = tmp_path / "run.v1.npz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"new")
            (name,) = parts(tmp_path)
            m = re.fullmatch(r"\.run\.v1\.npz\.([A-Za-z0-9-]+)\.([0-9]+)\.[0-9a-f]{8}\.part", name)
            assert m and m[1] == utils._HOST and int(m[2]) == os.getpid()
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old" and parts(tmp_path) == []


def test_remove_stale_parts_removes_dead_writers_and_old_files_only(tmp_path):
    host, now = utils._HOST, time.time()
    files = {
        "dead": f".mnist.gz.{host}.{dead_pid()}.0a1b2c3d.part",    # this machine, writer gone
        "alive": f".mnist.gz.{host}.{os.getpid()}.0a1b2c3d.part",  # this machine, writer running
        "other_host": f".mnist.gz.elsewhere.{dead_pid()}.0a1b2c3d.part",  # cannot check its pid here
        "other_host_old": f".frey.mat.elsewhere.123.0a1b2c3d.part",
        "old_style": ".mnist.gz.k2j_x9qz.part",                    # tempfile.mkstemp name, no pid
        "old_style_old": ".frey.mat.k2j_x9qz.part",
        "target": "mnist.gz",
        "not_hidden": "notes.part",
        "hidden": ".notes",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"x")
    for key in ("other_host_old", "old_style_old"):
        os.utime(tmp_path / files[key], (now - 2 * DAY, now - 2 * DAY))
    (tmp_path / ".dir.part").mkdir()  # not a file: left alone

    removed = remove_stale_parts(tmp_path)

    assert sorted(p.name for p in removed) == sorted(files[k] for k in ("dead", "other_host_old", "old_style_old"))
    kept = {"alive", "other_host", "old_style", "target", "not_hidden", "hidden"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([files[k] for k in kept] + [".dir.part"])
    # a live writer's file goes too once it has not been touched for max_age seconds
    assert [p.name for p in remove_stale_parts(tmp_path, max_age=-1) if p.name == files["alive"]] == [files["alive"]]


def test_remove_stale_parts_on_a_missing_directory_does_nothing(tmp_path):
    assert remove_stale_parts(tmp_path / "absent") == []


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_a_writer_killed_mid_write_leaves_a_part_that_the_next_start_removes(tmp_path):
    target = tmp_path / "checkpoint.npz"
    code = ("import os, signal, sys; from minivae.utils import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n"
            "    f.write(b'half'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=REPO_ROOT)
    assert child.wait(timeout=60) == -9
    (left,) = parts(tmp_path)
    assert not target.exists() and left.startswith(f".checkpoint.npz.{utils._HOST}.{child.pid}.")
    assert [p.name for p in remove_stale_parts(tmp_path)] == [left]
    assert list(tmp_path.iterdir()) == []


def test_license_and_citation():
    with open(os.path.join(REPO_ROOT, "LICENSE")) as f:
        license_text = f.read()
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 the minivae authors" in license_text
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(REPO_ROOT, "CITATION.cff")) as f:
        cff = yaml.safe_load(f)
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "minivae" and cff["license"] == "MIT"
    assert cff["authors"] and cff["message"]
    (paper,) = [r for r in cff["references"] if r["title"] == "Auto-Encoding Variational Bayes"]
    assert [a["family-names"] for a in paper["authors"]] == ["Kingma", "Welling"] and paper["year"] == 2013
    assert "1312.6114" in paper["url"] and "ICLR 2014" in paper["conference"]["name"]
