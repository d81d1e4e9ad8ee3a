"""A generated stand-in for MNIST: 28x28 grey-level digits drawn from matplotlib's fonts.

This data set is **not MNIST** and must never be reported as MNIST. It exists
so that a student's first command can train a VAE and show pictures offline,
before the real data set has been downloaded. Numbers (lower bounds, log
likelihoods) measured on it are not comparable with the paper's; label them
``digits-synthetic`` wherever they are shown.

How an image is made
--------------------
1. Once per process (about half a second), every digit 0-9 is rendered
   from the fonts matplotlib ships in ``mpl-data/fonts/ttf`` (DejaVu Sans
   and Serif, STIX and Computer Modern, upright and slanted, normal and
   bold: 17 faces), thinned to its one-pixel centreline (Zhang & Suen), and
   stored as the distance from every point of a 64x64 canvas to that
   centreline. A plain vertical stroke joins the glyphs of "1". Only the
   fonts shipped inside matplotlib are used, never system fonts, so the
   images do not depend on what else is installed.
2. Per image, with every parameter drawn from one ``np.random.Generator``:
   a random affine map (rotation, rightward slant, anisotropic scale) and a
   smooth random displacement field (a coarse "elastic" wobble, in the
   spirit of Simard et al. [2]) are applied by inverse mapping, with
   bilinear interpolation of the distance field. The digit is scaled so its
   longer side is 17.5 to 20.5 pixels, and its centre of mass is put near
   the centre of the 28x28 frame, roughly as MNIST's digits were [1].
3. Ink is laid within half a pen width of the centreline (a round pen 1.7
   to 3.3 pixels wide, whatever the font's own weight), with a one-pixel
   anti-aliased edge, and the image is blurred slightly.

Values are float32 in [0, 1] (background 0, ink near 1, mean about 0.13 as
for MNIST), so the Bernoulli decoder applies as it does to MNIST. The same
seed gives byte-identical arrays on one installation; another FreeType or
matplotlib version may render the fonts a little differently. The cache file
name carries ``FORMAT_VERSION``, to be bumped whenever the generator changes,
so stale caches are never reused.

References
----------
.. [1] Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning
   applied to document recognition", Proc. IEEE 86(11), 1998.
.. [2] P. Y. Simard, D. Steinkraus, J. C. Platt, "Best practices for
   convolutional neural networks applied to visual document analysis",
   ICDAR 2003.
.. [3] T. Y. Zhang, C. Y. Suen, "A fast parallel algorithm for thinning
   digital patterns", Comm. ACM 27(3), 1984.
"""

from __future__ import annotations

import functools
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..utils import CorruptFileError, as_generator, atomic_write, check_scalar
from .paths import user_cache_dir

__all__ = [
    "NAME",
    "IMAGE_SHAPE",
    "FORMAT_VERSION",
    "make_digits",
    "load_digits_synthetic",
    "cache_path",
    "save_preview",
]

NAME = "digits-synthetic"
IMAGE_SHAPE = (28, 28)
FORMAT_VERSION = 2
"""Bump whenever the generator changes, so stale caches are not reused."""

# Fonts shipped in matplotlib's mpl-data/fonts/ttf. DejaVu Sans Mono is left
# out because its zero carries a dot, which handwritten zeros do not.
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
)

_CANVAS = 64  # side of the square canvas each glyph's distance field lives in
_GLYPH_HEIGHT = 40  # height of the digit "0" in canvas pixels, for every font
_CHUNK = 1024  # images rasterised at once; bounds the temporaries to about 100 MB


# --------------------------------------------------------------------------
# Glyph atlas: rendered once per process
# --------------------------------------------------------------------------


