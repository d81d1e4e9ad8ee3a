"""From the one solution source to nbgrader's two notebooks: the teacher's and the students'.

The solution source is :file:`aevb_source.py` beside this module, a Python file in
the "percent" cell format (``# %%`` starts a cell): it runs as a script, diffs as
code, and is the only copy of the solutions. Each cell header says what the cell is
to nbgrader::

    # %% [markdown]                               a text cell
    # %% nbgrader=setup                           read-only code (imports)
    # %% nbgrader=solution id=linear_backward     the student writes this cell
    # %% nbgrader=test id=test_linear points=2    an autograded test cell (locked)
    # %% nbgrader=demo                            plain code, not graded (a longer run)

:func:`make_notebooks` writes nbgrader's course layout:

- ``source/aevb/aevb.ipynb``: the teacher's version, solutions between
  ``### BEGIN SOLUTION`` / ``### END SOLUTION``, each cell's ``nbgrader`` metadata
  (``grade``, ``grade_id``, ``locked``, ``points``, ``solution``, ``schema_version: 3``),
  what ``nbgrader generate_assignment`` takes as input;
- ``release/aevb/aevb.ipynb``: the students' version, made as nbgrader's
  ``ClearSolutions`` preprocessor makes it (each solution region replaced by
  ``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at its indentation), outputs
  cleared, and the checksums of ``ComputeChecksums`` in the graded and locked cells.

nbgrader itself is not needed (it pulls in a Jupyter server and a database); where it
is installed, ``tests/test_exercises.py`` holds this output to its preprocessors.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cell", "SOURCE", "ASSIGNMENT", "parse_source", "clear_solutions", "to_notebook", "make_notebooks",
           "notebook_text", "read_cells", "nbgrader_checksum", "BEGIN", "END", "STUB"]

#: The solution source, the one copy of the solutions.
SOURCE = Path(__file__).with_name("aevb_source.py")
#: The assignment's name in nbgrader's course layout.
ASSIGNMENT = "aevb"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
#: What nbgrader's ClearSolutions puts in place of a Python solution region.
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")

_HEADER = re.compile(r"^# %%(?P<rest>.*)$")


@dataclass
class Cell:
    """One cell: ``kind`` is markdown, setup, solution, test or demo."""

    kind: str
    source: str
    grade_id: str | None = None
    points: float | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def cell_type(self):
        return "markdown" if self.kind == "markdown" else "code"


def _parse_header(rest, lineno):
    rest = rest.strip()
    if rest == "[markdown]":
        return "markdown", {}
    attrs = dict(part.split("=", 1) for part in rest.split())
    kind = attrs.pop("nbgrader", None)
    if kind not in ("setup", "solution", "test", "demo"):
        raise ValueError(f"line {lineno} of the exercise source: a cell header needs [markdown] or "
                         f"nbgrader=setup|solution|test|demo, not {rest!r}.")
    return kind, attrs


def parse_source(text):
    """The cells of a percent-format source, in order."""
    cells, kind, attrs, lines = [], None, None, []

    def close():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.split("\n"))
        cells.append(Cell(kind, body, attrs.get("id"), float(attrs["points"]) if "points" in attrs else None, attrs))

    for lineno, line in enumerate(text.split("\n"), 1):
        m = _HEADER.match(line)
        if m:
            close()
            kind, attrs = _parse_header(m.group("rest"), lineno)
            lines = []
        elif kind is None:
            if line.strip():
                raise ValueError(f"line {lineno} of the exercise source lies before the first '# %%' cell header.")
        else:
            lines.append(line)
    close()
    ids = [c.grade_id for c in cells if c.grade_id]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"the exercise source repeats the cell ids {dup}; each needs its own.")
    for c in cells:
        if c.kind in ("solution", "test") and not c.grade_id:
            raise ValueError(f"a {c.kind} cell of the exercise source has no id=...; give it one.")
        if c.kind == "test" and c.points is None:
            raise ValueError(f"the test cell {c.grade_id} has no points=...; give it some.")
        if (BEGIN in c.source) != (c.kind == "solution"):
            raise ValueError(f"cell {c.grade_id or c.kind}: solution markers belong in solution cells, "
                             "and every solution cell needs them.")
    return cells


def clear_solutions(source):
    """Replace each BEGIN/END SOLUTION region by nbgrader's stub, at the BEGIN line's indentation."""
    out, inside = [], False
    for line in source.split("\n"):
        if BEGIN in line:
            if inside:
                raise ValueError("nested '### BEGIN SOLUTION' in the exercise source.")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + s for s in STUB)
        elif END in line:
            if not inside:
                raise ValueError("'### END SOLUTION' without a BEGIN in the exercise source.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("a '### BEGIN SOLUTION' in the exercise source has no END.")
    return "\n".join(out)


def _nbgrader_meta(cell):
    if cell.kind == "setup":
        return {"grade": False, "grade_id": cell.grade_id or "setup", "locked": True, "schema_version": 3,
                "solution": False, "task": False}
    if cell.kind == "solution":
        return {"grade": False, "grade_id": cell.grade_id, "locked": False, "schema_version": 3,
                "solution": True, "task": False}
    if cell.kind == "test":
        return {"grade": True, "grade_id": cell.grade_id, "locked": True, "points": cell.points,
                "schema_version": 3, "solution": False, "task": False}
    return None


def nbgrader_checksum(cell_type, source, meta):
    """The md5 that nbgrader's ComputeChecksums stores (source, type, flags, id, points)."""
    m = hashlib.md5()
    locked = False if meta["solution"] else (True if meta["grade"] else meta["locked"])   # nbgrader's is_locked
    for part in (source, cell_type, str(meta["grade"]), str(meta["solution"]), str(locked), meta["grade_id"]):
        m.update(part.encode("utf-8"))
    if meta["grade"]:
        m.update(str(float(meta["points"])).encode("utf-8"))
    return m.hexdigest()


