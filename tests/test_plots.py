"""Figures: each function returns a Figure and writes a valid PNG of the expected shape;
the tiling and the manifold's z grid are right to the value; a failed save leaves the
previous PNG untouched."""

from statistics import NormalDist

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from minivae.model import VAE
from minivae.run import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model2():
    return VAE(D=28 * 28, H=8, J=2, random_state=0)


@pytest.fixture(scope="module")
def model3():
    return VAE(D=28 * 28, H=8, J=3, random_state=0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((60, 28 * 28)), rng.integers(0, 10, 60)


def read_png(path):
    """Check the file is a non-empty PNG; return the image as read back by matplotlib, (rows, cols, channels)."""
    raw = path.read_bytes()
    assert len(raw) > 100
    assert raw[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return img


def assert_png_matches_figure(path, fig):
    """The saved PNG has the Figure's size in pixels (so its aspect is the figure's)."""
    img = read_png(path)
    w_in, h_in = fig.get_size_inches()
    # Agg truncates fractional pixel sizes: allow one pixel either way.
    assert abs(img.shape[0] - h_in * plots.DPI) <= 1 and abs(img.shape[1] - w_in * plots.DPI) <= 1
    return img


# -- image_grid ------------------------------------------------------------------------

def test_image_grid_places_each_image_row_major_with_a_gap():
    images = np.arange(5 * 6, dtype=float).reshape(5, 6)          # five 2 x 3 images
    grid = plots.image_grid(images, (2, 3), n_cols=2)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1)                     # 3 rows of images, 1-pixel gaps
    for k in range(5):
        r, c = divmod(k, 2)
        block = grid[r * 3:r * 3 + 2, c * 4:c * 4 + 3]
        np.testing.assert_array_equal(block, images[k].reshape(2, 3))
    # gaps and the unused last cell hold the fill value (white)
    assert np.all(grid[2, :] == 1.0) and np.all(grid[5, :] == 1.0)
    assert np.all(grid[:, 3] == 1.0)
    assert np.all(grid[6:8, 4:7] == 1.0)


def test_image_grid_without_gap_is_a_seamless_mosaic():
    images = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=float)  # four 1 x 2 images
    grid = plots.image_grid(images, (1, 2), n_cols=2, gap=0)
    np.testing.assert_array_equal(grid, [[1, 2, 3, 4], [5, 6, 7, 8]])


def test_image_grid_rejects_a_shape_that_does_not_match_D():
    with pytest.raises(ValueError, match="image_shape"):
        plots.image_grid(np.zeros((4, 10)), (3, 3), n_cols=2)


# -- manifold_grid ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 4, 5, 20])
def test_manifold_grid_is_the_inverse_cdf_of_cell_centres(n):
    z = plots.manifold_grid(n)
    assert z.shape == (n * n, 2)
    q = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    z1 = z[:, 0].reshape(n, n)                                      # (row, column) of the display
    z2 = z[:, 1].reshape(n, n)
    np.testing.assert_array_equal(z1, np.tile(q, (n, 1)))           # z1 increases to the right
    np.testing.assert_array_equal(z2, np.tile(q[::-1, None], (1, n)))  # z2 increases upward