def _edt(mask):
    """Exact Euclidean distance from each pixel to the nearest True pixel.

    Two separable passes over squared integer distances, each a broadcast
    minimum (Felzenszwalb & Huttenlocher's decomposition without their
    linear-time envelope, which is fast enough on a 64x64 canvas).

    Parameters
    ----------
    mask : ndarray of bool, shape (G, S, S)

    Returns
    -------
    dist : ndarray of float32, shape (G, S, S)
    """
    G, H, W = mask.shape
    idx = np.arange(max(H, W), dtype=np.int32)
    far = 4 * max(H, W)  # farther than any pixel in the canvas
    dx = np.abs(idx[:W, None] - idx[None, :W])  # (W, W)
    dy2 = (idx[:H, None] - idx[None, :H]) ** 2  # (H, H)
    dist = np.empty((G, H, W), np.float32)
    for start in range(0, G, 16):  # 16 glyphs at a time keep the (16, S, S, S) temporaries small
        m = mask[start : start + 16]
        g = np.where(m[:, :, None, :], dx, far).min(axis=3)  # (16, H, W) distance along the row
        d2 = (g[:, None, :, :] ** 2 + dy2[None, :, :, None]).min(axis=2)  # (16, H, W)
        dist[start : start + 16] = np.sqrt(d2.astype(np.float32))
    return dist


def _render_fonts():
    """Render each (font, digit) glyph as an anti-aliased coverage image.

    Returns
    -------
    coverage : ndarray of float32, shape (F, 10, S, S)
        Ink coverage in [0, 1]; each glyph's ink bounding box is centred.
    fonts : list of str
        The font files used, F of them.
    """
    import matplotlib
    from matplotlib import ft2font

    load_flags = getattr(ft2font, "LoadFlags", None)
    no_hinting = load_flags.NO_HINTING if load_flags is not None else ft2font.LOAD_NO_HINTING
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"

    def render(font, char):
        font.set_text(char, 0.0, flags=no_hinting)
        font.draw_glyphs_to_bitmap(antialiased=True)
        img = np.asarray(font.get_image(), dtype=np.float32) / 255.0
        rows = np.flatnonzero(img.max(axis=1) > 0)
        cols = np.flatnonzero(img.max(axis=0) > 0)
        return img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    S = _CANVAS
    coverage, fonts = [], []
    for name in _FONT_FILES:
        path = font_dir / name
        if not path.is_file():
            continue
        font = ft2font.FT2Font(str(path))
        if any(font.get_char_index(ord(c)) == 0 for c in "0123456789"):
            continue
        # Size the font so that its "0" is _GLYPH_HEIGHT pixels tall.
        font.set_size(100.0, 72)
        size = 100.0 * _GLYPH_HEIGHT / render(font, "0").shape[0]
        font.set_size(size, 72)
        glyphs = np.zeros((10, S, S), np.float32)
        for d in range(10):
            img = render(font, str(d))
            h, w = img.shape
            if h > S - 8 or w > S - 8:
                raise RuntimeError(f"glyph {d} of {name} does not fit the {S}x{S} canvas.")
            top, left = (S - h) // 2, (S - w) // 2
            glyphs[d, top : top + h, left : left + w] = img
        coverage.append(glyphs)
        fonts.append(name)
    if len(fonts) < 4:
        raise RuntimeError(
            f"only {len(fonts)} of matplotlib's fonts were found in {font_dir}; "
            "reinstall matplotlib, whose mpl-data/fonts/ttf folder should hold DejaVu and STIX fonts."
        )
    return np.stack(coverage), fonts


def _thin(mask):
    """Zhang-Suen thinning: reduce each shape to a one-pixel-wide centreline.

    Vectorised over the leading axis; pixels are peeled from the outline in
    alternating passes (south-east, then north-west) until nothing changes,
    never breaking a stroke apart.

    Parameters
    ----------
    mask : ndarray of bool, shape (G, S, S)

    Returns
    -------
    skeleton : ndarray of bool, shape (G, S, S)

    References
    ----------
    T. Y. Zhang, C. Y. Suen, "A fast parallel algorithm for thinning digital
    patterns", Comm. ACM 27(3), 1984.
    """
    m = mask.copy()
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
            # Neighbours P2..P9, clockwise from north.
            P = [p[:, :-2, 1:-1], p[:, :-2, 2:], p[:, 1:-1, 2:], p[:, 2:, 2:],
                 p[:, 2:, 1:-1], p[:, 2:, :-2], p[:, 1:-1, :-2], p[:, :-2, :-2]]  # fmt: skip
            n_on = sum(q.astype(np.int8) for q in P)  # B(P1)
            n_rises = sum((~P[i] & P[(i + 1) % 8]).astype(np.int8) for i in range(8))  # A(P1)
            if step == 0:
                keep = (P[0] & P[2] & P[4]) | (P[2] & P[4] & P[6])
            else:
                keep = (P[0] & P[2] & P[6]) | (P[0] & P[4] & P[6])
            remove = m & (n_on >= 2) & (n_on <= 6) & (n_rises == 1) & ~keep
            if remove.any():
                m &= ~remove
                changed = True
    return m


