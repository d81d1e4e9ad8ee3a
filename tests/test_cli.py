"""The command line end to end on a tiny budget: every promised file, and clear refusals."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from minivae.run.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.realdata
def test_train_evaluate_sample_plot_on_real_mnist(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data-dir", str(data_dir), "-H", "20", "-J", "2", "--samples", "3000",
               "--eval-points", "4", "--eval-train-size", "500", "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ["config.json", "history.json", "history.csv", "checkpoint.npz", "bound.png", "samples.png",
                 "reconstructions.png", "latent.png", "manifold.png"]:
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "mnist" and cfg["H"] == 20 and cfg["samples"] == 3000 and cfg["lr"] == 0.02
    history = json.loads((out / "history.json").read_text())
    assert history["samples"][-1] == 3000 and len(history["test_elbo"]) == 4
    assert (out / "history.csv").read_text().splitlines()[0] == "samples,epoch,seconds,train_elbo,test_elbo,train_se,test_se"

    assert main(["evaluate", str(out), "-K", "20", "-n", "30", "--no-progress"]) == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["n_test"] == 30 and ev["K"] == 20 and ev["log_px"] > ev["elbo"] - 5.0
    assert "importance-sampled log p(x)" in capsys.readouterr().out

    (out / "samples.png").unlink()
    assert main(["sample", str(out), "-n", "16", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG
    assert main(["plot", str(out)]) == 0
    assert (out / "samples.png").is_file()

    # A second train into the same folder must not overwrite it silently ...
    assert main(["train", "--data-dir", str(data_dir), "-H", "20", "-J", "2", "--samples", "3000",
                 "--out", str(out), "--no-progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    # ... and --resume with other settings is refused.
    assert main(["train", "--data-dir", str(data_dir), "-H", "30", "-J", "2", "--samples", "4000",
                 "--eval-train-size", "500", "--out", str(out), "--no-progress", "--resume"]) == 2
    assert "other settings (H=20 in the run, 30 given)" in capsys.readouterr().err


@pytest.mark.realdata
def test_frey_preset_runs(tmp_path, data_dir):
    out = tmp_path / "frey"
    assert main(["train", "--preset", "frey", "--data-dir", str(data_dir), "--samples", "2000", "-H", "20",
                 "--eval-points", "2", "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["decoder"] == "gaussian" and cfg["J"] == 2 and cfg["dataset"] == "frey"
    assert (out / "manifold.png").is_file()


@pytest.mark.parametrize("argv,message", [
    (["train", "--decoder", "poisson"], "decoder must be one of bernoulli, gaussian; got 'poisson'"),
    (["train", "--estimator", "C"], "estimator must be one of A, B"),
    (["train", "-J", "0"], "J must be a positive integer"),
    (["train", "--epochs", "1", "--samples", "10"], "not both"),
    (["train", "--preset", "frey", "--decoder", "bernoulli"], "use the Gaussian decoder"),
    (["evaluate", "/nonexistent/run"], "not a minivae run directory"),
])
def test_bad_values_get_one_clear_error(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path / "o")] if argv[0] == "train" else [])) == 2
    assert message in capsys.readouterr().err


def test_unknown_flag_and_preset_are_refused_by_the_parser(capsys):
    for argv in (["train", "--bogus"], ["train", "--preset", "cifar"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "invalid choice: 'cifar'" in capsys.readouterr().err


def test_gradcheck_command_passes_and_help_lists_every_flag():
    r = subprocess.run([sys.executable, "-m", "minivae", "gradcheck"], capture_output=True, text=True)
    assert r.returncode == 0 and "OK: worst" in r.stdout, r.stdout + r.stderr
    h = subprocess.run([sys.executable, "-m", "minivae", "train", "--help"], capture_output=True, text=True).stdout
    for flag in ["--dataset", "--decoder", "-J", "-H", "--optimizer", "--lr", "-M", "-L", "--estimator",
                 "--weight-decay", "--epochs", "--samples", "--seed", "--dtype", "--out", "--binarize"]:
        assert flag in h, flag
    assert "default" in h


def test_config_refuses_unknown_keys():
    from minivae.run.config import Config
    with pytest.raises(ValueError, match="unknown configuration key\\(s\\): learning_rate"):
        Config.from_dict({"learning_rate": 0.1})
    assert Config.from_dict(Config().to_dict()) == Config()


def test_a_config_given_numpy_numbers_is_written_as_plain_json():
    import json

    from minivae.run.config import Config
    cfg = Config(M=np.int64(50), J=np.int32(3), lr=np.float64(0.02))
    d = json.loads(cfg.to_json())
    assert (d["M"], d["J"], d["lr"]) == (50, 3, 0.02) and Config.from_dict(d) == cfg


def test_missing_mnist_names_the_offline_alternative(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    monkeypatch.setenv("MINIVAE_CACHE", str(tmp_path / "empty-cache"))
    assert main(["train", "--no-download", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "minivae train --preset digits" in err
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_every_choice_and_label_comes_from_its_one_list():
    """The help of a config flag lists the choices config.CHOICES has (--activation includes identity); the
    flags train and evaluate share are one declaration; figures and messages name algorithms from ALGORITHMS."""
    from minivae.run.algorithms import ALGORITHMS, label
    from minivae.run.cli import build_parser
    from minivae.run.config import CHOICES
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub.choices["train"]._actions}
    for field, choices in CHOICES.items():
        assert f"one of: {', '.join(choices)}" in helps[field], field
    assert "identity" in helps["activation"]
    shared = [{a.option_strings[0]: a.help for a in sub.choices[name]._actions if a.option_strings}
              for name in ("train", "evaluate")]
    for flag in ("--readable", "--threads", "--no-progress"):
        assert shared[0][flag] == shared[1][flag], flag
    assert [label(name) for name in ALGORITHMS] == ["AEVB", "Wake-Sleep", "MCEM"]
    assert label("someone-elses") == "someone-elses"
