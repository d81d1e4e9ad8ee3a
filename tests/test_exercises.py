"""The class exercises: the generated notebooks, the grader, and training through a student's code.

Tolerance: the grader's gradient checks accept a relative error <= minivae.gradcheck.TOLERANCE
= 1e-7 in float64 (a correct gradient gives about 1e-10, a wrong one 1e-2 or more).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from minivae import estimator as est
from minivae import layers as lib_layers
from minivae.gradcheck import TOLERANCE
from minivae.teaching.exercises import (EXERCISES, GRADED, SOURCE, StudentAEVB, grade, grade_all, load_namespace,
                                        make_notebooks, student_vae, train_student)
from minivae.teaching.exercises.__main__ import main
from minivae.teaching.exercises.grader import compare_training, training_data
from minivae.teaching.exercises.notebook import BEGIN, clear_solutions, parse_source, read_cells
from minivae.train import fit

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "notebooks" / "exercises"
RELEASE = COMMITTED / "release" / "aevb" / "aevb.ipynb"
TEACHER = COMMITTED / "source" / "aevb" / "aevb.ipynb"
QUICK_CHECKS = [n for n in GRADED if n != "training"]   # "training" is run once, in its own tests


@pytest.fixture(scope="module")
def solution():
    return load_namespace(SOURCE)


@pytest.fixture(scope="module")
def data():
    return training_data()


def test_committed_notebooks_are_the_generators_output(tmp_path):
    """The notebooks are generated from the one source (no hand-kept copy): regenerate and compare."""
    written = make_notebooks(tmp_path)
    for which, committed in (("source", TEACHER), ("release", RELEASE)):
        assert written[which].read_text() == committed.read_text(), \
            f"{committed} is stale: run `python -m minivae.teaching.exercises make notebooks/exercises`"


def test_student_version_is_the_source_with_every_solution_cleared():
    teacher, student = read_cells(TEACHER), read_cells(RELEASE)
    assert [c.kind for c in teacher] == [c.kind for c in student]
    solutions = [(t, s) for t, s in zip(teacher, student) if t.kind == "solution"]
    assert len(solutions) == 9
    for t, s in solutions:
        assert BEGIN in t.source and BEGIN not in s.source
        assert s.source.count("raise NotImplementedError()") == t.source.count(BEGIN)
    # Every function with a blank has a check of its own, named after it.
    import re
    blanks = {name for t, _ in solutions for name in re.findall(r"^def (\w+)\(", t.source, flags=re.M)}
    assert blanks == set(EXERCISES) and blanks <= set(GRADED)
    # Every other cell is the same in both.
    assert all(t.source == s.source for t, s in zip(teacher, student) if t.kind != "solution")
    nb = json.loads(RELEASE.read_text())
    tests = [c["metadata"]["nbgrader"] for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    assert len(tests) == 10 and all(m["locked"] and not m["solution"] and m["points"] > 0 for m in tests)
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def test_clear_solutions_keeps_the_indentation_and_what_is_outside():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    y = x\n    ### END SOLUTION\n    return y"
    assert clear_solutions(src) == ("def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
                                    "    return y")
    with pytest.raises(ValueError, match="has no END"):
        clear_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="need"):
        parse_source("# %% nbgrader=answer id=x\nx = 1")


def test_solution_passes_every_check(solution):
    results = grade_all(solution, QUICK_CHECKS)
    failed = [r.line() for r in results if not r.passed]
    assert not failed, failed
    # The gradient checks report errors near 1e-10, far below the tolerance.
    worst = max(item.value for r in results for item in r.items if item.limit == TOLERANCE)
    assert worst < 1e-8, worst


def test_teacher_notebook_passes_like_the_source():
    results = grade_all(load_namespace(TEACHER), QUICK_CHECKS)
    assert all(r.passed for r in results), [r.line() for r in results if not r.passed]


def test_student_version_unedited_fails_every_check():
    ns = load_namespace(RELEASE)
    assert ns["__cell_errors__"] == []          # every cell runs; only calling a blank raises
    results = grade_all(ns, GRADED)
    assert len(results) == len(GRADED) == 17
    assert not any(r.passed for r in results), [r.line() for r in results if r.passed]
    assert all("NotImplementedError" in r.error for r in results)


def test_grade_prints_each_verdict_and_asserts(solution, capsys):
    grade("linear_backward", solution)
    out = capsys.readouterr().out
    assert out.startswith("PASS  linear_backward") and "(tol 1e-07)" in out and "dW" in out
    with pytest.raises(AssertionError, match="not yet right: tanh_backward"):
        grade("tanh_backward", {**solution, "tanh_backward": lambda dout, h: dout * (1.0 - h)})
    assert "FAIL  tanh_backward" in capsys.readouterr().out


# Each exercise with a mistake a student makes: its check must fail on a number, not on an exception.
WRONG = {
    "linear_backward": lambda dout, x, W: (dout @ W.T, x.T @ dout, dout.mean(axis=0)),
    "tanh_backward": lambda dout, h: dout * (1.0 - h),
    "sigmoid_backward": lambda dout, y: dout * y,
    "relu_backward": lambda dout, a: dout * np.maximum(a, 0.0),
    "softplus_backward": lambda dout, a: dout * lib_layers.sigmoid(-a),
    "reparameterize_backward": lambda dz, lv, eps: (dz.sum(0), np.exp(lv) * (dz * eps).sum(0)),  # std = e^lv
    "kl_standard_normal": lambda mu, lv: 0.5 * np.sum((1 + mu * mu) / np.exp(lv) - 1 + lv, axis=-1),  # KL(p||q)
    "kl_standard_normal_grad": lambda mu, lv: (mu.copy(), np.exp(lv) - 1.0),
    "bernoulli_log_likelihood_grad": lambda x, l: np.where(
        np.abs(lib_layers.sigmoid(l) - 0.5) < 0.5 - 1e-7, x - lib_layers.sigmoid(l), 0.0),  # through clip(y)
    "gaussian_log_likelihood_grad": lambda x, m, lv: ((x - m) * np.exp(-lv), (x - m) ** 2 * np.exp(-lv) - 1.0),
    "estimator_a_backward": lambda dout, z, mu, lv: (
        np.broadcast_to(dout / len(z), z.shape[:2]).copy(), (dout / len(z))[None, :, None] * (-z),
        np.zeros_like(mu), np.zeros_like(lv)),                                     # log q left out
    "estimator_b_backward": lambda dout, L, mu, lv: (
        np.broadcast_to(dout, (L, len(dout))).copy(), -dout[:, None] * mu, -dout[:, None] * 0.5 * (np.exp(lv) - 1)),
}


def _wrong_adagrad(p, g, G, lr, eps):
    G = G + g * g                                   # a new array: the optimiser's G never grows
    p -= lr * g / (np.sqrt(G) + eps)


def _wrong_chain_rule(source_ns):
    """loss_and_grads that forgets the KL's path into mu (the two paths do not meet)."""
    def loss_and_grads(model, x, eps, estimator="B"):
        L, M, J = eps.shape
        mu, log_var = model.encoder.forward(x)
        z = est.reparameterize(mu, log_var, eps)
        out = tuple(o.reshape(L, M, model.D) for o in model.decoder.forward(z.reshape(L * M, J)))
        log_px_z = model.decoder.log_likelihood(x, out)
        elbo = est.estimator_b(log_px_z, mu, log_var)
        dlog_px_z, dmu_kl, dlv_kl = est.estimator_b_backward(np.full(M, -1.0 / M), L, mu, log_var)
        dout = model.decoder.log_likelihood_grad(x, out, dlog_px_z)
        dz = model.decoder.backward(tuple(d.reshape(L * M, model.D) for d in dout)).reshape(L, M, J)
        dmu_z, dlv_z = est.reparameterize_backward(dz, log_var, eps)
        model.encoder.backward(dmu_z, dlv_z + dlv_kl)
        return -float(np.mean(elbo)), elbo
    return loss_and_grads