@functools.lru_cache(maxsize=1)
def _atlas():
    """The glyph atlas every image is drawn from (computed once per process).

    Each glyph is reduced to its centreline, so that every font, light or
    bold, can be redrawn with a round pen of any width, as a hand would
    write it.

    Returns
    -------
    dist : ndarray of float32, shape (G, S, S)
        Distance from each canvas pixel to the glyph's centreline, in canvas
        pixels. Glyph ``g < 10 F`` is font ``g // 10`` and digit ``g % 10``;
        the last glyph, ``G - 1 = 10 F``, is a plain vertical stroke, the
        "1" most hands write and no font has.
    com : ndarray of float64, shape (G, 2)
        Centre of mass (x, y) of each centreline, in canvas pixels.
    points : ndarray of float64, shape (G, P, 2)
        P points (x, y) spread along each centreline, relative to ``com``;
        their image under a linear map gives the distorted glyph's extent.
    italic : ndarray of bool, shape (G,)
        Whether the glyph's face already leans (italic or oblique).
    """
    coverage, fonts = _render_fonts()
    F, _, S, _ = coverage.shape
    # A threshold below one half keeps the hairlines of serif fonts joined.
    skeleton = _thin(coverage.reshape(F * 10, S, S) >= 0.3)  # (10 F, S, S)
    stroke = np.zeros((1, S, S), bool)
    stroke[0, (S - _GLYPH_HEIGHT) // 2 : (S + _GLYPH_HEIGHT) // 2, S // 2] = True
    skeleton = np.concatenate([skeleton, stroke])  # (G, S, S)
    dist = _edt(skeleton)  # (G, S, S)

    P = 128
    G = len(skeleton)
    com = np.empty((G, 2))
    points = np.empty((G, P, 2))
    for g in range(G):
        ys, xs = np.nonzero(skeleton[g])
        com[g] = xs.mean(), ys.mean()
        pick = np.linspace(0, len(xs) - 1, P).round().astype(int)
        points[g] = np.stack([xs[pick], ys[pick]], axis=1) - com[g]
    leaning = [any(tag in name for tag in ("Oblique", "Italic", "Ita", "cmti")) for name in fonts]
    italic = np.append(np.repeat(leaning, 10), False)  # (G,)
    return dist, com, points, italic


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


def _draw_params(n, rng):
    """Draw every random choice for ``n`` images, in a fixed order.

    Everything random is drawn here, up front, so the images do not depend
    on how the rasterisation is split into chunks.
    """
    italic = _atlas()[3]  # (G,)
    n_glyphs = len(italic)
    n_fonts = (n_glyphs - 1) // 10
    y = np.arange(n, dtype=np.int64) % 10  # balanced classes ...
    y = y[rng.permutation(n)]  # ... in random order
    p = {"y": y}
    glyph = rng.integers(0, n_fonts, size=n) * 10 + y  # (N,)
    plain_one = (y == 1) & (rng.random(n) < 0.4)  # two ones in five are a bare stroke
    p["glyph"] = np.where(plain_one, n_glyphs - 1, glyph)
    p["angle"] = np.deg2rad(np.clip(rng.normal(0.0, 5.0, size=n), -12.0, 12.0))  # rotation
    # x -= slant * y: the top leans right, as in most hands; italic faces
    # lean already (by about 0.2), so they get less.
    slant = np.clip(rng.normal(0.1, 0.15, size=n), -0.3, 0.45)
    p["slant"] = slant - 0.15 * italic[p["glyph"]]
    p["aspect"] = np.exp(rng.normal(0.0, 0.1, size=n))  # width / height
    p["box"] = rng.uniform(17.5, 20.5, size=n)  # longer side of the digit, pixels
    p["shift"] = rng.normal(0.0, 0.4, size=(n, 2))  # centre of mass offset, pixels
    p["pen"] = rng.uniform(1.7, 3.3, size=n)  # stroke width, pixels
    p["wobble"] = rng.normal(0.0, 0.6, size=(n, 2, 4, 4))  # coarse (x, y) displacement grid, pixels
    p["blur"] = rng.uniform(0.0, 0.15, size=n)  # weight of each 4-neighbour in the blur
    return p


def _upsample_matrix(n_coarse, n_fine):
    """(n_fine, n_coarse) bilinear interpolation matrix, end points aligned."""
    t = np.linspace(0.0, n_coarse - 1.0, n_fine)
    i0 = np.minimum(np.floor(t).astype(int), n_coarse - 2)
    f = t - i0
    U = np.zeros((n_fine, n_coarse))
    U[np.arange(n_fine), i0] = 1.0 - f
    U[np.arange(n_fine), i0 + 1] = f
    return U


def _rasterise(p, sl):
    """Draw the images ``sl`` (a slice) of the parameter set ``p``.

    Returns
    -------
    X : ndarray of float32, shape (M, 28, 28)
    """
    field, com, points, _ = _atlas()
    S = field.shape[-1]
    H, W = IMAGE_SHAPE
    glyph = p["glyph"][sl]
    M = len(glyph)

    # Linear part of the forward map glyph -> image, before scaling:
    # A = rotation @ [[1, -slant], [0, 1]] @ diag(aspect, 1), shape (M, 2, 2).
    # Image y points down, so a positive slant moves the top to the right.
    c, s = np.cos(p["angle"][sl]), np.sin(p["angle"][sl])
    k, a = p["slant"][sl], p["aspect"][sl]
    A = np.empty((M, 2, 2))
    A[:, 0, 0] = c * a
    A[:, 0, 1] = -c * k - s
    A[:, 1, 0] = s * a
    A[:, 1, 1] = -s * k + c
    # Scale so that the digit's longer side, pen width included, is `box` pixels.
    pts = points[glyph] @ A.transpose(0, 2, 1)  # (M, P, 2)
    pts_min, pts_max = pts.min(axis=1), pts.max(axis=1)  # (M, 2) each
    extent = (pts_max - pts_min).max(axis=1)  # (M,) longer side of the centreline
    pen = p["pen"][sl]
    scale = (p["box"][sl] - pen) / extent  # image pixels per canvas pixel
    centre = np.array([(W - 1) / 2.0, (H - 1) / 2.0]) + p["shift"][sl]  # (M, 2)
    # Centring the mass can push a lopsided digit (a 7) off the frame; move
    # it back so its box keeps a one-pixel margin.
    reach = (pen / 2.0 + 1.0)[:, None]  # (M, 1)
    low = centre + scale[:, None] * pts_min - reach  # (M, 2) top-left corner
    high = centre + scale[:, None] * pts_max + reach  # (M, 2) bottom-right corner
    centre = centre + np.maximum(0.0, -low) - np.maximum(0.0, high - [W - 1.0, H - 1.0])

    # Inverse map, image pixel u -> canvas point q:
    #   q = com + (A^-1 / scale) (u - centre - wobble(u)),
    # evaluated in float32 (ample for a 64-pixel canvas, and twice as fast).
    A_inv = (np.linalg.inv(A) / scale[:, None, None]).astype(np.float32)  # (M, 2, 2)
    U_y, U_x = _upsample_matrix(4, H), _upsample_matrix(4, W)
    wobble = (U_y @ p["wobble"][sl] @ U_x.T).astype(np.float32)  # (M, 2, H, W)
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)  # (H, W) each
    dx = u - centre[:, 0, None, None].astype(np.float32) - wobble[:, 0]  # (M, H, W)
    dy = v - centre[:, 1, None, None].astype(np.float32) - wobble[:, 1]  # (M, H, W)
    c_g = com[glyph].astype(np.float32)  # (M, 2)
    qx = c_g[:, 0, None, None] + A_inv[:, 0, 0, None, None] * dx + A_inv[:, 0, 1, None, None] * dy
    qy = c_g[:, 1, None, None] + A_inv[:, 1, 0, None, None] * dx + A_inv[:, 1, 1, None, None] * dy

    # Bilinear interpolation of the distance field; points off the canvas
    # take the value at its edge, which is background.
    np.clip(qx, 0.0, S - 1.001, out=qx)
    np.clip(qy, 0.0, S - 1.001, out=qy)
    x0, y0 = qx.astype(np.int32), qy.astype(np.int32)  # floor, as q >= 0
    fx, fy = qx - x0, qy - y0
    flat = field.reshape(-1)
    i00 = (glyph * S * S).astype(np.int32)[:, None, None] + y0 * S + x0  # (M, H, W)
    f00, f01 = flat[i00], flat[i00 + 1]
    f10, f11 = flat[i00 + S], flat[i00 + S + 1]
    top = f00 + fx * (f01 - f00)
    bottom = f10 + fx * (f11 - f10)
    dist = top + fy * (bottom - top)  # (M, H, W) canvas pixels from the centreline

    # Ink within pen / 2 of the centreline, with a one-pixel linear ramp at
    # the edge of the stroke (anti-aliasing).
    to_image = (scale * np.sqrt(np.abs(np.linalg.det(A))))[:, None, None].astype(np.float32)
    half_pen = (pen / 2.0)[:, None, None].astype(np.float32)
    img = np.clip(0.5 - (dist * to_image - half_pen), 0.0, 1.0)  # (M, H, W)

    # A light blur: each pixel mixes with its four neighbours.
    b = p["blur"][sl].astype(np.float32)[:, None, None]
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)))
    neigh = pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
    img = (img + b * neigh) / (1.0 + 4.0 * b)
    return img  # float32 throughout


