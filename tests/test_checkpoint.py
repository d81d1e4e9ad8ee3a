"""Checkpoints: round trip, atomic writes, and one clear error for each kind of bad file."""

import numpy as np
import pytest

from minivae.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from minivae.model import VAE
from minivae.optim import Adam
from minivae.steps import AEVB
from minivae.utils import CorruptFileError

LOOP = {"step": 7, "epoch": 0, "batch": 7, "perm": np.arange(5)}


def _save(path, model, opt=None, **arrays_override):
    opt = opt or Adam(0.01)
    opt.step(model.params, {k: np.ones_like(v) for k, v in model.params.items()})
    rng = np.random.default_rng(0)
    save_checkpoint(path, model, AEVB(model, opt), {"train": rng.bit_generator.state}, {"samples": [1, 2]},
                    LOOP, {"seed": 0})


def test_round_trip(tmp_path):
    model = VAE(6, 5, 2, random_state=0)
    _save(tmp_path / "c.npz", model)
    other = VAE(6, 5, 2, random_state=1)
    ck = load_checkpoint(tmp_path / "c.npz", other)
    for name in model.params:
        np.testing.assert_array_equal(model.params[name], other.params[name])
    assert ck["history"] == {"samples": [1, 2]} and int(ck["loop"]["step"]) == 7
    assert ck["step_describe"]["algorithm"] == "aevb" and ck["step_describe"]["optimizers"]["optimizer"]["type"] == "Adam"
    assert int(ck["step_state"]["optimizer/t"]) == 1
    restored = AEVB(other, Adam(0.5))
    restored.load_state_dict(ck["step_state"])
    assert restored.optimizer.t == 1 and restored.optimizer.lr == 0.01
    assert np.random.default_rng(0).bit_generator.state == ck["rng_states"]["train"]


def test_an_interrupted_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    model = VAE(6, 5, 2, random_state=0)
    _save(path, model)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(path, VAE(6, 5, 2, random_state=5))
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]             # no temporary file left behind
    load_checkpoint(path, VAE(6, 5, 2))


def test_another_architecture_is_refused(tmp_path):
    _save(tmp_path / "c.npz", VAE(6, 5, 2, random_state=0))
    with pytest.raises(CheckpointMismatch, match="J is 2 there but 3 here"):
        load_checkpoint(tmp_path / "c.npz", VAE(6, 5, 3))
    with pytest.raises(CheckpointMismatch, match="decoder is 'bernoulli' there but 'gaussian' here"):
        load_checkpoint(tmp_path / "c.npz", VAE(6, 5, 2, decoder="gaussian"))


@pytest.mark.parametrize("cut", [10, 0.5, -20])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    path = tmp_path / "c.npz"
    _save(path, VAE(6, 5, 2, random_state=0))
    data = path.read_bytes()
    n = cut if isinstance(cut, int) and cut > 0 else (int(len(data) * cut) if cut < 1 and cut > 0 else len(data) + cut)
    path.write_bytes(data[:n])
    with pytest.raises(CorruptFileError, match="corrupt or truncated"):
        load_checkpoint(path, VAE(6, 5, 2))


def test_object_arrays_and_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "obj.npz"
    np.savez(bad, format_version=np.array(1), x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CorruptFileError, match="refuses to unpickle|corrupt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, w=np.zeros(3))
    with pytest.raises(CorruptFileError, match="not a minivae checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.npz")


def _entries(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("drop", ["history", "loop/perm", "step_describe"])
def test_a_crafted_checkpoint_with_keys_missing_is_refused_in_one_line(tmp_path, drop):
    path = tmp_path / "c.npz"
    _save(path, VAE(6, 5, 2, random_state=0))
    entries = _entries(path)
    del entries[drop]
    np.savez(path, **entries)
    with pytest.raises(CorruptFileError, match=f"not a complete minivae checkpoint \\(missing {drop}\\)"):
        load_checkpoint(path, VAE(6, 5, 2))


def test_invalid_json_inside_a_checkpoint_names_the_file_and_the_entry(tmp_path):
    path = tmp_path / "c.npz"
    _save(path, VAE(6, 5, 2, random_state=0))
    entries = _entries(path)
    entries["history"] = np.array("{not json")
    np.savez(path, **entries)
    with pytest.raises(CorruptFileError, match=f"{path}.*history entry is not valid JSON"):
        load_checkpoint(path)


def test_a_zip_flag_the_reader_does_not_support_is_one_line(tmp_path):
    path = tmp_path / "c.npz"
    _save(path, VAE(6, 5, 2, random_state=0))
    data = bytearray(path.read_bytes())
    # set the 'encrypted' bit (bit 0 of the general-purpose flags) in every central directory entry
    i = data.find(b"PK\x01\x02")
    while i != -1:
        data[i + 8] |= 0x01
        i = data.find(b"PK\x01\x02", i + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="corrupt or truncated"):
        load_checkpoint(path, VAE(6, 5, 2))


def test_a_wrong_shape_optimizer_state_is_named(tmp_path):
    path = tmp_path / "c.npz"
    model = VAE(6, 5, 2, random_state=0)
    _save(path, model)
    entries = _entries(path)
    entries["step/optimizer/state.enc.mu.W.m"] = np.zeros((3, 3))
    np.savez(path, **entries)
    ck = load_checkpoint(path, model)
    with pytest.raises(ValueError, match="optimiser state 'enc.mu.W.m' has shape \\(3, 3\\)"):
        AEVB(model, Adam(0.01)).load_state_dict(ck["step_state"])


def test_a_directory_in_place_of_the_checkpoint(tmp_path):
    (tmp_path / "c.npz").mkdir()
    with pytest.raises(FileNotFoundError, match="a directory there"):
        load_checkpoint(tmp_path / "c.npz")


def test_an_optimizer_state_array_missing_is_refused(tmp_path):
    """Resuming with one parameter's Adam state gone would silently restart it at zero: refused instead."""
    path = tmp_path / "c.npz"
    model = VAE(6, 5, 2, random_state=0)
    _save(path, model)
    entries = _entries(path)
    del entries["step/optimizer/state.enc.mu.W.v"]
    np.savez(path, **entries)
    ck = load_checkpoint(path, model)
    with pytest.raises(ValueError, match="optimiser state is incomplete: 19 of its 20 arrays"):
        AEVB(model, Adam(0.01)).load_state_dict(ck["step_state"])
