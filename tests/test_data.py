"""The real-data loaders on the real files, minibatches, and every way a file can be corrupt."""

import dataclasses
import gzip
import sys
import types

import numpy as np
import pytest

from minivae.data import (
    DATASETS,
    FREY_SHAPE,
    Dataset,
    holdout_indices,
    load_binarized_mnist,
    load_dataset,
    load_frey,
    load_mnist,
    minibatches,
    read_amat,
    read_frey_mat,
    read_idx,
)
from minivae.utils import CorruptFileError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mnist_train(data_dir):
    return load_mnist("train", data_dir=data_dir, download=False)


@pytest.fixture(scope="module")
def mnist_test(data_dir):
    return load_mnist("test", data_dir=data_dir, download=False)


@pytest.fixture(scope="module")
def frey_all(data_dir):
    return load_frey("all", data_dir=data_dir, download=False)


def write_idx(path, array, magic=None, gz=None):
    """Write ``array`` (uint8) as an IDX file; ``magic`` overrides the header's first 4 bytes."""
    array = np.asarray(array, np.uint8)
    head = magic if magic is not None else (0x0800 + array.ndim)
    data = head.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()
    gz = str(path).endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist(root, n=3, image_shape=(28, 28), n_labels=None, labels=None):
    """A tiny MNIST test split in root/mnist/ (uncompressed IDX files); returns root."""
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(root / "mnist" / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n, *image_shape)))
    if labels is None:
        labels = np.arange(n if n_labels is None else n_labels) % 10
    write_idx(root / "mnist" / "t10k-labels-idx1-ubyte", labels)
    return root


