"""The generated digits: deterministic, balanced, MNIST-like, cached safely, and labelled right."""

import warnings

import numpy as np
import pytest

from minivae.data import synthetic
from minivae.data.synthetic import IMAGE_SHAPE, NAME, cache_path, load_digits_synthetic, make_digits

N = 300  # enough images for the statistics below, few enough to stay fast


@pytest.fixture(scope="module")
def digits():
    return make_digits(N, seed=0)


def test_constants_name_the_set_and_its_shape():
    assert NAME == "digits-synthetic"
    assert IMAGE_SHAPE == (28, 28)
    assert "not MNIST" in synthetic.__doc__


def test_shapes_dtypes_and_pixel_range(digits):
    X, y = digits
    assert X.shape == (N, 784) and X.dtype == np.float32
    assert y.shape == (N,) and y.dtype == np.int64
    assert np.isfinite(X).all()
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert set(np.unique(y)) <= set(range(10))


def test_same_seed_gives_byte_identical_arrays(digits):
    X, y = digits
    X2, y2 = make_digits(N, seed=0)
    assert X.tobytes() == X2.tobytes()
    assert y.tobytes() == y2.tobytes()


def test_a_generator_seed_is_accepted_and_reproducible():
    X1, _ = make_digits(20, np.random.default_rng(5))
    X2, _ = make_digits(20, 5)
    assert X1.tobytes() == X2.tobytes()


def test_different_seeds_give_different_images(digits):
    X, _ = digits
    X1, _ = make_digits(N, seed=1)
    assert not np.array_equal(X, X1)
    # not merely shuffled: no image of one set appears in the other
    assert not (set(map(bytes, X)) & set(map(bytes, X1)))


