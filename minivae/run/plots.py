"""The paper's figures, as PNG files: the bound and the comparisons (Figures 2, 3), manifolds (Figure 4), samples (Figure 5).

Every function builds a :class:`matplotlib.figure.Figure` directly and draws
it with the Agg canvas: pyplot's global state is never touched, so the same
code runs headless, in CI and inside a notebook (after ``%matplotlib inline``,
``IPython.display.display(fig)`` shows the returned Figure). Each function returns the Figure and, when given ``path``,
saves it through :func:`~minivae.utils.atomic_write`, so an interrupted run
leaves either the previous PNG or the complete new one, never a broken file.

Images are rows of an (N, D) array, each a flattened ``image_shape`` =
(rows, columns) image in row-major order: (28, 28) for MNIST, (28, 20) for
Frey Face. Pixel values are shown on a fixed grey scale from 0 (black) to
1 (white), so two figures can be compared by eye.

The plots show the ELBO itself (nats per datapoint), not the loss the code
minimises, as the paper's figures do (sign and scale: ``minivae.estimator``).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .algorithms import label as algorithm_label
from ..estimator import reparameterize
from ..utils import as_generator, atomic_write, check_scalar

__all__ = [
    "image_grid",
    "manifold_grid",
    "plot_bound",
    "plot_samples",
    "plot_reconstructions",
    "plot_manifold",
    "plot_latent",
    "plot_figure2",
    "plot_figure3",
]

DPI = 100            # dots per inch of the saved PNGs
_INCH_PER_PX = 1 / 60  # display size of one image pixel, before the clamps below


# -- helpers -------------------------------------------------------------------

def _new_figure(width, height):
    """A Figure with its own Agg canvas (no pyplot), ``width`` x ``height`` inches."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _image_figure(img_h, img_w, extra_w=0.4, extra_h=0.7, min_long=4.0):
    """A Figure sized for a ``img_h`` x ``img_w`` pixel image plus margins.

    One image pixel gets about 1/60 inch, the image's long side kept between
    ``min_long`` and 10 inches, so a 10 x 10 sample grid and a 20 x 20 manifold both come
    out legible without filling a screen.
    """
    long_side = max(img_h, img_w)
    inch_per_px = float(np.clip(long_side * _INCH_PER_PX, min_long, 10.0)) / long_side
    return _new_figure(img_w * inch_per_px + extra_w, img_h * inch_per_px + extra_h)


def _save(fig, path):
    """Save ``fig`` as a PNG at ``path`` atomically (nothing happens when path is None)."""
    if path is None:
        return
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)


def _at_least_one(value, name):
    """int(value), which must be at least 1 (one clear error otherwise)."""
    return check_scalar(int(value), name, int, min_val=1)


