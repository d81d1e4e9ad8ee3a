"""Sphinx configuration of the minivae documentation site.

Why Sphinx with numpydoc and myst-nb: the docstrings are numpydoc (sections
with shapes, ``.. math::`` blocks), which numpydoc renders; the pages are
Markdown, which MyST reads; and myst-nb executes the notebooks at build time
and renders them with their outputs (the repository keeps them cleared).

Two folders are generated at every build and are not part of the repository:
``docs/api/`` (one page per module, listing every name of its ``__all__``, so a
new module or name appears without editing anything here) and
``docs/notebooks/`` (copies of ``notebooks/*.ipynb``, executed during the
build, or already executed ones from ``$MINIVAE_DOCS_NOTEBOOKS``). Build with::

    sphinx-build -W -b html docs docs/_build/html
"""

import importlib
import inspect
import os
import pkgutil
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))                 # document this checkout, wherever minivae is installed
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # the kernels too

import minivae  # noqa: E402

project = "minivae"
author = "the minivae authors"
copyright = "the minivae authors, MIT licence"
release = version = minivae.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.viewcode", "numpydoc", "myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "img"]
html_theme = "alabaster"
html_theme_options = {"description": "AEVB (Kingma & Welling) in NumPy, every gradient by hand", "fixed_sidebar": True}
html_static_path = []
# numpydoc renames the citations of a References section; one that the text does not cite
# would warn, and the references are listed for reading, not cited.
suppress_warnings = ["ref.citation"]

autodoc_member_order = "bysource"
autodoc_default_options = {"undoc-members": False}
numpydoc_show_class_members = False          # methods are listed by autodoc itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# Every build runs the notebooks, in quick mode (their default), unless MINIVAE_DOCS_NOTEBOOKS names a
# folder of copies already executed (tests/test_docs.py passes the ones tests/test_notebooks.py ran).
EXECUTED = os.environ.get("MINIVAE_DOCS_NOTEBOOKS")
nb_execution_mode = "off" if EXECUTED else "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True           # a failing check cell fails the build
nb_execution_in_temp = True
nb_merge_streams = True


# --- the notebooks: copied beside the pages ---------------------------------------

def _copy_notebooks():
    target = DOCS / "notebooks"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        source = Path(EXECUTED) / nb.name if EXECUTED else nb
        if not source.is_file():
            raise FileNotFoundError(f"MINIVAE_DOCS_NOTEBOOKS={EXECUTED} has no executed copy of {nb.name}; "
                                    "unset it to execute the notebooks during the build.")
        shutil.copy2(source, target / nb.name)


# --- the API pages: one per module, every name of its __all__ ---------------------

def _modules():
    names = ["minivae"]
    for info in pkgutil.walk_packages(minivae.__path__, "minivae."):
        if not info.name.split(".")[-1].startswith("_"):
            names.append(info.name)
    return sorted(names)


def _defines(module, name):
    """True if the source of ``module`` assigns or defines ``name`` at its top level."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return False
    return any(line.startswith((f"{name} =", f"{name}:", f"def {name}(", f"class {name}(", f"class {name}:"))
               for line in source.splitlines())


def _origin(modname, name, obj):
    """The module whose API page documents ``name``: where it is defined, if that module exports it."""
    origin = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
    if origin is None:
        module = importlib.import_module(modname)
        if _defines(module, name):
            return modname
        origin = next((m for m in _modules() if m != modname and _defines(importlib.import_module(m), name)), modname)
    if origin != modname and name not in getattr(importlib.import_module(origin), "__all__", []):
        return modname                        # re-exported from a module that does not list it: documented here
    return origin


def _api_page(modname):
    module = importlib.import_module(modname)
    title = f"``{modname}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", ""]
    elsewhere = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        origin = _origin(modname, name, obj)
        if origin != modname:
            elsewhere.append((name, origin))
        elif inspect.isclass(obj):
            lines += [f".. autoclass:: {modname}.{name}", "   :members:", "   :show-inheritance:", ""]
        elif inspect.isfunction(obj) or callable(obj):
            lines += [f".. autofunction:: {modname}.{name}", ""]
        else:
            lines += [f".. autodata:: {modname}.{name}", "   :no-value:" if isinstance(obj, dict) else "", ""]
    if elsewhere:
        lines += ["Also available here (documented where they are defined):", ""]
        lines += [f"- ``{name}``: :py:obj:`{origin}.{name}`" for name, origin in elsewhere] + [""]
    return "\n".join(lines)


ROOMS = ["baselines", "teaching", "run", "fast"]     # after the core, as docs/architecture.md lists them


def _room(modname):
    """Where the API index lists a module: the package, the core, then each room (``minivae.baselines``, ...)."""
    parts = modname.split(".")
    if len(parts) == 1:
        return 0
    return 2 + ROOMS.index(parts[1]) if parts[1] in ROOMS else 1


def _write_api():
    target = DOCS / "api"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    mods = sorted(_modules(), key=lambda m: (_room(m), m))
    for modname in mods:
        (target / f"{modname}.rst").write_text(_api_page(modname))
    index = ["API reference", "=============", "",
             "Every public name of every module (its ``__all__``), from the numpydoc docstrings. The modules",
             "are listed room by room: the core, then :mod:`minivae.baselines`, :mod:`minivae.teaching`,",
             ":mod:`minivae.run` and the fast twin, :mod:`minivae.fast`.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {m}" for m in mods]
    (target / "index.rst").write_text("\n".join(index) + "\n")


_copy_notebooks()
_write_api()