def _wrong_aevb_step(model, x, rng, G, lr, L=1, estimator="B", weight_decay=0.0, adagrad_eps=1e-10):
    """Weight decay forgotten, and an update even when the loss is not finite.

    Like a student's function, it calls loss_and_grads and adagrad_update by name (the
    grader checks it with the library's versions of both).
    """
    eps = model.sample_eps(len(x), L, rng)
    loss, elbo = loss_and_grads(model, x, eps, estimator)  # noqa: F821 - resolved in the student's namespace
    for name, p in model.params.items():
        adagrad_update(p, model.grads[name], G[name], lr, adagrad_eps)  # noqa: F821
    return loss, elbo


@pytest.mark.parametrize("name", list(WRONG) + ["loss_and_grads", "adagrad_update", "aevb_step"])
def test_each_check_catches_a_wrong_answer(solution, name):
    wrong = {"loss_and_grads": _wrong_chain_rule(solution), "adagrad_update": _wrong_adagrad,
             "aevb_step": _wrong_aevb_step}.get(name) or WRONG[name]
    (result,) = grade_all({**solution, name: wrong}, [name])
    assert not result.passed and not result.error, result.line()
    assert any(not item.ok for item in result.items), result.line()
    (right,) = grade_all(solution, [name])
    assert right.passed, right.line()


