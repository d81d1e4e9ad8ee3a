"""Run a notebook in quick mode once per test session (shared by test_notebooks and test_docs).

The documentation build renders the notebooks with their outputs; rather than
execute each one twice in a CI run, ``tests/test_docs.py`` builds the site from
the copies this module executed (``MINIVAE_DOCS_NOTEBOOKS``, see docs/conf.py),
and ``tests/test_notebooks.py`` checks the same executed copies.
"""

import functools
import os
import shutil
import tempfile

import pytest

from conftest import REPO_ROOT, real_data_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def require_kernel():
    pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks (pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="ipykernel is needed to execute the notebooks (pip install ipykernel)")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel is installed (python -m ipykernel install --user)")


def quick_environment():
    """The kernel's environment: quick mode, this checkout of minivae, the real data when present."""
    env = dict(os.environ)
    env.pop("MINIVAE_FULL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    if not env.get("MINIVAE_DATA") and real_data_dir().is_dir():
        env["MINIVAE_DATA"] = str(real_data_dir())
    return env


@functools.lru_cache(maxsize=None)
def executed(path):
    """The notebook at ``path`` run top to bottom in quick mode (cached for the session).

    Raises nbclient's CellExecutionError, with the failing cell and its traceback.
    """
    import nbclient
    import nbformat

    require_kernel()
    nb = nbformat.read(path, as_version=4)
    workdir = tempfile.mkdtemp(prefix=f"minivae-{path.stem}-")     # the kernel's cwd: what a notebook writes
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": workdir}})
        client.execute(env=quick_environment())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return nb
