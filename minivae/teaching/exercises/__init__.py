"""Class exercises: students write AEVB's gradients, minivae's checks grade them.

The pieces, each in its own module:

- :file:`aevb_source.py`: the solution source, the one copy of the solutions, with
  nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers and its cell
  metadata written in the cell headers;
- :mod:`minivae.teaching.exercises.notebook`: the generator, which writes the teacher's and
  the students' notebooks in nbgrader's course layout (``source/``, ``release/``);
- :mod:`minivae.teaching.exercises.grader`: one check per exercise (finite differences in
  float64 against ``TOLERANCE`` and tests of meaning), and the table it prints;
- :mod:`minivae.teaching.exercises.student`: the VAE and the training step that run on the
  student's functions.

From a shell (``python -m minivae.teaching.exercises --help``)::

    python -m minivae.teaching.exercises make notebooks/exercises      # source/aevb/aevb.ipynb, release/aevb/aevb.ipynb
    python -m minivae.teaching.exercises grade submitted/aevb.ipynb    # one line per function, exit 1 if any fails
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .grader import GRADED, Result, single_blas_thread, format_results, grade, grade_all
from .notebook import SOURCE, make_notebooks, read_cells
from .student import EXERCISES, StudentAEVB, student_vae

__all__ = ["grade", "grade_all", "grade_file", "format_results", "load_namespace", "make_notebooks",
           "student_vae", "StudentAEVB", "train_student", "EXERCISES", "GRADED", "SOURCE", "Result"]


def load_namespace(path):
    """Run the code cells of an exercise notebook (or of the source) that define things; return their globals.

    Test cells and demo cells are not run (the grader runs its own checks); setup,
    solution and any cell a student added are, in order. A cell that raises does not
    stop the others: its error is kept in ``ns["__cell_errors__"]``.

    Parameters
    ----------
    path : str or Path
        ``.ipynb`` (a student's notebook) or ``.py`` (the percent-format source).
    """
    ns = {"__name__": "minivae_exercise", "__builtins__": __builtins__}
    errors = []
    for i, cell in enumerate(read_cells(path)):
        if cell.kind in ("markdown", "test", "demo"):
            continue
        source = "\n".join(line for line in cell.source.split("\n") if not line.lstrip().startswith(("%", "!")))
        try:
            exec(compile(source, f"<{Path(path).name} cell {i}>", "exec"), ns)
        except Exception as e:  # keep going: the grader reports what is missing
            errors.append(f"cell {i} ({cell.grade_id or cell.kind}) raised {type(e).__name__}: {e}")
    ns["__cell_errors__"] = errors
    return ns


def grade_file(path, names=GRADED, out=None):
    """Grade a notebook file: load it with :func:`load_namespace`, run the checks, print the table."""
    out = sys.stdout if out is None else out
    ns = load_namespace(path)
    results = grade_all(ns, names)
    for message in ns["__cell_errors__"]:
        print(f"note: {message}", file=out)
    print(format_results(results), file=out)
    return results


def _data():
    """MNIST when it is on this machine (no download), else the generated digits: (x_train, x_test, name)."""
    from ...data import DataNotFoundError, load_dataset
    try:
        data = load_dataset("mnist", download=False)
    except DataNotFoundError:
        data = load_dataset("digits-synthetic")
    return data.x_train.astype(np.float64), data.x_test.astype(np.float64), data.name


def train_student(ns, quick=True, x_train=None, x_test=None, samples=None, seed=0, progress=False):
    """Train the paper's VAE through the student's functions (:class:`StudentAEVB`), return the history.

    Quick: H = 200, J = 10, one pass over 60,000 samples. Full: the paper's MNIST model
    (H = 500, J = 20), 10 epochs. Adagrad lr 0.02, M = 100, L = 1, weight decay 1/N.
    ``samples`` overrides the budget; ``x_train``, ``x_test`` the data.
    """
    from ...train import fit
    name = "given data"
    if x_train is None:
        x_train, x_test, name = _data()
    H, J = (200, 10) if quick else (500, 20)
    if samples is None:
        samples = 60000 if quick else 10 * len(x_train)
    model = student_vae(ns, D=x_train.shape[1], H=H, J=J, random_state=seed)
    step = StudentAEVB(model, lr=0.02, weight_decay=1.0 / len(x_train))
    with single_blas_thread():
        history = fit(model, step, x_train, x_test, M=100, samples=samples, eval_points=8, progress=progress,
                      seed=seed, eval_train_size=2000)
    print(f"trained on {name} ({len(x_train)} images) through your functions, {samples} samples; calls: "
          + ", ".join(f"{k} {v}" for k, v in sorted(model.calls.items())))
    return history