def _planted(tmp_path):
    """The solution with a wrong tanh backward planted in it (the square forgotten), as a student's notebook."""
    text = SOURCE.read_text()
    good = "    return dout * (1.0 - h * h)\n"
    assert text.count(good) == 1
    src = tmp_path / "aevb_source.py"
    src.write_text(text.replace(good, "    return dout * (1.0 - h)\n"))
    return load_namespace(make_notebooks(tmp_path / "course", src)["source"])


def test_a_planted_wrong_backward_is_caught_by_the_grader_and_by_training(tmp_path, data):
    planted = _planted(tmp_path)
    verdicts = {r.name: r for r in grade_all(planted, ["tanh_backward", "linear_backward", "end_to_end"])}
    assert not verdicts["tanh_backward"].passed and verdicts["tanh_backward"].items[0].value > 1e-3
    assert verdicts["linear_backward"].passed           # the checks point at the function that is wrong
    assert not verdicts["end_to_end"].passed
    # Training through the planted code leaves the library's trajectory and gains less.
    h_bad, h_lib, calls = compare_training(planted, *data)
    bad, lib = np.array(h_bad["train_elbo"]), np.array(h_lib["train_elbo"])
    assert calls["tanh_backward"] > 0
    assert np.max(np.abs(bad - lib)) > 1.0, (bad, lib)
    assert bad[-1] < lib[-1]
    (training,) = grade_all(planted, ["training"])
    assert not training.passed


def test_the_solution_trains_exactly_like_the_library_through_its_own_functions(solution, data):
    h_student, h_library, calls = compare_training(solution, *data)
    np.testing.assert_allclose(h_student["train_elbo"], h_library["train_elbo"], rtol=1e-9)
    assert h_student["train_elbo"][-1] > h_student["train_elbo"][0] + 20.0
    assert calls["aevb_step"] == 60 and calls["loss_and_grads"] == 60 and calls["adagrad_update"] == 60 * 10
    assert calls["linear_backward"] == 60 * 5 and calls["tanh_backward"] == 60 * 2
    # The fast path would not take this model either: it is not the library's VAE.
    from minivae.fast import why_not
    assert "StudentVAE" in why_not(student_vae(solution, D=784, H=50, J=5, random_state=0))


