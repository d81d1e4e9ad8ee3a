"""A run survives anything (issue 11): real ``minivae train`` processes killed at random moments and
resumed, Ctrl-C and SIGTERM, two processes on one run directory, and one clear line for every bad
flag or damaged file. docs/reliability.md tabulates what each test tries and what minivae does.

The runs train on the generated digits (``--preset digits``), generated once per session into a
temporary ``MINIVAE_CACHE``; the subprocesses run one BLAS thread each, as the machine is shared.
"""

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minivae.checkpoint import load_checkpoint
from minivae.run.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

# The kill-and-resume runs: 1.2 epochs of 200 steps (an epoch boundary at step 200), a checkpoint
# every 40 steps, five recorded bounds.
TRAIN = ["train", "--preset", "digits", "-H", "16", "-J", "2", "--epochs", "1.2", "--checkpoint-every", "0.2",
         "--eval-points", "5", "--eval-train-size", "2000", "--no-progress", "--no-figures", "--threads", "1"]
# (one thread everywhere: BLAS may sum in another order with another thread count, and these runs are compared bit
# for bit with a reference; a resumed run keeps its own count by itself, test_a_resumed_run_keeps_its_thread_count)
CASES = {"adagrad-B": [],
         "adam-A-dynamic": ["--optimizer", "adam", "--lr", "0.001", "--estimator", "A", "--binarize", "dynamic"]}
# The small runs of the in-process tests: 30 steps, a checkpoint every 10.
TINY_MODEL = ["train", "--preset", "digits", "-H", "4", "-J", "2", "--checkpoint-every", "0.05", "--eval-points", "2",
              "--eval-train-size", "200", "--no-progress", "--no-figures", "--threads", "1"]