def one_line(err):
    """The error's message, checked to be a single line (errors speak in one sentence)."""
    message = str(err.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- MNIST grey


def test_mnist_shapes_dtypes_and_range(mnist_train, mnist_test):
    for (X, y), n in ((mnist_train, 60000), (mnist_test, 10000)):
        assert X.shape == (n, 784) and X.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert X.min() == 0.0 and X.max() == 1.0
        assert X.flags.c_contiguous and X.flags.writeable


def test_mnist_class_counts_and_first_labels(mnist_train, mnist_test):
    assert np.bincount(mnist_train[1], minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist_test[1], minlength=10).tolist() == MNIST_TEST_COUNTS
    assert mnist_train[1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_mnist_pixels_are_grey_levels_over_255(mnist_test, data_dir):
    raw = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert raw.shape == (10000, 28, 28) and raw.dtype == np.uint8
    np.testing.assert_array_equal(mnist_test[0], (raw.reshape(10000, 784) / np.float32(255)).astype(np.float32))
    # every value is k/255 for an integer k: the scaling is exact, not a rounded guess
    assert np.array_equal(np.round(mnist_test[0][:100] * 255), raw[:100].reshape(100, 784))


def test_mnist_uncompressed_idx_gives_same_data(tmp_path, data_dir, mnist_test):
    (tmp_path / "mnist").mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        gz = (data_dir / "mnist" / f"{name}.gz").read_bytes()
        (tmp_path / "mnist" / name).write_bytes(gzip.decompress(gz))
    X, y = load_mnist("test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(X, mnist_test[0])
    np.testing.assert_array_equal(y, mnist_test[1])


def test_mnist_validation_split_is_disjoint_seeded_and_from_train(data_dir, mnist_train):
    X_valid, y_valid = load_mnist("valid", data_dir=data_dir, download=False, n_valid=5000, seed=3)
    X_rest, y_rest = load_mnist("train", data_dir=data_dir, download=False, n_valid=5000, seed=3)
    assert X_valid.shape == (5000, 784) and X_rest.shape == (55000, 784)
    valid_idx, rest_idx = holdout_indices(60000, 5000, seed=3)
    np.testing.assert_array_equal(X_valid, mnist_train[0][valid_idx])
    np.testing.assert_array_equal(y_rest, mnist_train[1][rest_idx])
    assert np.bincount(np.concatenate([y_valid, y_rest]), minlength=10).tolist() == MNIST_TRAIN_COUNTS


def test_holdout_indices_disjoint_complete_and_seeded():
    held, rest = holdout_indices(1000, 100, seed=7)
    assert len(held) == 100 and len(rest) == 900
    assert np.intersect1d(held, rest).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([held, rest])), np.arange(1000))
    np.testing.assert_array_equal(held, holdout_indices(1000, 100, seed=7)[0])
    assert not np.array_equal(held, holdout_indices(1000, 100, seed=8)[0])
    with pytest.raises(ValueError, match="hold out"):
        holdout_indices(10, 11)


def test_mnist_argument_errors_come_before_reading_any_file(tmp_path):
    # tmp_path holds no data and download=False: these must fail on the arguments alone
    with pytest.raises(ValueError, match="n_valid > 0") as err:
        load_mnist("valid", data_dir=tmp_path, download=False)
    one_line(err)
    with pytest.raises(ValueError, match="'train', 'valid' or 'test'"):
        load_mnist("training", data_dir=tmp_path, download=False)
    with pytest.raises(ValueError, match="n_valid must be a non-negative integer"):
        load_mnist("train", data_dir=tmp_path, download=False, n_valid=-1)


# ---------------------------------------------------------------- binarised MNIST


@pytest.mark.parametrize("split, n, mean", [("train", 50000, 0.1306), ("valid", 10000, 0.1311), ("test", 10000, 0.1325)])
def test_binarized_mnist_rows_and_values(data_dir, split, n, mean):
    X = load_binarized_mnist(split, data_dir=data_dir, download=False)
    assert X.shape == (n, 784) and X.dtype == np.float32
    assert np.all((X == 0) | (X == 1)) and X.max() == 1
    assert abs(X.mean() - mean) < 5e-5  # the README's mean pixel values


def test_binarized_mnist_test_is_the_mnist_test_set_sorted_by_class(data_dir, mnist_test):
    # README: 1s only where the grey source is non-zero; test images are MNIST test sorted by class.
    X = load_binarized_mnist("test", data_dir=data_dir, download=False)
    order = np.argsort(mnist_test[1], kind="stable")
    grey = mnist_test[0][order]
    assert not np.any((X == 1) & (grey == 0))


def test_read_amat_accepts_other_whitespace_and_matches_fast_path(tmp_path):
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, (5, 784), dtype=np.uint8)
    lines = [" ".join(map(str, row)) for row in bits]
    strict = tmp_path / "a.amat"
    strict.write_text("\n".join(lines) + "\n")
    crlf = tmp_path / "b.amat.gz"
    crlf.write_bytes(gzip.compress(("\r\n".join(lines) + "\r\n").encode()))
    np.testing.assert_array_equal(read_amat(strict), bits)
    np.testing.assert_array_equal(read_amat(crlf), bits)


# ---------------------------------------------------------------- Frey Face


def test_frey_shape_and_range(frey_all):
    assert frey_all.shape == (1965, 560) and frey_all.dtype == np.float32
    assert frey_all.min() == np.float32(8 / 256) and frey_all.max() == np.float32(238 / 256)
    assert FREY_SHAPE == (28, 20)


def test_frey_orientation_matches_the_raw_bytes(data_dir, frey_all):
    # README: without scipy, the column-major ff block at offset 184 is (1965, 28, 20) row-major images.
    raw = np.frombuffer((data_dir / "frey" / "frey_rawface.mat").read_bytes(), np.uint8, count=1100400, offset=184)
    faces = read_frey_mat(data_dir / "frey" / "frey_rawface.mat")
    assert faces.shape == (1965, 560) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces, raw.reshape(1965, 560))
    np.testing.assert_array_equal(frey_all * 256, raw.reshape(1965, 560))