def test_training_never_runs_the_librarys_backward_code(solution, data, monkeypatch):
    """With every library function the students replace made to raise, the student's model still trains."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the library's code ran")

    for module, names in ((lib_layers, ["tanh_backward", "sigmoid_backward", "relu_backward", "softplus_backward"]),
                          (est, ["reparameterize_backward", "kl_standard_normal_grad", "estimator_a_backward",
                                 "estimator_b_backward", "bernoulli_log_likelihood_grad",
                                 "gaussian_log_likelihood_grad"])):
        for name in names:
            monkeypatch.setattr(module, name, forbidden)
    from minivae import model as model_module, optim
    for cls in (lib_layers.Linear, lib_layers.Tanh):
        monkeypatch.setattr(cls, "backward", forbidden)
    monkeypatch.setattr(model_module.VAE, "loss_and_grads", forbidden)
    monkeypatch.setattr(optim, "adagrad_update", forbidden)
    x_train, x_test = data
    model = student_vae(solution, D=784, H=20, J=3, random_state=0)
    history = fit(model, StudentAEVB(model, lr=0.05), x_train, x_test, M=50, samples=1000, eval_points=2,
                  progress=False)
    assert history["train_elbo"][-1] > history["train_elbo"][0]


def test_train_student_reports_the_calls(solution, data, capsys):
    history = train_student(solution, x_train=data[0], x_test=data[1], samples=500)
    assert len(history["test_elbo"]) >= 2 and np.isfinite(history["test_elbo"]).all()
    out = capsys.readouterr().out
    assert "through your functions" in out and "aevb_step 5" in out


def test_command_line_make_and_grade(tmp_path, capsys):
    assert main(["make", str(tmp_path)]) == 0
    release = tmp_path / "release" / "aevb" / "aevb.ipynb"
    assert release.is_file() and (tmp_path / "source" / "aevb" / "aevb.ipynb").is_file()
    assert main(["grade", str(release), "--only", "linear_backward", "kl_standard_normal"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 2 and "0 passed, 2 failed" in out
    assert main(["grade", str(SOURCE), "--only", "linear_backward", "adagrad_update"]) == 0
    assert "2 passed, 0 failed" in capsys.readouterr().out
    assert main(["grade", str(tmp_path / "nowhere.ipynb")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_nbgrader_makes_the_same_student_version():
    """Where nbgrader is installed, its own preprocessors turn our source into our release, checksums included."""
    pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install nbgrader to run this check)")
    import nbformat
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, ClearSolutions, ComputeChecksums, LockCells

    nb = nbformat.read(TEACHER, as_version=4)
    resources = {}
    for pre in (LockCells(), ClearSolutions(), ClearOutput(), CheckCellMetadata(), ComputeChecksums()):
        nb, resources = pre.preprocess(nb, resources)
    ours = nbformat.read(RELEASE, as_version=4)
    assert [c.source for c in nb.cells] == [c.source for c in ours.cells]
    assert [c.metadata.get("nbgrader") for c in nb.cells] == [c.metadata.get("nbgrader") for c in ours.cells]


def _execute(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel is installed (python -m ipykernel install --user)")
    monkeypatch.delenv("MINIVAE_FULL", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    return nb, client, nbclient.exceptions.CellExecutionError


@pytest.mark.slow  # a Jupyter kernel and a training run
def test_teacher_notebook_runs_top_to_bottom_and_every_graded_cell_passes(tmp_path, monkeypatch):
    nb, client, _ = _execute(TEACHER, tmp_path, monkeypatch)
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert text.count("PASS  ") == len(GRADED) and "FAIL" not in text
    assert "through your functions" in text and "test ELBO after 10000 samples" in text


@pytest.mark.slow
def test_student_notebook_stops_at_its_first_graded_cell(tmp_path, monkeypatch):
    nb, client, error = _execute(RELEASE, tmp_path, monkeypatch)
    with pytest.raises(error, match="not yet right: linear_backward"):
        client.execute()


def test_a_broken_cell_is_reported_and_the_other_exercises_are_still_graded(tmp_path, capsys):
    nb = json.loads(RELEASE.read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "activations":
            cell["source"] = ["def tanh_backward(dout, h)\n", "    return dout\n"]     # a syntax error
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": ["undefined_name + 1"], "outputs": [],
                        "execution_count": None})
    path = tmp_path / "submitted.ipynb"
    path.write_text(json.dumps(nb))
    assert main(["grade", str(path), "--only", "tanh_backward", "linear_backward"]) == 1
    out = capsys.readouterr().out
    assert "note: cell" in out and "SyntaxError" in out and "NameError" in out
    assert "FAIL  tanh_backward                  not defined: tanh_backward" in out
    assert "FAIL  linear_backward                not written yet" in out
