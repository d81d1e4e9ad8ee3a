"""The documentation site builds with Sphinx, warnings as errors, and its API pages name every public name;
every function, class and test the paper map names exists.

The build renders the notebooks with their outputs: to execute each notebook once
per CI run, it is given the copies that ``notebook_runner`` executed (the same
ones ``tests/test_notebooks.py`` checks) through ``MINIVAE_DOCS_NOTEBOOKS``.
"""

import html
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from notebook_runner import NOTEBOOKS, executed



def _public_modules():
    import minivae
    names = ["minivae"] + [m.name for m in pkgutil.walk_packages(minivae.__path__, "minivae.")
                           if not m.name.split(".")[-1].startswith("_")]
    return sorted(names)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("sphinx", reason="Sphinx is needed to build the docs (pip install -e '.[docs]')")
    pytest.importorskip("numpydoc", reason="numpydoc is needed to build the docs (pip install -e '.[docs]')")
    pytest.importorskip("myst_nb", reason="myst-nb is needed to build the docs (pip install -e '.[docs]')")
    import nbformat
    notebooks = tmp_path_factory.mktemp("executed")
    for path in NOTEBOOKS:
        nbformat.write(executed(path), notebooks / path.name)
    out = tmp_path_factory.mktemp("html")
    env = {**os.environ, "MINIVAE_DOCS_NOTEBOOKS": str(notebooks)}
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
                           str(REPO_ROOT / "docs"), str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stderr[-6000:]}"
    return out


def _text(path):
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


@pytest.mark.slow   # executes every notebook in quick mode (shared with test_notebooks), then builds the site
def test_site_builds_without_warnings_and_renders_every_page(site):
    for page in ["index", "paper-map", "derivations", "results", "data", "performance", "api/index"]:
        assert (site / f"{page}.html").is_file(), f"the site has no {page} page"
    for path in NOTEBOOKS:
        page = site / "notebooks" / f"{path.stem}.html"
        assert page.is_file(), f"{path.name} is not rendered"
        text = _text(page)
        assert "notebook OK" in text, f"{path.name} is rendered without its outputs"
    training = next(p for p in NOTEBOOKS if p.stem.startswith("03_"))
    assert "<img" in (site / "notebooks" / f"{training.stem}.html").read_text(), "notebook 3's figures are missing"


@pytest.mark.slow
def test_every_name_in_every_modules_all_is_in_the_api_reference(site):
    anchors = set()
    for page in (site / "api").glob("*.html"):
        anchors |= set(re.findall(r'id="(minivae[\w.]*)"', page.read_text(encoding="utf-8")))
    missing = []
    for modname in _public_modules():
        page = site / "api" / f"{modname}.html"
        assert page.is_file(), f"the API reference has no page for {modname}"
        text = _text(page)
        for name in getattr(importlib.import_module(modname), "__all__", []):
            exporters = [m for m in _public_modules() if name in getattr(importlib.import_module(m), "__all__", [])]
            documented = any(f"{m}.{name}" in anchors for m in exporters)   # here, or where it is defined
            if not (documented and re.search(rf"\b{re.escape(name)}\b", text)):
                missing.append(f"{modname}.{name}")
    assert not missing, f"not documented in the API pages: {missing}"


def _resolve(dotted):
    """The object a paper-map name like ``estimator.reparameterize`` or ``VAE.loss_and_grads`` names, or None."""
    head, *rest = dotted.split(".")
    candidates = []
    try:
        candidates.append(importlib.import_module(f"minivae.{head}"))
    except ImportError:
        pass
    for modname in _public_modules():
        obj = getattr(importlib.import_module(modname), head, None)
        if inspect.isclass(obj):
            candidates.append(obj)
    for obj in candidates:
        for part in rest:
            obj = getattr(obj, part, None)
        if obj is not None:
            return obj
    return None


def _exported(name):
    return any(name in getattr(importlib.import_module(m), "__all__", []) for m in _public_modules())


def test_every_function_and_test_the_paper_map_names_exists():
    text = (REPO_ROOT / "docs" / "paper-map.md").read_text(encoding="utf-8")
    problems, checked = [], 0
    for code in re.findall(r"`([^`]+)`", text):
        for path, test in re.findall(r"((?:tests/)?test_\w+\.py)::(test_\w+)", code):
            checked += 1
            file = REPO_ROOT / (path if path.startswith("tests/") else f"tests/{path}")
            if not file.is_file() or not re.search(rf"^def {test}\(", file.read_text(), flags=re.M):
                problems.append(f"{path}::{test}")
        call = re.fullmatch(r"([A-Za-z_]\w*(?:\.\w+)+)(?:\((.*)\))?", code.strip())
        if call:
            checked += 1
            obj = _resolve(call.group(1))
            if obj is None:
                problems.append(code)
                continue
            keywords = re.findall(r"(\w+)=", call.group(2) or "")
            if keywords and callable(obj):
                params = inspect.signature(obj).parameters
                problems += [f"{code} (no parameter {k!r})" for k in keywords if k not in params]
        elif re.fullmatch(r"[a-z]\w*_(?:backward|grad)", code.strip()):
            checked += 1
            if not _exported(code.strip()):
                problems.append(code)
    assert checked > 20, f"the paper map names only {checked} things the test could check"
    assert not problems, f"the paper map names what does not exist: {problems}"