@pytest.mark.parametrize("n", [4, 5, 20])
def test_manifold_grid_is_symmetric_and_centred_on_zero(n):
    z = plots.manifold_grid(n)
    # Turning the grid by 180 degrees maps every z to -z.
    np.testing.assert_allclose(z[::-1], -z, atol=1e-12)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    zz = z.reshape(n, n, 2)
    middle = zz[(n - 1) // 2:n // 2 + 1, (n - 1) // 2:n // 2 + 1].reshape(-1, 2)
    assert np.abs(middle).max() <= NormalDist().inv_cdf(0.5 + 0.5 / n) + 1e-12
    assert np.abs(middle.mean(axis=0)).max() < 1e-12
    assert np.isfinite(z).all()


# -- the figures -------------------------------------------------------------------------------

def test_plot_manifold_writes_a_png_of_the_grid(tmp_path, model2):
    path = tmp_path / "manifold.png"
    fig = plots.plot_manifold(model2, path, n=6)
    assert isinstance(fig, Figure)
    img = assert_png_matches_figure(path, fig)
    assert 0.8 < img.shape[0] / img.shape[1] < 1.25                # a square grid of square digits


def test_plot_manifold_shows_the_decoder_mean_in_display_order(model2):
    fig = plots.plot_manifold(model2, n=3)
    shown = fig.axes[0].get_images()[0].get_array()
    expected = plots.image_grid(model2.decode(plots.manifold_grid(3)), (28, 28), 3, gap=0)
    assert shown.shape == (3 * 28, 3 * 28)
    np.testing.assert_allclose(shown, expected)
    # top-left cell is the decoder at z = (min, max): z1 smallest, z2 largest
    q0 = NormalDist().inv_cdf(0.5 / 3)
    np.testing.assert_allclose(shown[:28, :28], model2.decode([[q0, -q0]]).reshape(28, 28))


def test_plot_manifold_tall_frey_images(tmp_path):
    model = VAE(D=28 * 20, H=8, J=2, decoder="gaussian", random_state=0)
    path = tmp_path / "frey.png"
    fig = plots.plot_manifold(model, path, image_shape=(28, 20), n=5)
    img = assert_png_matches_figure(path, fig)
    assert img.shape[0] > img.shape[1]                              # 28 rows x 20 columns: taller than wide


def test_plot_manifold_refuses_J_other_than_2(tmp_path, model3):
    path = tmp_path / "m.png"
    with pytest.raises(ValueError, match="J = 2.*J = 3"):
        plots.plot_manifold(model3, path)
    assert not path.exists()


def test_plot_samples_writes_a_png(tmp_path, model2):
    path = tmp_path / "samples.png"
    fig = plots.plot_samples(model2, path, n=16, rng=0)
    assert isinstance(fig, Figure)
    img = assert_png_matches_figure(path, fig)
    assert 0.8 < img.shape[0] / img.shape[1] < 1.25
    shown = fig.axes[0].get_images()[0]
    assert shown.get_array().shape == (4 * 28 + 3, 4 * 28 + 3)     # 4 x 4 grid, 1-pixel gaps
    assert shown.get_clim() == (0.0, 1.0)


def test_plot_samples_is_reproducible_and_can_sample_x(model3):
    a = plots.plot_samples(model3, n=9, rng=3).axes[0].get_images()[0].get_array()
    b = plots.plot_samples(model3, n=9, rng=3).axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(a, b)
    binary = plots.plot_samples(model3, n=9, rng=3, sample=True).axes[0].get_images()[0].get_array()
    assert set(np.unique(binary)) <= {0.0, 1.0}                     # Bernoulli draws (and white gaps)


def test_plot_samples_rejects_a_wrong_image_shape(model2):
    with pytest.raises(ValueError, match="image_shape"):
        plots.plot_samples(model2, image_shape=(28, 20))


def test_plot_reconstructions_shows_inputs_over_sampled_reconstructions(tmp_path, model3, data):
    x, _ = data
    path = tmp_path / "recon.png"
    fig = plots.plot_reconstructions(model3, x, path, n=5, rng=7)
    assert isinstance(fig, Figure)
    img = assert_png_matches_figure(path, fig)
    assert img.shape[1] > 2 * img.shape[0]                          # one wide strip of 2 x 5 images
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == (2 * 28 + 1, 5 * 28 + 4)
    np.testing.assert_allclose(shown[:28, :28], x[0].reshape(28, 28))  # top row: the inputs
    mu, log_var = model3.encode(x[:5])
    eps = np.random.default_rng(7).standard_normal(mu.shape)
    recon = model3.decode(mu + np.exp(log_var / 2) * eps)
    np.testing.assert_allclose(shown[29:, 29:57], recon[1].reshape(28, 28))  # bottom row: z ~ q(z|x)
    assert "sample" in fig.axes[0].get_title()


def test_plot_latent_J2_J3_J1_with_and_without_labels(tmp_path, model2, model3, data):
    x, y = data
    for model, labels, xlabel in [(model2, y, "z1"), (model3, y, "principal component 1"),
                                  (model3, None, "principal component 1"),
                                  (VAE(D=28 * 28, H=8, J=1, random_state=0), y, "z1")]:
        path = tmp_path / f"latent{model.J}{labels is None}.png"
        fig = plots.plot_latent(model, x, labels, path, rng=0)
        assert isinstance(fig, Figure)
        assert_png_matches_figure(path, fig)
        ax = fig.axes[0]
        assert ax.get_xlabel().startswith(xlabel)
        n_points = sum(len(c.get_offsets()) for c in ax.collections)
        assert n_points == len(x)
        if labels is not None:
            assert ax.get_legend() is not None
            assert len(ax.collections) == len(np.unique(y))          # one colour per class
    assert "jitter" in fig.axes[0].get_ylabel()                     # J = 1 says what the y axis is


def test_plot_latent_J2_plots_mu_itself_and_subsamples(model2, data):
    x, y = data
    fig = plots.plot_latent(model2, x, y, max_points=20, rng=0)
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert len(points) == 20
    mu, _ = model2.encode(x)
    # every plotted point is the mu of some datapoint
    dist = np.abs(points[:, None, :] - mu[None, :, :]).max(axis=2).min(axis=1)
    assert dist.max() < 1e-12
    assert "20 of 60" in fig.axes[0].get_title()


def test_plot_latent_pca_captures_the_spread_of_mu(model3, data):
    x, _ = data
    fig = plots.plot_latent(model3, x)
    points = np.asarray(fig.axes[0].collections[0].get_offsets())
    mu, _ = model3.encode(x)
    s = np.linalg.svd(mu - mu.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(np.sort(np.linalg.svd(points, compute_uv=False))[::-1], s[:2], rtol=1e-8)


def _history(n=20, seed=0):
    rng = np.random.default_rng(seed)
    samples = np.unique(np.logspace(2, 7, n).astype(int)).tolist()
    train = (-200 + 90 * (1 - np.exp(-np.arange(len(samples)) / 5)) + rng.normal(0, 1, len(samples))).tolist()
    test = [t - 3 if i % 4 == 0 else float("nan") for i, t in enumerate(train)]
    return {"samples": samples, "train_elbo": train, "test_elbo": test}


def test_plot_bound_log_axis_labels_and_nan_test_values(tmp_path):
    h = _history()
    path = tmp_path / "bound.png"
    fig = plots.plot_bound(h, path, title="MNIST")
    assert isinstance(fig, Figure)
    assert_png_matches_figure(path, fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "lower bound per datapoint (nats)"
    assert ax.get_xlabel() == "training samples evaluated"
    train, test = ax.get_lines()
    assert len(train.get_xdata()) == len(h["samples"])
    n_finite = int(np.isfinite(h["test_elbo"]).sum())
    assert len(test.get_xdata()) == n_finite                        # NaN points left out, the rest joined
    assert np.isfinite(test.get_ydata()).all()


def test_plot_bound_overlays_runs_and_skips_missing_test_curves(tmp_path):
    a = dict(_history(seed=0), label="AEVB")
    b = dict(_history(seed=1), label="wake-sleep", test_elbo=[])
    c = {"samples": [0, 100, 1000], "train_elbo": [-500.0, -300.0, -250.0], "label": "J = 3"}  # no test_elbo
    path = tmp_path / "bound.png"
    fig = plots.plot_bound([a, b, c], path)
    assert_png_matches_figure(path, fig)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["AEVB (train)", "AEVB (test)", "wake-sleep (train)", "J = 3 (train)"]
    lines = ax.get_lines()
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert len(lines[3].get_xdata()) == 2                           # samples = 0 cannot sit on a log axis


def test_plot_bound_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="train_elbo"):
        plots.plot_bound({"samples": [1, 2, 3], "train_elbo": [-1.0, -2.0]})


def test_interrupted_save_leaves_the_previous_png_intact(tmp_path, model2, monkeypatch):
    path = tmp_path / "samples.png"
    plots.plot_samples(model2, path, n=4, rng=0)
    before = path.read_bytes()

    def broken_savefig(self, f, **kwargs):
        f.write(PNG_SIGNATURE + b"half a picture")
        raise KeyboardInterrupt("interrupted half-way")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(KeyboardInterrupt):
        plots.plot_samples(model2, path, n=9, rng=1)
    assert path.read_bytes() == before
    read_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.png"]  # no temporary file left behind


def test_no_pyplot_figures_are_created(model2):
    import sys
    plots.plot_samples(model2, n=4, rng=0)
    plots.plot_bound(_history())
    if "matplotlib.pyplot" in sys.modules:                          # another test may have imported it
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_plot_bound_range_follows_the_late_part_of_the_run():
    """An early Adagrad transient (-3000 nats) must not flatten the curve worth reading."""
    h = {"samples": [100, 200, 1000, 10000, 100000, 600000],
         "train_elbo": [-550.0, -3100.0, -250.0, -210.0, -160.0, -127.0],
         "test_elbo": [-550.0, -3100.0, -250.0, -209.0, -159.0, -126.0]}
    lo, hi = plots.plot_bound(h).axes[0].get_ylim()
    assert -300 < lo < -210 and -127 < hi < -100, (lo, hi)
    flat = {"samples": [10, 100], "train_elbo": [-100.0, -99.0]}
    lo, hi = plots.plot_bound(flat).axes[0].get_ylim()
    assert lo <= -100 and hi >= -99                          # nothing clipped when nothing is far off


def _panel_ylim_and_note(wake_sleep_test):
    """Figure 2's MNIST J = 200 panel in miniature: AEVB settles, wake-sleep is far below for most of the run."""
    samples = [100, 1000, 10_000, 100_000, 1_000_000]
    runs = [dict(algorithm="aevb", samples=samples, test=[-540.0, -600.0, -200.0, -150.0, -123.0]),
            dict(algorithm="wake-sleep", samples=samples, test=wake_sleep_test)]
    ax = plots.plot_figure2([[{"title": "MNIST, J = 200", "runs": runs}]]).axes[0]
    return ax.get_ylim(), " ".join(t.get_text() for t in ax.texts)


def test_a_curve_far_below_the_others_does_not_flatten_the_panel():
    """The range shows AEVB's later half and wake-sleep's end, not wake-sleep's -4500 on the way."""
    (lo, hi), note = _panel_ylim_and_note([-540.0, -4500.0, -4000.0, -1500.0, -258.0])
    assert -500 < lo < -258 and -123 < hi < -90, (lo, hi)    # both ends readable, the gap of 135 nats too
    assert "clipped" in note and "ends at" not in note        # wake-sleep's last point is inside

    (lo, hi), note = _panel_ylim_and_note([-540.0, -4500.0, -4000.0, -2500.0, -1000.0])
    assert -500 < lo and -123 < hi < -90, (lo, hi)            # still AEVB's range ...
    assert "Wake-Sleep (test) ends at -1000" in note           # ... and the curve it leaves out is named


def test_counts_below_one_get_one_clear_error(model2, data):
    x = data[0]
    calls = {
        "n": [lambda: plots.plot_samples(model2, n=0), lambda: plots.plot_reconstructions(model2, x, n=0),
              lambda: plots.plot_manifold(model2, n=0), lambda: plots.manifold_grid(-1)],
        "n_cols": [lambda: plots.image_grid(np.zeros((2, 4)), (2, 2), n_cols=0)],
        "max_points": [lambda: plots.plot_latent(model2, x, max_points=0)],
    }
    for name, fs in calls.items():
        for f in fs:
            with pytest.raises(ValueError, match=f"^{name} must be a positive integer; got -?[01]"):
                f()