def _lines(text):
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]] if text else []


def to_notebook(cells, student):
    """A notebook (a JSON-able dict, nbformat 4.5) of the cells; ``student`` clears the solutions."""
    nb_cells = []
    setup_count = 0
    for cell in cells:
        source = clear_solutions(cell.source) if student and cell.kind == "solution" else cell.source
        if cell.kind == "setup" and not cell.grade_id:
            setup_count += 1
            cell = Cell(cell.kind, cell.source, f"setup{'' if setup_count == 1 else setup_count}")
        meta = {}
        nbg = _nbgrader_meta(cell)
        if nbg is not None:
            nbg = dict(nbg)
            if student:
                nbg["checksum"] = nbgrader_checksum(cell.cell_type, source, nbg)
                nbg["cell_type"] = cell.cell_type
            meta["nbgrader"] = dict(sorted(nbg.items()))
        if cell.kind == "demo":
            meta["tags"] = ["demo"]
        if cell.kind in ("setup", "test"):
            meta["deletable"] = False
            meta["editable"] = False
        entry = {"cell_type": cell.cell_type, "id": _cell_id(cell, len(nb_cells)), "metadata": meta,
                 "source": _lines(source)}
        if cell.cell_type == "code":
            entry["execution_count"] = None
            entry["outputs"] = []
        nb_cells.append(entry)
    return {"cells": nb_cells,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def _cell_id(cell, index):
    return (cell.grade_id or f"{cell.kind}-{index}").replace("_", "-")


def notebook_text(nb):
    """The file text of a notebook dict (Jupyter's own layout: indent 1, sorted keys, final newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def make_notebooks(out_dir, source=SOURCE):
    """Write ``source/aevb/aevb.ipynb`` and ``release/aevb/aevb.ipynb`` under ``out_dir``.

    Returns
    -------
    dict "source" / "release" -> Path of the file written.
    """
    cells = parse_source(Path(source).read_text(encoding="utf-8"))
    written = {}
    for which, student in (("source", False), ("release", True)):
        path = Path(out_dir) / which / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(notebook_text(to_notebook(cells, student)), encoding="utf-8")
        written[which] = path
    return written


def read_cells(path):
    """The cells of an exercise notebook (.ipynb) or of a percent-format source (.py)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give the path of an exercise notebook (.ipynb) "
                                "or of the solution source (.py).")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return parse_source(text)
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a readable notebook ({e}); open it in Jupyter and save it again.") from e
    cells = []
    for c in nb.get("cells", []):
        src = "".join(c.get("source", [])) if isinstance(c.get("source"), list) else c.get("source", "")
        nbg = c.get("metadata", {}).get("nbgrader", {})
        tags = c.get("metadata", {}).get("tags", [])
        if c.get("cell_type") == "markdown":
            kind = "markdown"
        elif nbg.get("grade"):
            kind = "test"
        elif nbg.get("solution"):
            kind = "solution"
        elif "demo" in tags:
            kind = "demo"
        elif nbg.get("locked"):
            kind = "setup"
        else:
            kind = "code"         # a cell the student added
        cells.append(Cell(kind, src, nbg.get("grade_id"), nbg.get("points")))
    return cells