TINY = [*TINY_MODEL, "--samples", "3000"]


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A session cache holding the generated digits (made once, by the first run that needs them)."""
    return tmp_path_factory.mktemp("cache")


_DIGITS = {}


@pytest.fixture(autouse=True)
def _env(cache, monkeypatch):
    """The session cache; in-process commands read the generated digits from disk once per session."""
    import minivae.run.cli
    monkeypatch.setenv("MINIVAE_CACHE", str(cache))
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    load = minivae.run.cli._load_data

    def load_once(cfg, download=True):
        if cfg.dataset != "digits-synthetic":
            return load(cfg, download)
        if cfg.seed not in _DIGITS:
            _DIGITS[cfg.seed] = load(cfg, download)
        return _DIGITS[cfg.seed]

    monkeypatch.setattr(minivae.run.cli, "_load_data", load_once)


def _env_for(cache):
    return dict(os.environ, MINIVAE_CACHE=str(cache), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))


def _start(argv, cache, **kw):
    return subprocess.Popen([sys.executable, "-m", "minivae", *argv], cwd=REPO_ROOT, env=_env_for(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run(argv, cache, timeout=120):
    return subprocess.run([sys.executable, "-m", "minivae", *argv], cwd=REPO_ROOT, env=_env_for(cache),
                          capture_output=True, text=True, timeout=timeout)


def _messages(stderr):
    """minivae's own lines on stderr (a FastPathWarning under NUMBA_DISABLE_JIT is Python's, not ours)."""
    return [line for line in stderr.splitlines() if line.startswith("minivae")]


def _final_state(out):
    """Everything a finished run directory holds that must not depend on interruptions."""
    ck = load_checkpoint(out / "checkpoint.npz")
    history = dict(ck["history"])
    history.pop("seconds")                                   # wall-clock time: the one thing that may differ
    on_disk = json.loads((out / "history.json").read_text())
    on_disk.pop("seconds")
    loop = {k: v for k, v in ck["loop"].items() if k != "seconds"}
    return {"params": ck["params"], "step_state": ck["step_state"], "loop": loop, "rng": ck["rng_states"],
            "history": history, "history.json": on_disk, "config": json.loads((out / "config.json").read_text())}


def _assert_same(a, b):
    for part in ("params", "step_state", "loop"):
        assert set(a[part]) == set(b[part]), part
        for key in a[part]:
            np.testing.assert_array_equal(a[part][key], b[part][key], err_msg=f"{part} {key}")
    for part in ("rng", "history", "history.json", "config"):
        assert a[part] == b[part], part


@pytest.fixture(scope="session")
def reference(cache, tmp_path_factory):
    """The uninterrupted runs of both cases (the first one also generates the digits and warms Numba's cache)."""
    root = tmp_path_factory.mktemp("reference")
    states = {}
    for name, extra in CASES.items():
        r = _run([*TRAIN, *extra, "--out", str(root / name)], cache, timeout=300)
        assert r.returncode == 0, r.stderr
        states[name] = _final_state(root / name)
    return states


# `minivae train` that stops once, at its second recorded bound, until a line comes on its stdin.
_PAUSED = """
import sys
import minivae.run.cli as cli
write, calls = cli._write_history, []

def paused(out, history):
    write(out, history)
    calls.append(1)
    if len(calls) == 2:
        print("test: paused", flush=True)
        sys.stdin.readline()

cli._write_history = paused
sys.exit(cli.main(sys.argv[1:]))
"""


def _start_paused(argv, cache):
    return subprocess.Popen([sys.executable, "-c", _PAUSED, *argv], cwd=REPO_ROOT, env=_env_for(cache),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _paused(proc):
    """Block until the run pauses (True), or ends without pausing (False)."""
    return any(line == "test: paused\n" for line in proc.stdout)


def _go_on(proc):
    with contextlib.suppress(BrokenPipeError):                 # (it ended without pausing)
        proc.stdin.write("go on\n")
        proc.stdin.flush()


def _parts(out):
    return [p.name for p in out.iterdir() if p.name.endswith(".part")] if out.is_dir() else []


def _wait_for_line(proc):
    """Block until the run says what it trains (config.json written, training about to start)."""
    while True:
        line = proc.stdout.readline()
        if not line or (line.startswith("minivae: ") and " VAE(" in line):
            return line


# --- 1. kill at random moments, resume, and end bit for bit where the uninterrupted run ends ----------

@POSIX
@pytest.mark.slow   # 14 process starts per case (about 20 s on a quiet 2-core machine); the JIT-less pass skips it
@pytest.mark.parametrize("case", sorted(CASES))
def test_sigkill_at_random_moments_then_resume_ends_bit_for_bit_like_the_uninterrupted_run(
        case, reference, cache, tmp_path):
    """Six SIGKILLs at seeded random moments: while starting up (before anything is written), during
    training, and as soon as a checkpoint's temporary file appears (inside a checkpoint write). After
    each kill the same command runs again, with --resume once a checkpoint exists. The kills only
    choose where the run is interrupted; the test passes on what the final files hold, whatever the
    timing."""
    rng = np.random.default_rng(11)
    out = tmp_path / case
    argv = [*TRAIN, *CASES[case], "--out", str(out)]
    log = []
    for k in range(6):
        resume = (out / "checkpoint.npz").is_file()
        proc = _start(argv + (["--resume"] if resume else []), cache)
        mode = ["startup", "training", "checkpoint write"][k % 3]
        if mode == "startup":
            time.sleep(rng.uniform(0.0, 1.5))                    # often before config.json or the lock exists
        else:
            _wait_for_line(proc)
            if mode == "training":
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                deadline = time.monotonic() + 20.0
                while proc.poll() is None and time.monotonic() < deadline \
                        and not any(n.startswith(".checkpoint.npz.") for n in _parts(out)):
                    time.sleep(0.0005)
        proc.kill()
        rc = proc.wait()
        stderr = proc.stderr.read()
        log.append((mode, rc, _parts(out)))
        assert rc in (-signal.SIGKILL, 0), (log, stderr)
        if rc == 0:
            break
    r = _run(argv + (["--resume"] if (out / "checkpoint.npz").is_file() else []), cache)
    assert r.returncode == 0, (log, r.stderr)
    assert not _parts(out) and not (out / ".lock").exists()      # the resumed run removed what the kills left
    _assert_same(_final_state(out), reference[case])
    print(f"{case}: kills (moment, exit code, .part files left): {log}")


@POSIX
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_says_how_to_resume_and_the_resumed_run_ends_like_the_uninterrupted_one(
        signum, code, reference, cache, tmp_path):
    """The signal comes from outside while the run waits at its second recorded bound (step 4 of 240):
    a point the test can see, so the run can neither finish first nor be caught before training."""
    out = tmp_path / "run"
    argv = [*TRAIN, "--out", str(out)]
    proc = _start_paused(argv, cache)
    assert _paused(proc), proc.stderr.read()
    proc.send_signal(signum)
    _go_on(proc)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    (line,) = _messages(stderr)
    assert f"{signal.Signals(signum).name} received: stopped after step" in line
    assert line.endswith(f"continue with: minivae train --resume --out {out}")
    assert "Traceback" not in stderr and not (out / ".lock").exists()
    stopped_at = int(load_checkpoint(out / "checkpoint.npz")["loop"]["step"])
    assert stopped_at == 4                                        # the step it was paused at, finished
    r = _run(argv + ["--resume"], cache)
    assert r.returncode == 0, r.stderr
    _assert_same(_final_state(out), reference["adagrad-B"])


# --- 2. one process per run directory -------------------------------------------------------------

@POSIX
def test_two_trainings_started_together_into_one_out_one_trains_the_other_names_its_pid(cache, tmp_path, reference):
    out = tmp_path / "shared"
    argv = [*TRAIN, "--epochs", "0.6", "--out", str(out)]
    procs = [_start_paused(argv, cache) for _ in range(2)]
    paused = [_paused(p) for p in procs]        # the winner pauses holding the lock; the loser has ended
    if sorted(paused) != [False, True]:
        for p in procs:
            p.kill()
        raise AssertionError(f"paused: {paused} (both trained at once, or neither did): "
                             f"{[p.communicate()[1] for p in procs]}")
    _go_on(procs[paused.index(True)])
    results = [(p, *p.communicate(timeout=180)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, err) for p, _, err in results]
    (winner,) = [p for p, _, _ in results if p.returncode == 0]
    (loser_err,) = [err for p, _, err in results if p.returncode == 2]
    (line,) = _messages(loser_err)
    assert f"(pid {winner.pid})" in line and "in use by another minivae process" in line, line
    for name in ("config.json", "history.json", "checkpoint.npz"):      # the winner's run is whole
        assert (out / name).is_file(), name
    assert int(load_checkpoint(out / "checkpoint.npz")["loop"]["step"]) == 120


@POSIX
def test_a_second_training_while_the_first_holds_the_lock_exits_2_naming_the_pid(cache, tmp_path, reference):
    """Deterministic: the first process waits at its second recorded bound, holding the lock."""
    out = tmp_path / "shared"
    first = _start_paused([*TRAIN, "--out", str(out)], cache)
    try:
        assert _paused(first), first.stderr.read()
        for extra in ([], ["--resume"]):
            r = _run([*TRAIN, "--out", str(out), *extra], cache)
            assert r.returncode == 2, r.stderr
            (line,) = _messages(r.stderr)
            assert f"is in use by another minivae process (pid {first.pid})" in line, line
        assert (out / "config.json").is_file() and (out / ".lock").is_file()   # the loser deleted nothing
    finally:
        _go_on(first)
    first.communicate(timeout=120)
    assert first.returncode == 0
    _assert_same(_final_state(out), reference["adagrad-B"])


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(f"{_dead_pid()} {socket.gethostname()}\n")
    assert main([*TINY, "--out", str(out)]) == 0
    assert (out / "checkpoint.npz").is_file() and not (out / ".lock").exists()


def test_a_start_killed_before_its_first_checkpoint_starts_again_without_resume(tmp_path, capsys):
    """What a SIGKILL before the first checkpoint leaves: config.json, maybe history.json, and a stale lock."""
    out = tmp_path / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    (out / "checkpoint.npz").unlink()
    pid = _dead_pid()
    (out / ".lock").write_text(f"{pid} {socket.gethostname()}\n")
    capsys.readouterr()
    assert main([*TINY, "--out", str(out), "--resume"]) == 2        # nothing to resume ...
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "without --resume" in err, err
    assert main([*TINY, "--out", str(out)]) == 0                   # ... so the same command starts it again
    assert f"killed (pid {pid}) before its first checkpoint" in capsys.readouterr().out
    assert (out / "checkpoint.npz").is_file()


def test_without_a_stale_lock_a_run_directory_is_never_started_over(tiny_run, tmp_path, capsys):
    out = _copy(tiny_run, tmp_path)
    (out / "checkpoint.npz").unlink()                              # a finished run whose checkpoint was removed
    before = (out / "history.json").read_bytes()
    assert main([*TINY, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "history.json").read_bytes() == before


# --- 3. every item of the lists -------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache):
    """A finished small run directory; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    old = os.environ.get("MINIVAE_CACHE")
    os.environ["MINIVAE_CACHE"] = str(cache)
    try:
        assert main([*TINY, "--out", str(out)]) == 0
    finally:
        if old is None:
            del os.environ["MINIVAE_CACHE"]
        else:
            os.environ["MINIVAE_CACHE"] = old
    return out


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _snapshot(out):
    """Bytes and modification times of every file in a run directory."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.iterdir()) if p.is_file()}


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minivae: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_resume_of_a_directory_that_does_not_exist_creates_nothing(tmp_path, capsys):
    assert main([*TINY, "--out", str(tmp_path / "absent"), "--resume"]) == 2
    _one_line_error(capsys, "nothing to resume")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_resume_without_a_checkpoint_is_refused_and_writes_nothing(tiny_run, tmp_path, capsys, what):
    out = _copy(tiny_run, tmp_path)
    (out / "checkpoint.npz").unlink()
    if what == "directory":
        (out / "checkpoint.npz").mkdir()
    before = _snapshot(out)
    assert main([*TINY, "--out", str(out), "--resume"]) == 2
    _one_line_error(capsys, "nothing to resume", "does not exist" if what == "missing" else "is a directory")
    assert _snapshot(out) == before                               # history.json and config.json untouched


def _entries(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _craft(path, **changes):
    entries = _entries(path)
    for key, value in changes.items():
        if value is None:
            del entries[key]
        else:
            entries[key] = value
    np.savez(path, **entries)


def _wrong_shape(out):
    _craft(out / "checkpoint.npz", **{"step/optimizer/state.enc.mu.W": np.zeros((3, 3), np.float32)})


def _keys_missing(out):
    _craft(out / "checkpoint.npz", **{"loop/perm": None, "history": None})


def _zip_flag(out):
    path = out / "checkpoint.npz"
    data = bytearray(path.read_bytes())
    i = data.find(b"PK\x01\x02")                 # set the 'encrypted' bit of every central directory entry
    while i != -1:
        data[i + 8] |= 0x01
        i = data.find(b"PK\x01\x02", i + 4)
    path.write_bytes(bytes(data))


def _wrong_perm(out):
    _craft(out / "checkpoint.npz", **{"loop/perm": np.arange(5)})


def _bad_json(out):
    (out / "config.json").write_text('{"dataset": "digits-synthetic",')


@pytest.mark.parametrize("damage, fragments", [
    (_wrong_shape, ["optimiser state 'enc.mu.W' has shape (3, 3)"]),
    (_keys_missing, ["not a complete minivae checkpoint (missing history, loop/perm)", "checkpoint.npz"]),
    (_zip_flag, ["checkpoint.npz is corrupt or truncated"]),
    (_wrong_perm, ["holds a permutation that does not fit this training set of N = 20000"]),
    (_bad_json, ["config.json is not valid JSON"]),
], ids=["wrong-shape-optimiser-state", "keys-missing", "zip-flag", "wrong-permutation", "invalid-json-config"])
def test_a_damaged_run_is_refused_in_one_line_and_nothing_is_rewritten(tiny_run, tmp_path, capsys, damage, fragments):
    out = _copy(tiny_run, tmp_path)
    damage(out)
    before = _snapshot(out)
    assert main([*TINY, "--samples", "4000", "--out", str(out), "--resume"]) == 2   # a new budget, refused
    _one_line_error(capsys, *fragments)
    assert _snapshot(out) == before                                      # config.json not rewritten


def test_a_resume_with_other_settings_names_them_and_does_not_rewrite_config(tiny_run, tmp_path, capsys):
    out = _copy(tiny_run, tmp_path)
    before = _snapshot(out)
    assert main([*TINY, "--lr", "0.1", "--samples", "4000", "--out", str(out), "--resume"]) == 2
    _one_line_error(capsys, "lr=0.02 in the run, 0.1 given", "only --epochs and --samples may change")
    assert _snapshot(out) == before


def test_resuming_without_config_json_uses_the_checkpoint_and_records_what_ran(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--lr", "0.05", "--out", str(out)]) == 0
    (out / "config.json").unlink()
    assert main([*TINY, "--lr", "0.1", "--samples", "4000", "--out", str(out), "--resume"]) == 2
    _one_line_error(capsys, "lr=0.05 in the run, 0.1 given")
    assert not (out / "config.json").exists()
    for samples, argv in ((4000, [*TINY, "--lr", "0.05"]), (5000, ["train", "--no-progress", "--no-figures"])):
        assert main([*argv, "--samples", str(samples), "--out", str(out), "--resume"]) == 0
        cfg = json.loads((out / "config.json").read_text())
        ck = load_checkpoint(out / "checkpoint.npz")
        assert cfg["lr"] == 0.05 and cfg["H"] == 4 and cfg["samples"] == samples and ck["config"] == cfg
        assert ck["step_describe"]["step"]["optimizers"]["optimizer"]["lr"] == 0.05
        assert int(ck["loop"]["step"]) == samples // 100
        (out / "config.json").unlink()


@pytest.mark.parametrize("flags, fragments", [
    (["-J", "1000000000"], ["GiB", "choose smaller -H, -J, -M or -L"]),
    (["-H", "1000000000"], ["GiB", "choose smaller -H, -J, -M or -L"]),
    (["-L", "1000000000"], ["GiB", "choose smaller -H, -J, -M or -L"]),
    (["--epochs", "inf"], ["epochs must be a finite number > 0; got inf"]),
    (["--lr", "inf"], ["lr must be a finite number > 0; got inf"]),
    (["--lr", "nan"], ["lr must be a finite number > 0; got nan"]),
], ids=["J", "H", "L", "epochs-inf", "lr-inf", "lr-nan"])
def test_impossible_flags_get_one_line_and_leave_no_directory(tmp_path, capsys, flags, fragments):
    out = tmp_path / "new" / "run"
    budget = [] if "--epochs" in flags else ["--samples", "3000"]
    assert main([*TINY_MODEL, *budget, "--out", str(out), *flags]) == 2
    _one_line_error(capsys, *fragments)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("flags, fragment", [(["-n", "-1"], "-n must be a non-negative integer; got -1"),
                                             (["-K", "-5"], "-K must be a non-negative integer; got -5"),
                                             (["-L", "-1"], "-L must be a positive integer; got -1"),
                                             (["-L", "0"], "-L must be a positive integer; got 0")])
def test_evaluate_refuses_bad_counts(tiny_run, tmp_path, capsys, flags, fragment):
    out = _copy(tiny_run, tmp_path)
    before = _snapshot(out)
    assert main(["evaluate", str(out), *flags, "--no-progress"]) == 2
    _one_line_error(capsys, fragment)
    assert _snapshot(out) == before


def test_evaluate_and_plot_name_an_invalid_config_json(tiny_run, tmp_path, capsys):
    out = _copy(tiny_run, tmp_path)
    _bad_json(out)
    for command in (["evaluate", str(out), "-K", "2", "-n", "5", "--no-progress"], ["sample", str(out)],
                    ["plot", str(out)]):
        assert main(command) == 2
        _one_line_error(capsys, f"{out / 'config.json'} is not valid JSON")


def test_evaluate_and_sample_write_new_files_and_say_where(tiny_run, tmp_path, capsys):
    out = _copy(tiny_run, tmp_path)
    (out / "samples.png").write_bytes(b"the run's own figure")
    (out / "evaluation.json").write_text('{"earlier": true}')
    for k in (2, 3):
        assert main(["evaluate", str(out), "-K", "3", "-n", "5", "--no-progress"]) == 0
        assert f"wrote {out / f'evaluation-{k}.json'}" in capsys.readouterr().out
        assert json.loads((out / f"evaluation-{k}.json").read_text())["n_test"] == 5
    assert json.loads((out / "evaluation.json").read_text()) == {"earlier": True}
    for name in ("samples-seed0.png", "samples-seed0-2.png"):
        assert main(["sample", str(out), "-n", "4"]) == 0
        assert f"wrote {out / name}" in capsys.readouterr().out
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "samples.png").read_bytes() == b"the run's own figure"
    target = tmp_path / "mine.json"                          # an explicit -o is overwritten, and says so
    target.write_text("{}")
    assert main(["evaluate", str(out), "-K", "0", "-n", "5", "-o", str(target)]) == 0
    assert f"wrote {target} (replacing the file that was there)" in capsys.readouterr().out


def test_ctrl_c_before_training_starts_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """SIGINT while the data loads (before fit catches signals): no traceback, exit 130, no directory."""
    import minivae.run.cli

    def interrupted(cfg, download=True):
        raise KeyboardInterrupt
    monkeypatch.setattr(minivae.run.cli, "_load_data", interrupted)
    out = tmp_path / "run"
    assert main([*TINY, "--out", str(out)]) == 130
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("minivae: interrupted (Ctrl-C) before training started"), line
    assert not out.exists()


def test_a_data_error_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIVAE_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "runs" / "mnist"
    assert main(["train", "--dataset", "mnist", "--no-download", "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "train-images-idx3-ubyte", "minivae train --preset digits")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file is synced")
def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    """os.fsync of the second checkpoint write fails with ENOSPC, as on a full disk."""
    out = tmp_path / "run"
    real_fsync, writes = os.fsync, []

    def fsync(fd):
        if ".checkpoint.npz." in os.readlink(f"/proc/self/fd/{fd}"):
            writes.append(fd)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main([*TINY, "--out", str(out)]) == 2
    _one_line_error(capsys, f"No space left on device while writing {out / 'checkpoint.npz'}",
                    "free some space or choose another folder")
    assert int(load_checkpoint(out / "checkpoint.npz")["loop"]["step"]) == 10      # the first one, whole
    assert not _parts(out) and not (out / ".lock").exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main([*TINY, "--out", str(out), "--resume"]) == 0


def test_a_bound_reaching_absurd_values_exits_1_with_one_divergence_message(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--init", "glorot", "--optimizer", "sgd", "--lr", "10000", "--dtype", "float64",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()                             # no RuntimeWarning before it
    # which comes first, a NaN or FLOOR_PATIENCE steps below the floor, depends on the step; both are divergence
    # (the floor alone: tests/test_train.py::test_a_bound_far_below_the_trivial_model_is_divergence)
    assert line.startswith("minivae: training diverged at step") and ("below the floor" in line or "nan" in line), line
    assert "--lr" in line


@pytest.mark.parametrize("fast", [False, True], ids=["readable", "fast"])
def test_float16_data_trains_like_the_same_values_in_float32(fast):
    """fit casts the data to the model's dtype once: float16 pixels train exactly as their float32 values."""
    from minivae.model import VAE
    from minivae.optim import Adagrad
    from minivae.steps import AEVB
    from minivae.train import fit
    if fast:
        from minivae.fast.step import FastAEVB as Step
    else:
        Step = AEVB
    rng = np.random.default_rng(0)
    x16, xt16 = rng.random((60, 10)).astype(np.float16), rng.random((20, 10)).astype(np.float16)
    runs = []
    for x, xt in ((x16, xt16), (x16.astype(np.float32), xt16.astype(np.float32))):
        model = VAE(10, 4, 2, dtype="float32", random_state=0)
        history = fit(model, Step(model, Adagrad(0.05), "B", 1, 1 / 60), x, xt, M=10, samples=120,
                      eval_points=2, progress=False)
        runs.append((history, model.params))
    (h16, p16), (h32, p32) = runs
    assert h16["train_elbo"] == h32["train_elbo"] and h16["test_elbo"] == h32["test_elbo"]
    for name in p32:
        np.testing.assert_array_equal(p16[name], p32[name], err_msg=name)


def test_a_resumed_run_keeps_its_thread_count(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TINY_MODEL[:-2], "--samples", "1500", "--threads", "2", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "threads.json").read_text()) == {"threads": 2}
    capsys.readouterr()
    assert main(["train", "--resume", "--samples", "3000", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    assert "2 threads (as when the run started)" in capsys.readouterr().out
