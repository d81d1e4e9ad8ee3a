"""Every notebook in notebooks/ runs from top to bottom in quick mode.

Each notebook's check cells ``assert`` what they print, so a library that breaks
the meaning of a result (not only its shape) makes its notebook fail here. Quick
mode (``MINIVAE_QUICK=1``) keeps each notebook to seconds; the data are MNIST when
``MINIVAE_DATA`` points at it, else the generated "digits-synthetic" set.
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to read the notebooks (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks (pip install -e '.[test]')")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MARKER = "notebook OK"  # the last cell of every notebook prints it


def _require_kernel():
    pytest.importorskip("ipykernel", reason="ipykernel is needed to execute the notebooks (pip install ipykernel)")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel is installed (python -m ipykernel install --user)")


def _printed(nb):
    """All text the notebook's code cells wrote to stdout."""
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, f"expected the four notebooks in {NOTEBOOK_DIR}, found {len(NOTEBOOKS)}"


@pytest.mark.slow  # trains models: run by the jitted pass, skipped by the NUMBA_DISABLE_JIT pass
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    _require_kernel()
    monkeypatch.setenv("MINIVAE_QUICK", "1")   # the kernel inherits this process's environment
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them so that it diffs well"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError, with the failing cell and its traceback
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors
    assert MARKER in _printed(nb), f"{path.name} did not reach its last cell (no {MARKER!r} printed)"