def test_frey_split_default_sizes_disjoint_and_seeded(data_dir, frey_all):
    train = load_frey("train", data_dir=data_dir, download=False)
    test = load_frey("test", data_dir=data_dir, download=False)
    assert train.shape == (1700, 560) and test.shape == (265, 560)
    test_idx, train_idx = holdout_indices(1965, 265, seed=0)
    np.testing.assert_array_equal(train, frey_all[train_idx])
    np.testing.assert_array_equal(test, frey_all[test_idx])
    other = load_frey("test", data_dir=data_dir, download=False, seed=1)
    assert not np.array_equal(other, test)
    with pytest.raises(ValueError, match="n_test"):
        load_frey("train", data_dir=data_dir, download=False, n_test=0)


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_mnist(data_dir, mnist_train):
    ds = load_dataset("mnist", data_dir=data_dir, download=False)
    assert isinstance(ds, Dataset) and ds.name == "mnist" and ds.image_shape == (28, 28)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    np.testing.assert_array_equal(ds.y_train, mnist_train[1])
    assert ds.y_test.shape == (10000,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.x_train = None
    assert "60000" in ds.description and "(60000, 784)" in repr(ds)


def test_load_dataset_binarized_and_frey_have_no_labels(data_dir):
    ds = load_dataset("mnist-binarized", data_dir=data_dir, download=False)
    assert ds.x_train.shape == (50000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train is None and ds.y_test is None and ds.image_shape == (28, 28)
    frey = load_dataset("frey", data_dir=data_dir, download=False, seed=0)
    assert frey.x_train.shape == (1700, 560) and frey.x_test.shape == (265, 560)
    assert frey.y_train is None and frey.image_shape == FREY_SHAPE


def test_load_dataset_digits_synthetic_calls_the_synthetic_module(monkeypatch):
    calls = []

    def fake_loader(split, seed=0, cache_dir=None):
        calls.append((split, seed, cache_dir))
        n = 6 if split == "train" else 4
        return np.full((n, 784), 0.5, np.float32), np.arange(n, dtype=np.int64)

    monkeypatch.setitem(sys.modules, "minivae.data.synthetic",
                        types.SimpleNamespace(load_digits_synthetic=fake_loader))
    ds = load_dataset("digits-synthetic", seed=5)
    assert calls == [("train", 5, None), ("test", 5, None)]
    assert ds.x_train.shape == (6, 784) and ds.y_test.tolist() == [0, 1, 2, 3] and ds.image_shape == (28, 28)


def test_load_dataset_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10")
    message = one_line(err)
    assert "cifar10" in message and all(name in message for name in DATASETS)
    assert DATASETS == ("mnist", "mnist-binarized", "frey", "digits-synthetic")


# ---------------------------------------------------------------- minibatches


def test_minibatches_cover_each_index_once_per_epoch():
    X = np.arange(1000, dtype=np.float64).reshape(500, 2)  # row i is (2i, 2i+1)
    rng = np.random.default_rng(0)
    batches = list(minibatches(X, 100, rng))
    assert len(batches) == 5 and all(b.shape == (100, 2) and b.dtype == X.dtype for b in batches)
    rows = (np.concatenate(batches)[:, 0] // 2).astype(int)
    np.testing.assert_array_equal(np.sort(rows), np.arange(500))
    assert not np.array_equal(rows, np.arange(500))  # shuffled
    again = (np.concatenate(list(minibatches(X, 100, rng)))[:, 0] // 2).astype(int)
    assert not np.array_equal(again, rows)  # a fresh permutation each epoch


def test_minibatches_drop_last():
    X = np.arange(10, dtype=np.float32)[:, None]  # (10, 1)
    dropped = list(minibatches(X, 4, np.random.default_rng(0)))
    assert [len(b) for b in dropped] == [4, 4]
    kept = list(minibatches(X, 4, np.random.default_rng(0), drop_last=False))
    assert [len(b) for b in kept] == [4, 4, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(kept)[:, 0]), np.arange(10))
    # same rng state -> the same permutation; drop_last only removes the tail
    np.testing.assert_array_equal(np.concatenate(dropped), np.concatenate(kept)[:8])


def test_minibatches_does_not_alias_the_data():
    X = np.zeros((8, 3), np.float32)
    batch = next(minibatches(X, 4, np.random.default_rng(0)))
    batch += 1
    assert X.sum() == 0


def test_dynamic_binarization(mnist_test):
    X = mnist_test[0]  # grey levels, (10000, 784)
    rng = np.random.default_rng(0)
    first = np.concatenate(list(minibatches(X, 100, rng, binarize=True)))
    assert first.dtype == np.float32 and first.shape == X.shape
    assert np.all((first == 0) | (first == 1)) and first.max() == 1
    # E[bit] = grey level: the means agree to a few standard errors (sd <= 0.5/sqrt(7.84e6) ~ 2e-4)
    assert abs(first.mean() - X.mean()) < 1e-3


def test_dynamic_binarization_draws_afresh_each_epoch(mnist_test):
    grey = mnist_test[0][0]  # (784,) one image, repeated so every batch has the same grey levels
    X = np.tile(grey, (500, 1)).astype(np.float64)  # (500, 784)
    rng = np.random.default_rng(1)
    first = np.concatenate(list(minibatches(X, 50, rng, binarize=True)))
    second = np.concatenate(list(minibatches(X, 50, rng, binarize=True)))
    assert first.dtype == np.float64
    assert not np.array_equal(first, second)
    assert not np.array_equal(first[0], first[1])  # two copies of one image get different bits
    assert not np.any((first == 1) & (X == 0))  # ink only where the grey level is > 0
    # per pixel, the frequency of 1 over 500 draws estimates the grey level (sd <= 0.5/sqrt(500) ~ 0.022)
    assert np.abs(first.mean(0) - grey).max() < 0.11


def test_minibatches_argument_errors():
    X = np.ones((5, 2))
    with pytest.raises(TypeError, match="Generator"):
        minibatches(X, 2, 0)  # raised at the call, not at the first next()
    with pytest.raises(ValueError, match="larger than the data set"):
        minibatches(X, 6, np.random.default_rng(0))
    assert len(list(minibatches(X, 6, np.random.default_rng(0), drop_last=False))) == 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        next(minibatches(X * 2, 2, np.random.default_rng(0), binarize=True))
    with pytest.raises(ValueError, match="2-D"):
        minibatches(np.ones(5), 2, np.random.default_rng(0))


# ---------------------------------------------------------------- corrupt files


def test_idx_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 28, 28)), magic=0x12345678)
    with pytest.raises(CorruptFileError, match="magic number") as err:
        read_idx(path)
    assert str(path) in one_line(err) and "0x12345678" in str(err.value)