def make_digits(n, seed=0):
    """Generate ``n`` synthetic digit images and their labels (no disk access).

    Parameters
    ----------
    n : int
        Number of images, N.
    seed : None, int or np.random.Generator
        Source of all randomness; the same int gives byte-identical arrays.

    Returns
    -------
    X : ndarray of float32, shape (N, 784)
        Images flattened row by row (reshape to ``(N, 28, 28)`` to view),
        values in [0, 1], background 0, ink near 1.
    y : ndarray of int64, shape (N,)
        Digit labels 0-9, each class ``N // 10`` or ``N // 10 + 1`` times,
        in random order.

    Notes
    -----
    This is a generated stand-in, not MNIST; see the module docstring.
    """
    check_scalar(n, "n (images)", int, min_val=0)
    n = int(n)
    rng = as_generator(seed)
    p = _draw_params(n, rng)
    X = np.empty((n, IMAGE_SHAPE[0] * IMAGE_SHAPE[1]), np.float32)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        X[sl] = _rasterise(p, sl).reshape(sl.stop - sl.start, -1)
    return X, p["y"]


# --------------------------------------------------------------------------
# Cached splits
# --------------------------------------------------------------------------

_SPLITS = ("train", "test")


def cache_path(seed=0, n_train=20000, n_test=5000, cache_dir=None) -> Path:
    """The ``.npz`` file holding both splits for these arguments.

    The name encodes the format version, seed and sizes, e.g.
    ``digits-synthetic-v2-seed0-train20000-test5000.npz``.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else user_cache_dir() / NAME
    return folder / f"{NAME}-v{FORMAT_VERSION}-seed{seed}-train{n_train}-test{n_test}.npz"


def _read_cache(path, n_train, n_test):
    """Load both splits from ``path``; raise CorruptFileError if anything is off."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ValueError("it holds a single array, not an .npz archive")
        with f:
            arrays = {key: f[key] for key in ("X_train", "y_train", "X_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CorruptFileError(f"{path} is not a readable .npz file ({err}).") from err
    D = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    for split, n in (("train", n_train), ("test", n_test)):
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if X.shape != (n, D) or X.dtype != np.float32 or y.shape != (n,) or y.dtype != np.int64:
            raise CorruptFileError(f"{path} holds arrays of the wrong shape or type for the {split} split.")
    return arrays


def load_digits_synthetic(split="train", seed=0, cache_dir=None, n_train=20000, n_test=5000):
    """The synthetic digits (a generated stand-in, NOT MNIST), cached on disk.

    Both splits are generated on the first call and saved together to one
    compressed ``.npz`` file (about 4 s on two cores for the default 25,000
    images: 3 s to draw them, 1 s to compress them); later calls load that
    file in about 0.2 s. The train and test splits
    come from two independent random streams spawned from ``seed``, so no
    test image is a copy of a training image.

    Parameters
    ----------
    split : {"train", "test"}
    seed : int
        Seed of the whole data set; each seed gives a different data set.
    cache_dir : str, Path or None
        Folder of the cache file; default ``user_cache_dir() / "digits-synthetic"``.
    n_train, n_test : int
        Sizes of the two splits. The defaults, 20,000 and 5,000 (a third of
        MNIST's training set and half its test set), keep the first call to
        a few seconds and the cache file to about 20 MB.

    Returns
    -------
    X : ndarray of float32, shape (N, 784)
        Values in [0, 1]; reshape to ``(N, 28, 28)`` to view.
    y : ndarray of int64, shape (N,)
        Digit labels 0-9, balanced.

    Warns
    -----
    UserWarning
        If the cache file exists but cannot be read; it is then regenerated.

    Notes
    -----
    Results on this data set must be labelled ``digits-synthetic``, never
    reported as MNIST.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}.")
    check_scalar(seed, "seed (it names the cache file)", int, min_val=0)
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        check_scalar(n, name, int, min_val=1)
    seed, n_train, n_test = int(seed), int(n_train), int(n_test)
    path = cache_path(seed, n_train, n_test, cache_dir)

    arrays = None
    if path.exists():
        try:
            arrays = _read_cache(path, n_train, n_test)
        except CorruptFileError as err:
            warnings.warn(f"{err} Regenerating the synthetic digits and overwriting it.", stacklevel=2)
    if arrays is None:
        train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
        X_train, y_train = make_digits(n_train, np.random.default_rng(train_seq))
        X_test, y_test = make_digits(n_test, np.random.default_rng(test_seq))
        arrays = {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}
        with atomic_write(path) as f:
            np.savez_compressed(f, **arrays)
    return arrays[f"X_{split}"], arrays[f"y_{split}"]


# --------------------------------------------------------------------------
# Preview
# --------------------------------------------------------------------------


def save_preview(path, n_per_class=10, seed=0, zoom=2):
    """Save a grid of generated digits as a PNG: one row per class, 0 at the top.

    ``python -m minivae.data.synthetic docs/img/digits-synthetic.png``
    regenerates the picture in the documentation.

    Parameters
    ----------
    path : str or Path
    n_per_class : int
        Number of columns.
    seed : None, int or np.random.Generator
    zoom : int
        Each image pixel becomes a ``zoom x zoom`` block, so the digits can
        be seen on a screen.
    """
    import matplotlib.pyplot as plt

    X, y = make_digits(10 * n_per_class, seed)
    order = np.argsort(y, kind="stable")  # (10 * n_per_class,) grouped by class
    H, W = IMAGE_SHAPE
    tiles = X[order].reshape(10, n_per_class, H, W)
    framed = np.full((10, n_per_class, H + 2, W + 2), 0.25, np.float32)  # grey frame
    framed[:, :, 1:-1, 1:-1] = tiles
    grid = framed.transpose(0, 2, 1, 3).reshape(10 * (H + 2), n_per_class * (W + 2))
    grid = np.repeat(np.repeat(grid, zoom, axis=0), zoom, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)


if __name__ == "__main__":
    import sys

    save_preview(sys.argv[1] if len(sys.argv) > 1 else "digits-synthetic.png")