def test_every_class_appears_equally_often(digits):
    _, y = digits
    assert np.bincount(y, minlength=10).tolist() == [N // 10] * 10
    _, y_odd = make_digits(23, seed=0)
    assert sorted(np.bincount(y_odd, minlength=10)) == [2] * 7 + [3] * 3
    assert not np.array_equal(y, np.sort(y)), "labels should be shuffled"


def test_images_have_ink_like_mnist_digits(digits):
    X, _ = digits
    ink = (X > 0.5).mean(axis=1)  # (N,) fraction of inked pixels; MNIST's is about 0.1-0.2
    assert ink.min() > 0.02 and ink.max() < 0.4
    assert X.max(axis=1).min() > 0.7, "every digit should have strokes near full ink"
    assert 0.05 < X.mean() < 0.25  # MNIST's mean pixel is 0.13


def test_digits_are_centred_in_a_twenty_pixel_box(digits):
    X, _ = digits
    img = X.reshape(-1, *IMAGE_SHAPE)  # (N, 28, 28)
    rows, cols = np.mgrid[0:28, 0:28]
    mass = img.sum(axis=(1, 2))
    com_y = (img * rows).sum(axis=(1, 2)) / mass
    com_x = (img * cols).sum(axis=(1, 2)) / mass
    assert np.abs(com_y - 13.5).max() < 3.0 and np.abs(com_x - 13.5).max() < 3.0
    inked = img > 0.1
    height = inked.any(axis=2).sum(axis=1)  # (N,) rows holding ink
    width = inked.any(axis=1).sum(axis=1)  # (N,)
    longer = np.maximum(height, width)
    assert 17 <= np.median(longer) <= 22
    assert longer.max() <= 26


def test_images_vary_within_each_class(digits):
    X, y = digits
    for k in range(10):
        Xk = X[y == k]
        norm = np.linalg.norm(Xk, axis=1).mean()
        # even the two closest images of a class differ by a visible amount ...
        gaps = np.linalg.norm(Xk[:, None] - Xk[None], axis=-1)[np.triu_indices(len(Xk), 1)]
        assert gaps.min() > 0.1 * norm, f"class {k} has two nearly identical images"
        # ... and the class as a whole is spread out (about 0.55 here)
        spread = np.linalg.norm(Xk - Xk.mean(axis=0), axis=1).mean()
        assert spread > 0.3 * norm, f"class {k} images barely vary"


def test_zero_images_gives_empty_arrays():
    X, y = make_digits(0)
    assert X.shape == (0, 784) and X.dtype == np.float32
    assert y.shape == (0,) and y.dtype == np.int64


def test_bad_arguments_raise_readable_errors(tmp_path):
    with pytest.raises(ValueError, match="non-negative integer"):
        make_digits(-1)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_digits_synthetic("validation", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        load_digits_synthetic(cache_dir=tmp_path, n_test=0)


SMALL = dict(n_train=120, n_test=60)


def test_cache_file_name_encodes_version_seed_and_sizes(tmp_path):
    path = cache_path(seed=7, n_train=120, n_test=60, cache_dir=tmp_path)
    assert path.parent == tmp_path and path.suffix == ".npz"
    name = path.name
    assert f"v{synthetic.FORMAT_VERSION}" in name and "seed7" in name
    assert "train120" in name and "test60" in name


def test_default_cache_lives_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIVAE_CACHE", str(tmp_path))
    assert cache_path().parent == tmp_path / "digits-synthetic"


def test_second_call_reads_the_cache(tmp_path, monkeypatch):
    X, y = load_digits_synthetic("train", seed=3, cache_dir=tmp_path, **SMALL)
    assert cache_path(3, cache_dir=tmp_path, **SMALL).is_file()
    assert X.shape == (120, 784) and y.shape == (120,)

    def fail(*args, **kwargs):
        raise AssertionError("make_digits was called although the cache exists")

    monkeypatch.setattr(synthetic, "make_digits", fail)
    X2, y2 = load_digits_synthetic("train", seed=3, cache_dir=tmp_path, **SMALL)
    Xt, yt = load_digits_synthetic("test", seed=3, cache_dir=tmp_path, **SMALL)
    assert X2.tobytes() == X.tobytes() and y2.tobytes() == y.tobytes()
    assert Xt.shape == (60, 784) and yt.dtype == np.int64


def test_test_split_is_not_a_copy_of_the_train_split(tmp_path):
    X, _ = load_digits_synthetic("train", cache_dir=tmp_path, **SMALL)
    Xt, _ = load_digits_synthetic("test", cache_dir=tmp_path, **SMALL)
    assert not (set(map(bytes, X)) & set(map(bytes, Xt)))
    X0, _ = make_digits(60, seed=0)
    assert not np.array_equal(X0, Xt)


def test_corrupt_cache_is_regenerated_with_a_warning(tmp_path):
    X, y = load_digits_synthetic("train", cache_dir=tmp_path, **SMALL)
    path = cache_path(cache_dir=tmp_path, **SMALL)
    path.write_bytes(path.read_bytes()[:1000])  # a truncated file, as a crash of a plain write would leave
    with pytest.warns(UserWarning, match="Regenerating"):
        X2, y2 = load_digits_synthetic("train", cache_dir=tmp_path, **SMALL)
    assert X2.tobytes() == X.tobytes() and y2.tobytes() == y.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file loads silently
        load_digits_synthetic("test", cache_dir=tmp_path, **SMALL)


def test_cache_with_wrong_arrays_is_regenerated(tmp_path):
    path = cache_path(cache_dir=tmp_path, **SMALL)
    np.savez(path, X_train=np.zeros((3, 3)), y_train=np.zeros(3), X_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.warns(UserWarning, match="wrong shape"):
        X, _ = load_digits_synthetic("train", cache_dir=tmp_path, **SMALL)
    assert X.shape == (120, 784)


def test_interrupted_write_leaves_no_cache_file(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic.np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        load_digits_synthetic("train", cache_dir=tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_nearest_class_mean_reads_the_labels_off_the_pictures(tmp_path):
    # If labels matched the pictures only by chance this would score about 10%.
    X, y = load_digits_synthetic("train", cache_dir=tmp_path, n_train=1000, n_test=300)
    Xt, yt = load_digits_synthetic("test", cache_dir=tmp_path, n_train=1000, n_test=300)
    means = np.stack([X[y == k].mean(axis=0) for k in range(10)])  # (10, 784)
    d2 = (Xt**2).sum(1)[:, None] - 2.0 * Xt @ means.T + (means**2).sum(1)[None, :]  # (300, 10)
    accuracy = (d2.argmin(axis=1) == yt).mean()
    assert accuracy > 0.6


def test_preview_png_has_one_row_per_class(tmp_path):
    import matplotlib.image

    path = tmp_path / "grid.png"
    synthetic.save_preview(path, n_per_class=4, zoom=1)
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (10 * 30, 4 * 30)


def test_cache_holding_a_bare_array_is_regenerated(tmp_path):
    path = cache_path(cache_dir=tmp_path, **SMALL)
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.warns(UserWarning, match="not an .npz archive"):
        X, _ = load_digits_synthetic("test", cache_dir=tmp_path, **SMALL)
    assert X.shape == (60, 784)