def test_idx_truncated_data(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    full = write_idx(path, np.zeros((3, 28, 28))).read_bytes()
    path.write_bytes(full[:-100])
    with pytest.raises(CorruptFileError, match="truncated") as err:
        read_idx(path)
    assert str(path) in one_line(err)


def test_idx_truncated_header_and_extra_bytes(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(CorruptFileError, match="truncated"):
        read_idx(path)
    write_idx(path, np.zeros(4))
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(CorruptFileError, match="2 bytes more"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    # random labels so the compressed stream is long enough to cut in the middle
    write_idx(path, np.random.default_rng(0).integers(0, 10, 5000))
    assert len(read_idx(path)) == 5000
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(CorruptFileError, match="truncated") as err:
        read_idx(path)
    assert str(path) in one_line(err)


def test_damaged_gzip(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(CorruptFileError, match="not a valid gzip file") as err:
        read_idx(path)
    assert str(path) in one_line(err)


def test_fake_mnist_is_read_and_data_dir_comes_first(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("MINIVAE_DATA", str(data_dir))  # the real files, searched after data_dir
    X, y = load_mnist("test", data_dir=fake_mnist(tmp_path, n=3), download=False)
    assert X.shape == (3, 784) and y.tolist() == [0, 1, 2]


def test_mnist_images_not_28x28(tmp_path):
    fake_mnist(tmp_path, image_shape=(27, 27))
    with pytest.raises(CorruptFileError, match=r"\(N, 28, 28\)") as err:
        load_mnist("test", data_dir=tmp_path, download=False)
    assert "t10k-images-idx3-ubyte" in one_line(err)


def test_mnist_image_and_label_counts_differ(tmp_path):
    fake_mnist(tmp_path, n=3, n_labels=4)
    with pytest.raises(CorruptFileError, match="3 images but .* 4 labels"):
        load_mnist("test", data_dir=tmp_path, download=False)


def test_mnist_labels_out_of_range(tmp_path):
    fake_mnist(tmp_path, n=3, labels=[1, 2, 12])
    with pytest.raises(CorruptFileError, match="label 12"):
        load_mnist("test", data_dir=tmp_path, download=False)


def test_mnist_labels_file_in_place_of_images(tmp_path):
    fake_mnist(tmp_path, n=3)
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte", np.zeros(3))
    with pytest.raises(CorruptFileError, match="not MNIST images"):
        load_mnist("test", data_dir=tmp_path, download=False)


def test_amat_row_of_wrong_length_names_the_line(tmp_path):
    good = " ".join(["0"] * 784)
    path = tmp_path / "binarized_mnist_test.amat"
    path.write_text(good + "\n" + good + "\n" + " ".join(["1"] * 783) + "\n" + good + "\n")
    with pytest.raises(CorruptFileError, match="line 3: expected 784 values, found 783") as err:
        read_amat(path)
    assert str(path) in one_line(err)


def test_amat_value_not_binary_names_the_line(tmp_path):
    rows = [["0"] * 784 for _ in range(3)]
    rows[1][10] = "2"
    path = tmp_path / "b.amat.gz"
    path.write_bytes(gzip.compress(("\n".join(" ".join(r) for r in rows) + "\n").encode()))
    with pytest.raises(CorruptFileError, match="line 2: value '2' is not 0 or 1") as err:
        read_amat(path)
    assert str(path) in one_line(err)


def test_amat_empty(tmp_path):
    path = tmp_path / "e.amat"
    path.write_text("\n")
    with pytest.raises(CorruptFileError, match="no images"):
        read_amat(path)


def test_mat_without_ff(tmp_path):
    import scipy.io

    path = tmp_path / "frey_rawface.mat"
    scipy.io.savemat(path, {"faces": np.zeros((560, 3), np.uint8)})
    with pytest.raises(CorruptFileError, match="no variable 'ff'") as err:
        read_frey_mat(path)
    assert str(path) in one_line(err)


def test_mat_ff_of_wrong_shape(tmp_path):
    import scipy.io

    path = tmp_path / "frey_rawface.mat"
    scipy.io.savemat(path, {"ff": np.zeros((100, 3), np.uint8)})
    with pytest.raises(CorruptFileError, match=r"shape \(560, N\)"):
        read_frey_mat(path)


def test_not_a_mat_file(tmp_path, data_dir):
    path = tmp_path / "frey_rawface.mat"
    path.write_bytes(b"\x89PNG\r\n" + bytes(300))
    with pytest.raises(CorruptFileError, match="not a readable MATLAB") as err:
        read_frey_mat(path)
    assert str(path) in one_line(err)
    path.write_bytes((data_dir / "frey" / "frey_rawface.mat").read_bytes()[:1000])  # truncated real file
    with pytest.raises(CorruptFileError, match="not a readable MATLAB"):
        read_frey_mat(path)


def test_package_imports_only_utils_and_paths_and_no_scipy():
    import subprocess

    code = ("import sys, minivae.data; "
            "print(sorted(m for m in sys.modules if m.startswith('minivae'))); "
            "print('scipy.io' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    allowed = {"minivae", "minivae.utils", "minivae.data", "minivae.data.paths", "minivae.data.batches",
               "minivae.data.download", "minivae.data.frey", "minivae.data.mnist"}
    assert set(eval(out[0])) <= allowed and out[1] == "False"
