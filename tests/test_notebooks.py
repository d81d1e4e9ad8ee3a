"""Every notebook in notebooks/ runs from top to bottom in quick mode, and is committed without outputs.

Each notebook's check cells ``assert`` what they print, so a library that breaks
the meaning of a result (not only its shape) makes its notebook fail here. Quick
mode is every notebook's default (``MINIVAE_FULL=1`` would switch to the full
run, so the test removes it); the kernel imports this checkout of minivae and
reads the real data from ``$MINIVAE_DATA`` or ``../shared/data`` when they exist
(notebooks 3 and 4 fall back to the generated "digits-synthetic" set, notebook 8
skips its training with a note).
"""

import pytest

from notebook_runner import NOTEBOOK_DIR, NOTEBOOKS, executed

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to read the notebooks (pip install -e '.[test]')")

MARKER = "notebook OK"  # the last cell of every notebook prints it


def _printed(nb):
    """All text the notebook's code cells wrote to stdout."""
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_there_are_notebooks_for_the_whole_paper():
    stems = {p.stem[:2] for p in NOTEBOOKS}
    assert {f"{k:02d}" for k in range(1, 11)} <= stems, f"expected notebooks 01 to 10 in {NOTEBOOK_DIR}, found {sorted(stems)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs_cleared(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name} is committed with outputs in cells {dirty}; clear them so that it diffs well"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_the_paper_and_checks_what_it_prints(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "$" in markdown, f"{path.name} shows no equation in its markdown cells"
    assert "import minivae" in code or "from minivae" in code, f"{path.name} does not call the library"
    assert "assert " in code, f"{path.name} asserts nothing"
    assert 'os.environ.get("MINIVAE_FULL") != "1"' in code, f"{path.name} lacks the one quick/full switch"
    assert MARKER in nb.cells[-1].source, f"the last cell of {path.name} should print {MARKER!r}"


@pytest.mark.slow  # trains models: run by the jitted pass, skipped by the NUMBA_DISABLE_JIT pass
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path):
    nb = executed(path)   # raises CellExecutionError, with the failing cell and its traceback
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors
    assert MARKER in _printed(nb), f"{path.name} did not reach its last cell (no {MARKER!r} printed)"