def _check_image_shape(image_shape, D, what="the model"):
    """(h, w) as ints, checked against the data size D (one clear error otherwise)."""
    try:
        h, w = (int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be a pair (rows, columns), got {image_shape!r}.") from None
    if h < 1 or w < 1 or h * w != D:
        raise ValueError(
            f"image_shape {image_shape!r} holds {h * w} pixels but {what} has D = {D}; "
            "pass the data set's image_shape, e.g. (28, 28) for MNIST or (28, 20) for Frey Face."
        )
    return h, w


def _show_image(ax, img):
    """Grey image on a fixed [0, 1] scale, no axes frame."""
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def image_grid(images, image_shape, n_cols, *, gap=1, fill=1.0):
    """Tile images, one per row of ``images``, into one 2-D array, row by row.

    Parameters
    ----------
    images : array_like, shape (N, D)
        Flattened images, D = h * w, row-major.
    image_shape : (int, int)
        (h, w), rows and columns of one image.
    n_cols : int
        Images per row of the grid; ceil(N / n_cols) rows.
    gap : int
        Pixels between neighbouring images (0 gives a seamless mosaic, as
        the manifold uses).
    fill : float
        Value of the gaps and of unused cells in the last row (1.0 = white,
        the figure's background).

    Returns
    -------
    grid : ndarray, shape (R*h + (R-1)*gap, n_cols*w + (n_cols-1)*gap)
        Image k sits at grid row k // n_cols, grid column k % n_cols.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim != 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, D) array, one flattened image per row; got shape {images.shape}.")
    h, w = _check_image_shape(image_shape, images.shape[1], what="images")
    n_cols, gap = _at_least_one(n_cols, "n_cols"), check_scalar(int(gap), "gap (pixels)", int, min_val=0)
    n_rows = math.ceil(len(images) / n_cols)
    grid = np.full((n_rows * h + (n_rows - 1) * gap, n_cols * w + (n_cols - 1) * gap), float(fill))
    for k, img in enumerate(images):
        r, c = divmod(k, n_cols)
        top, left = r * (h + gap), c * (w + gap)
        grid[top:top + h, left:left + w] = img.reshape(h, w)
    return grid


# -- Figure 2: the bound during training -----------------------------------------

def _as_curve(history, key, n):
    """history[key] as a float array of length n, or None when absent/empty."""
    values = history.get(key)
    if values is None or len(values) == 0:
        return None
    values = np.array([np.nan if v is None else v for v in values], dtype=float)
    if len(values) != n:
        raise ValueError(f"history[{key!r}] has {len(values)} values but history['samples'] has {n}; "
                         "record one value per evaluation (NaN where not evaluated).")
    return values


def _focus_y(ax, shown):
    """Fit the y range to where the curves differ late in the run (on the log axis), as the paper's figures do.

    ``shown`` holds ``(samples, values, label)`` of every plotted curve. The range covers the
    later half of the run of every curve, except that it reaches at most three times the
    leading curve's span below the top: the leading curve is the one that ends highest, and its
    span runs from the lowest point of its later half to the highest point of any curve. So the
    first optimiser steps, hundreds or thousands of nats below where a run settles, do not
    flatten the part worth reading, and neither does a curve that is still far below the others
    (wake-sleep with 200 latent units). Points left out are clipped, and a note on the axes says
    so, naming every curve whose last point is below the range, with that point's value.
    """
    if not shown:
        return
    s = np.concatenate([a for a, _, _ in shown])
    v = np.concatenate([b for _, b, _ in shown])
    middle = np.sqrt(s.min() * s.max())                  # halfway along the log axis
    late = [b[a >= middle] if (a >= middle).any() else b[-1:] for a, b, _ in shown]
    hi = max(float(b.max()) for b in late)
    leader = max(range(len(shown)), key=lambda k: shown[k][1][-1])
    span = max(hi - float(late[leader].min()), 0.01 * abs(hi) + 0.5)
    lo = max(min(float(b.min()) for b in late), hi - 3.0 * span)
    pad = max(0.08 * (hi - lo), 0.01 * abs(hi) + 0.5)
    lo, hi = lo - pad, hi + pad
    if v.max() - v.min() > 3.0 * (hi - lo):                 # only when points are far off
        ax.set_ylim(lo, hi)
        below = [f"{label} ends at {b[-1]:.0f}" for _, b, label in shown if b[-1] < lo]
        note = "points outside this range are clipped" + "".join(f"; {text}" for text in below)
        ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, color="0.4", va="bottom", wrap=True)


def plot_bound(history, path=None, title=None):
    """The paper's Figure 2: lower bound per datapoint against training samples evaluated.

    Parameters
    ----------
    history : dict or list of dict
        One run: ``{"samples": [...], "train_elbo": [...], "test_elbo": [...],
        "label": "AEVB"}``. ``samples`` counts the datapoints seen so far
        (the paper's x axis); ``train_elbo``/``test_elbo`` are the ELBO in
        nats per datapoint at those points. ``test_elbo`` may be absent,
        empty, or NaN where the test set was not evaluated; ``label`` is
        optional. A list of such dicts overlays several runs (e.g. AEVB vs
        wake-sleep, or several J), one colour per run.
    path : str or Path, optional
        Where to save the PNG.
    title : str, optional

    Returns
    -------
    fig : matplotlib.figure.Figure

    Notes
    -----
    The x axis is logarithmic, as in the paper, so points with ``samples``
    <= 0 (e.g. before the first step) cannot be shown and are left out, as
    are NaN values. Train curves are solid, test curves dashed.
    """
    runs = [history] if isinstance(history, dict) else list(history)
    if not runs or not all(isinstance(r, dict) for r in runs):
        raise ValueError("history must be a dict with 'samples' and 'train_elbo', or a non-empty list of such dicts.")
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    shown = []  # (samples, values, label) of every plotted curve, for the y range
    for run, colour in zip(runs, colours):
        if "samples" not in run or "train_elbo" not in run:
            raise ValueError(f"each history needs 'samples' and 'train_elbo'; got keys {sorted(run)}.")
        samples = np.asarray(run["samples"], dtype=float)
        n = len(samples)
        train = _as_curve(run, "train_elbo", n)
        test = _as_curve(run, "test_elbo", n)
        name = run.get("label")
        for values, which, style in ((train, "train", "-"), (test, "test", "--")):
            if values is None:
                continue
            keep = (samples > 0) & np.isfinite(values)
            if not keep.any():
                continue
            label = f"{name} ({which})" if name else which
            # Markers only when the curve has few points (e.g. a test set evaluated rarely).
            marker = "o" if keep.sum() <= 30 else None
            ax.plot(samples[keep], values[keep], style, color=colour, marker=marker, markersize=3, label=label)
            shown.append((samples[keep], values[keep], label))
    ax.set_xscale("log")
    _focus_y(ax, shown)
    ax.set_xlabel("training samples evaluated")
    ax.set_ylabel("lower bound per datapoint (nats)")
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return fig


# -- Figure 5: samples from the model ------------------------------------------------

def plot_samples(model, path=None, n=100, rng=None, image_shape=(28, 28), sample=False):
    """The paper's Figure 5: z ~ p(z) = N(0, I) through the decoder, n images in a square grid.

    Parameters
    ----------
    model : VAE
    path : str or Path, optional
    n : int
        Number of images; the grid has ceil(sqrt(n)) columns.
    rng : None, int or np.random.Generator
        Draws z (and x when ``sample``).
    image_shape : (int, int)
    sample : bool
        False shows the decoder's mean E[x|z] (what the paper shows); True a
        draw x ~ p(x|z) (binary pixels for the Bernoulli decoder).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    n = _at_least_one(n, "n")
    h, w = _check_image_shape(image_shape, model.D)
    x = model.generate(n, as_generator(rng), sample=sample)       # (n, D)
    grid = image_grid(x, (h, w), math.ceil(math.sqrt(n)))
    fig = _image_figure(*grid.shape)
    ax = fig.add_subplot()
    _show_image(ax, grid)
    what = "samples x ~ p(x|z)" if sample else "decoder means E[x|z]"
    ax.set_title(f"{what}, z ~ N(0, I), J = {model.J}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


# -- reconstructions ---------------------------------------------------------------------

def plot_reconstructions(model, x, path=None, image_shape=(28, 28), n=10, rng=None):
    """n inputs (top row) and their reconstructions (bottom row).

    Each reconstruction is the decoder's mean at one z drawn from q(z|x),
    z = mu + exp(log_var / 2) * eps with eps ~ N(0, I) from ``rng`` (the
    reparameterisation of Section 2.4), so it shows what the model does
    during training, noise included, not only at the posterior mean.

    Parameters
    ----------
    model : VAE
    x : ndarray, shape (M, D)
        The first min(n, M) rows are shown.
    path : str or Path, optional
    image_shape : (int, int)
    n : int
    rng : None, int or np.random.Generator
        Draws eps.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    n = _at_least_one(n, "n")
    h, w = _check_image_shape(image_shape, model.D)
    x = np.asarray(x)
    x = model.check_x(x[:n] if x.ndim == 2 else x)                  # (n, D), one clear error if wrong
    n = len(x)
    mu, log_var = model.encode(x)                                   # (n, J) each
    eps = as_generator(rng).standard_normal(mu.shape)               # (n, J)
    z = reparameterize(mu, log_var, eps[None])[0]                   # (n, J): the one sampler
    recon = model.decode(z)                                         # (n, D)
    grid = image_grid(np.concatenate([x, recon]), (h, w), n)
    fig = _image_figure(*grid.shape, extra_w=1.3, extra_h=0.75, min_long=min(0.65 * n, 10.0))
    ax = fig.add_subplot()
    _show_image(ax, grid)
    ax.set_yticks([(h - 1) / 2, h + 1 + (h - 1) / 2], ["input", "reconstruction"])
    ax.tick_params(axis="y", length=0)
    ax.set_title("reconstructions: decoder mean at one sample\n"
                 "z = mu + sigma * eps from q(z|x) (not at the mean mu)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


# -- Figure 4: the learned 2-D manifold -----------------------------------------------------

def manifold_grid(n):
    """The z of the paper's Figure 4: an n x n grid on the unit square through the inverse Gaussian CDF.

    The unit-square points are u_i = (i + 0.5) / n, i = 0..n-1 (cell centres:
    0 and 1 would map to infinite z), so equal areas of the square hold equal
    prior mass and the grid is symmetric about z = 0.

    Parameters
    ----------
    n : int

    Returns
    -------
    z : ndarray, shape (n*n, 2)
        In display order, row-major, top row first: point r*n + c has
        z1 = Phi^-1(u_c) (increasing to the right) and
        z2 = Phi^-1(u_{n-1-r}) (increasing upward).
    """
    n = _at_least_one(n, "n")
    inv_cdf = NormalDist().inv_cdf
    q = np.array([inv_cdf((i + 0.5) / n) for i in range(n)])         # (n,) increasing
    z1 = np.tile(q, n)                                               # column c -> q[c]
    z2 = np.repeat(q[::-1], n)                                       # row r -> q[n-1-r]
    return np.stack([z1, z2], axis=1)                                # (n*n, 2)


def plot_manifold(model, path=None, image_shape=(28, 28), n=20):
    """The paper's Figure 4: the decoder's mean over an n x n grid of z, for a model with J = 2.

    Parameters
    ----------
    model : VAE
        Must have J = 2.
    path : str or Path, optional
    image_shape : (int, int)
    n : int
        Grid points per axis; the image is (n*h) x (n*w) pixels, seamless.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Notes
    -----
    z1 runs along the x axis, z2 increases upward; the tick labels give z at
    a few grid points (the spacing is even in prior mass, not in z).
    """
    if model.J != 2:
        raise ValueError(
            f"plot_manifold needs a model with J = 2 latent variables (the paper's Figure 4), "
            f"but this model has J = {model.J}; use plot_latent or plot_samples instead."
        )
    n = _at_least_one(n, "n")
    h, w = _check_image_shape(image_shape, model.D)
    z = manifold_grid(n)                                             # (n*n, 2)
    grid = image_grid(model.decode(z), (h, w), n, gap=0)             # (n*h, n*w)
    fig = _image_figure(*grid.shape, extra_w=0.9, extra_h=0.9)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    q = z[:n, 0]                                                     # the n values of z1, increasing
    # Ticks in mirror pairs (i, n-1-i), so they read -a ... a; the centre only when n is odd.
    half = np.unique(np.round(np.linspace(0, (n - 1) / 2, 3)).astype(int)) if n > 1 else np.array([0])
    idx = np.unique(np.concatenate([half, n - 1 - half]))
    if n % 2 == 0 and n > 2:
        idx = idx[np.abs(idx - (n - 1) / 2) > 0.5]                    # drop the two cells beside z = 0
    ax.set_xticks(idx * w + (w - 1) / 2, [f"{q[i]:.2g}" for i in idx])
    ax.set_yticks(idx * h + (h - 1) / 2, [f"{q[n - 1 - i]:.2g}" for i in idx])
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(f"learned manifold: decoder mean on a {n} x {n} grid of z\n"
                 f"z = inverse Gaussian CDF of u, u = (i + 0.5) / {n}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


# -- the latent space of the data -----------------------------------------------------

def plot_latent(model, x, labels=None, path=None, max_points=5000, rng=None):
    """Latent means mu of q(z|x) for (a random subset of) the data, coloured by label.

    J = 2 plots mu itself; J > 2 its first two principal components (numpy
    SVD of the centred means), J = 1 plots mu against the label, or against
    a random jitter when there are no labels.

    Parameters
    ----------
    model : VAE
    x : ndarray, shape (N, D)
    labels : array_like, shape (N,), optional
        Integer classes (up to 10: tab10 colours and a legend) or any numbers
        (a colour bar).
    path : str or Path, optional
    max_points : int
        At most this many datapoints, drawn without replacement with ``rng``.
    rng : None, int or np.random.Generator

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    x = model.check_x(x)
    N = len(x)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != N:
            raise ValueError(f"labels has {len(labels)} entries but x has {N} rows; pass one label per datapoint.")
    rng = as_generator(rng)
    max_points = _at_least_one(max_points, "max_points")
    if N > max_points:
        keep = np.sort(rng.choice(N, max_points, replace=False))
        x = x[keep]
        labels = labels[keep] if labels is not None else None
    mu, _ = model.encode(x)                                          # (M, J)
    M = len(mu)

    if model.J == 2:
        coords = mu
        xlabel, ylabel = "z1 (mean of q(z|x))", "z2 (mean of q(z|x))"
    elif model.J > 2:
        centred = mu - mu.mean(axis=0)                               # (M, J)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T                                  # (M, 2)
        share = s ** 2 / max(float(np.sum(s ** 2)), np.finfo(float).tiny)
        xlabel = f"principal component 1 of mu ({100 * share[0]:.0f}% of variance)"
        ylabel = f"principal component 2 of mu ({100 * share[1]:.0f}% of variance)"
    else:  # J == 1: one coordinate; the other axis is the label, or noise
        jitter = rng.uniform(-0.3, 0.3, M)
        if labels is not None and np.issubdtype(labels.dtype, np.number):
            coords = np.stack([mu[:, 0], labels.astype(float) + jitter], axis=1)
            ylabel = "label (with random jitter)"
        else:
            coords = np.stack([mu[:, 0], jitter], axis=1)
            ylabel = "random jitter (no meaning; J = 1)"
        xlabel = "z1 (mean of q(z|x))"

    fig = _new_figure(6.5, 5.5)
    ax = fig.add_subplot()
    style = dict(s=4, alpha=0.6, linewidths=0)
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], color="C0", **style)
    else:
        classes = np.unique(labels)
        discrete = len(classes) <= 10 and (
            not np.issubdtype(labels.dtype, np.number) or np.all(np.mod(classes.astype(float), 1) == 0))
        if discrete:
            cmap = colormaps["tab10"]
            for k, c in enumerate(classes):
                on = labels == c
                ax.scatter(coords[on, 0], coords[on, 1], color=cmap(k), label=str(c), **style)
            ax.legend(title="label", markerscale=3, fontsize=8, loc="best", framealpha=0.8)
        else:
            points = ax.scatter(coords[:, 0], coords[:, 1], c=labels.astype(float), cmap="viridis", **style)
            fig.colorbar(points, ax=ax, label="label")
    if model.J >= 2:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    shown = f"{M} of {N}" if M < N else f"all {N}"
    ax.set_title(f"latent means of {shown} datapoints (J = {model.J})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


# -- Figures 2 and 3: the paper's comparisons, one panel per cell ------------------------------

#: The colour of each algorithm in Figures 2 and 3 (its legend name: :func:`minivae.run.algorithms.label`).
ALGORITHM_COLOURS = {"aevb": "C3", "wake-sleep": "C0", "mcem": "C2"}


def _comparison_grid(rows, path, ylabel, suptitle, panel_size=(3.2, 2.8)):
    """Panels in rows; in each, every algorithm's train (dashed) and test (solid) curve on a log x axis.

    rows : list of lists of panels; a panel is ``{"title": str, "runs": [run, ...]}`` and a run is
    ``{"algorithm": name, "samples": [...], "train": [...], "test": [...], "finished": bool,
    "budget": int}``, optionally with ``"train_se"`` and ``"test_se"``: the standard error of each
    point, drawn as an error bar of one standard error either side. A panel with no runs says
    "not run yet"; an unfinished run is marked in the legend with how far it got.
    """
    if not rows or not all(isinstance(r, (list, tuple)) and r for r in rows):
        raise ValueError("rows must be a non-empty list of non-empty lists of panels.")
    n_cols = max(len(r) for r in rows)
    fig = _new_figure(panel_size[0] * n_cols, panel_size[1] * len(rows) + 0.9)
    legend = {}                                  # label -> line: one legend for the whole figure
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ax = fig.add_subplot(len(rows), n_cols, i * n_cols + j + 1)
            shown, cut = [], []
            for run in panel.get("runs", []):
                name, colour = algorithm_label(run["algorithm"]), ALGORITHM_COLOURS.get(run["algorithm"], "C7")
                if not run.get("finished", True):
                    cut.append(f"{name}: {run['samples'][-1]:.2g} of {run['budget']:.2g} samples")
                samples = np.asarray(run["samples"], dtype=float)
                for which, style in (("train", "--"), ("test", "-")):
                    values = _as_curve(run, which, len(samples))
                    if values is None:
                        continue
                    keep = (samples > 0) & np.isfinite(values)
                    if keep.any():
                        line, = ax.plot(samples[keep], values[keep], style, color=colour, linewidth=1.2,
                                        label=f"{name} ({which})")
                        shown.append((samples[keep], values[keep], f"{name} ({which})"))
                        legend.setdefault(line.get_label(), line)
                        se = _as_curve(run, f"{which}_se", len(samples))
                        if se is not None and np.isfinite(se[keep]).any():
                            ax.errorbar(samples[keep], values[keep], yerr=np.nan_to_num(se[keep]), fmt="none",
                                        ecolor=colour, elinewidth=0.8, capsize=2)
            ax.set_title(panel.get("title", ""), fontsize=9)
            if shown:
                ax.set_xscale("log")
                _focus_y(ax, shown)
                if cut:
                    ax.text(0.02, 0.98, "unfinished:\n" + "\n".join(cut), transform=ax.transAxes, fontsize=6,
                            va="top", color="0.3")
            else:
                ax.text(0.5, 0.5, "not run yet", transform=ax.transAxes, ha="center", va="center", color="0.5")
                ax.set_xticks([])
                ax.set_yticks([])
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
            if i == len(rows) - 1:
                ax.set_xlabel("# training samples evaluated", fontsize=8)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / fig.get_size_inches()[1]),
                   ncol=len(legend), fontsize=8, frameon=False)
    # Fixed margins rather than tight_layout, which costs seconds for a dozen panels.
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.85 / height,
                        wspace=0.32, hspace=0.38)
    _save(fig, path)
    return fig


def plot_figure2(rows, path=None):
    """The paper's Figure 2: AEVB against wake-sleep, the lower bound per datapoint (estimator B,
    fresh noise) against training samples evaluated, one panel per data set and latent size.

    Parameters
    ----------
    rows : list of lists of panels
        One row per data set (MNIST, Frey Face), one panel per J; see
        :func:`minivae.run.sweep.draw_figure2`, which builds them from a sweep's run directories.
    path : str or Path, optional

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    return _comparison_grid(rows, path, "lower bound per datapoint (nats)",
                            "Figure 2: AEVB vs wake-sleep (dashed: train, solid: test)")


def plot_figure3(rows, path=None):
    """The paper's Figure 3: estimated marginal log-likelihood (Appendix D) against training samples
    evaluated for AEVB, wake-sleep and Monte-Carlo EM; J = 3, one panel per training-set size.
    Each point carries its standard error over the evaluation images (the runs' ``train_se`` and
    ``test_se``), as an error bar.

    Parameters and return value as :func:`plot_figure2`.
    """
    return _comparison_grid(rows, path, "marginal log-likelihood (nats)",
                            "Figure 3: AEVB vs wake-sleep vs MCEM, $N_z$ = 3 (dashed: train, solid: test;\n"
                            "bars: one standard error over the evaluation images)",
                            panel_size=(4.5, 3.4))
