"""The fast path is a twin beside the readable code: it never runs in its place.

- No readable module imports :mod:`minivae.fast` (read from the source).
- :func:`minivae.fast.aevb_step` gives the fast step only for the library's own,
  unchanged code; for anything else the readable step, with one warning naming the reason.
- Where it runs, a fast step computes what the readable step computes: in float64 the
  two agree to 1e-12 relative (each array as a whole, :func:`minivae.gradcheck.relative_error`;
  they round the same operations in another order, about 1e-16 per operation),
  in float32 to 1e-5; over a fixed-seed MNIST epoch the bounds agree to 1e-9.
- The fast gradient also passes finite differences (float64, relative error <= 1e-7).
"""

import ast
import inspect
import itertools
import json
import sys
import textwrap
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

import minivae
from minivae import estimator, layers, optim, utils
from minivae.fast import FastPathWarning, aevb_step, eligibility, jit_enabled, why_not
from minivae.fast import kernels
from minivae.fast.gradcheck import check_fast_model
from minivae.fast import step as step_module
from minivae.fast.step import FastAEVB
from minivae.gradcheck import TOLERANCE, relative_error
from minivae.model import VAE
from minivae.optim import SGD, Adagrad, Adam
from minivae.steps import AEVB
from minivae.train import fit

DECODERS = [("bernoulli", True), ("gaussian", True), ("gaussian", False)]
DECODER_IDS = ["bernoulli", "gauss-sigmoid", "gauss-linear"]
OPTIMIZERS = {"sgd": lambda: SGD(0.05), "adagrad": lambda: Adagrad(0.05), "adam": lambda: Adam(0.01)}
PACKAGE = Path(minivae.__file__).parent


# --- one direction of dependency --------------------------------------------------------------

def _imports(path, package=None):
    """Every module a file imports, as absolute dotted names (relative imports resolved from ``package``)."""
    tree = ast.parse(Path(path).read_text())
    if package is None:
        package = ".".join(Path(path).relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[:len(parts) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def _fast_imports(names):
    return sorted(n for n in names if n == "minivae.fast" or n.startswith("minivae.fast."))


# The two modules that ask for the fast path when a run wants it: the command line and its list of algorithms.
ASK_FOR_FAST = {"run/cli.py", "run/algorithms.py"}
# Every other module outside fast/: the core, the baselines, the teaching tools, the rest of run/.
READABLE = sorted(name for name in (p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
                  if not name.startswith("fast/") and name not in ASK_FOR_FAST)


def test_the_readable_modules_are_found_in_every_room():
    for module in ["layers.py", "model.py", "data/batches.py", "baselines/mcem.py", "teaching/checks.py",
                   "teaching/exercises/grader.py", "run/plots.py", "run/threads.py"]:
        assert module in READABLE, module


@pytest.mark.parametrize("module", READABLE)
def test_no_readable_module_imports_the_fast_path(module):
    assert _fast_imports(_imports(PACKAGE / module)) == []


@pytest.mark.parametrize("line", ["from .fast import aevb_step", "from .fast.step import FastAEVB",
                                  "import minivae.fast.kernels", "from . import fast",
                                  "def f():\n    from .fast import kernels"])
def test_the_import_reader_catches_every_spelling(tmp_path, line):
    """The check above can fail: each way of importing the fast package is seen, even inside a function."""
    probe = tmp_path / "probe.py"
    probe.write_text(line + "\n")
    assert _fast_imports(_imports(probe, package="minivae")), line


def test_importing_the_readable_modules_loads_no_fast_code():
    import subprocess
    import sys
    code = ("import sys, minivae.train, minivae.evaluate, minivae.gradcheck, minivae.run.plots; "
            "print(sorted(m for m in sys.modules if m.startswith('minivae.fast') or m == 'numba'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- when the fast path runs, and when it steps aside ------------------------------------------------

def _small(**kw):
    return VAE(D=6, H=5, J=3, init="glorot", random_state=0, **kw)


def test_the_stock_model_gets_the_fast_step():
    if not jit_enabled():
        with pytest.warns(FastPathWarning, match="JIT is disabled"):
            assert type(aevb_step(_small(), Adagrad(0.1))) is AEVB
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(aevb_step(_small(), Adagrad(0.1))) is FastAEVB
    assert type(aevb_step(_small(), Adagrad(0.1), fast=False)) is AEVB


def test_verified_fingerprints_are_those_of_the_code_as_it_stands():
    """If this fails, a readable function the fast path replaces was changed: check its twin and kernel
    (the tests in this file and test_kernels.py), then record it: python -m minivae.fast.eligibility --write."""
    now = eligibility.current_fingerprints()
    assert None not in now.values()
    assert now == eligibility.VERIFIED


# --- every function the readable step runs is fingerprinted, or run by the fast step too ----------------

def _qualified_names(module):
    """{code object: qualified name} of the functions and methods of a module, the code of a comprehension
    or a generator under the function it is written in."""
    names = {}

    def add(code, name):
        names[code] = name
        for const in code.co_consts:
            if inspect.iscode(const):
                add(const, name)

    for obj in vars(module).values():
        members = vars(obj).values() if inspect.isclass(obj) and obj.__module__ == module.__name__ else [obj]
        for member in members:
            func = getattr(member, "__func__", getattr(member, "fget", member))  # (static, class method; property)
            if inspect.isfunction(func) and func.__module__ == module.__name__:
                add(func.__code__, f"{module.__name__}.{func.__qualname__}")
    return names


def _minivae_calls(run):
    """Qualified names of the minivae functions outside minivae.fast that ``run()`` calls, at any depth."""
    seen, fast = set(), str(PACKAGE / "fast")
    before = sys.getprofile()

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(str(PACKAGE)) and not code.co_filename.startswith(fast):
            seen.add((frame.f_globals["__name__"], code))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(before)
    names = {}
    for module in {module for module, _ in seen}:
        names.update(_qualified_names(sys.modules[module]))
    return {names.get(code, f"{module}.{code.co_name} (not found)") for module, code in seen}


def _every_model():
    """The small model with every decoder and activation, each with a minibatch in its support."""
    for (decoder, sigmoid_mean), activation in itertools.product(DECODERS, sorted(layers.ACTIVATIONS)):
        model = _small(decoder=decoder, sigmoid_mean=sigmoid_mean, activation=activation)
        yield model, np.random.default_rng(0).random((4, 6))


def test_every_function_the_readable_step_runs_is_replaced_or_shared():
    """The readable AEVB step, traced for every decoder, activation, estimator and optimiser: each minivae
    function it runs is in REPLACED (fingerprinted) or SHARED (run by the fast step as well), and each
    function of REPLACED is run: the list is the readable step, no more and no less."""
    called = set()
    for (model, x), est, opt in itertools.product(_every_model(), "AB", sorted(OPTIMIZERS)):
        step = AEVB(model, OPTIMIZERS[opt](), est, L=2, weight_decay=1e-3)
        called |= _minivae_calls(lambda: step(x, None, np.random.default_rng(1)))
    assert called - set(eligibility.REPLACED) - set(eligibility.SHARED) == set()
    assert set(eligibility.REPLACED) - called == set()
    assert {"minivae.model.VAE.check_x", "minivae.model.VAE.check_eps", "minivae.utils.check_matrix"} <= called


def test_the_fast_step_runs_the_shared_functions_itself_and_no_other_readable_one():
    """What SHARED claims: the fast step calls each of its functions (so an edit reaches both paths), and
    the only other readable functions it calls are fingerprinted ones."""
    called = set()
    for (model, x), opt in itertools.product(_every_model(), sorted(OPTIMIZERS)):
        step = FastAEVB(model, OPTIMIZERS[opt](), "B", L=2, weight_decay=1e-3, two_threads=False)
        called |= _minivae_calls(lambda: step(x, None, np.random.default_rng(1)))
    assert set(eligibility.SHARED) <= called
    assert called <= set(eligibility.REPLACED) | set(eligibility.SHARED)


def test_every_function_the_readable_evaluation_runs_is_replaced_or_shared():
    """The same for the evaluation's twins: the readable dataset_elbo and log_likelihood run only functions
    of REPLACED, EVAL_REPLACED and SHARED, and every function of EVAL_REPLACED; the fast ones run SHARED's."""
    from minivae.evaluate import log_likelihood
    from minivae.fast import evaluate as fast_evaluate
    from minivae.train import dataset_elbo
    readable, fast = set(), set()
    for (model, x), est in itertools.product(_every_model(), "AB"):
        readable |= _minivae_calls(lambda: dataset_elbo(model, x, 1, L=2, estimator=est))
        fast |= _minivae_calls(lambda: fast_evaluate.fast_dataset_elbo(model, x, 1, L=2, estimator=est))
    for model, x in _every_model():
        readable |= _minivae_calls(lambda: log_likelihood(model, x, K=5, rng=2, chunk=3))
        fast |= _minivae_calls(lambda: fast_evaluate.fast_log_likelihood(model, x, K=5, rng=2, chunk=3))
    known = set(eligibility.REPLACED) | set(eligibility.EVAL_REPLACED) | set(eligibility.SHARED)
    assert readable - known == set()
    assert set(eligibility.EVAL_REPLACED) - readable == set()
    if jit_enabled():                                      # (else the fast functions call the readable ones)
        assert set(eligibility.SHARED) <= fast


# --- an edited function turns the fast path off; a reworded message does not ----------------------------

def _copy_of(func, edit, tmp_path):
    """``func`` made again from its source with ``edit(tree)`` applied to its syntax tree, in a file of
    its own (as a notebook's or a copy's function has one), in its module's namespace."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    edit(tree)
    path = tmp_path / f"copy_of_{func.__name__}.py"
    path.write_text(ast.unparse(ast.fix_missing_locations(tree)) + "\n")
    namespace = dict(func.__globals__)
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace[func.__name__]


def _halve_what_it_returns(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and node.value is not None:
            node.value = ast.BinOp(ast.Constant(0.5), ast.Mult(), node.value)


def _reword_the_messages(tree):
    """Each raise's message gets a new first word (a string, an f-string, or the first of a sum of them)."""
    def reword(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = "Reworded: " + node.value
        elif isinstance(node, ast.JoinedStr):
            node.values.insert(0, ast.Constant("Reworded: "))
        elif isinstance(node, ast.BinOp):
            reword(node.left)
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            reword(node.exc.args[0])


@pytest.mark.parametrize("name,halved", [("check_x", "x"), ("check_eps", "eps")])
def test_an_edited_input_check_trains_on_the_readable_path(monkeypatch, tmp_path, name, halved):
    """VAE.check_x (or check_eps), which loss_and_grads calls, edited on a copy to return half its input:
    the fast path names it and steps aside with one warning, and the step trains the edited code (its
    bound is the unedited code's on x / 2, or eps / 2, to the bit)."""
    x = np.random.default_rng(0).random((4, 6))
    eps = _small().sample_eps(4, 1, np.random.default_rng(1))
    inputs = {"x": x, "eps": eps}
    inputs[halved] = 0.5 * inputs[halved]
    expected = _small().loss_and_grads(inputs["x"], inputs["eps"])[1]
    edited = _copy_of(getattr(VAE, name), _halve_what_it_returns, tmp_path)
    monkeypatch.setattr(VAE, name, edited)
    model, opt = _small(), Adagrad(0.1)
    assert eligibility.fingerprint(edited) != eligibility.VERIFIED[f"minivae.model.VAE.{name}"]
    assert why_not(model, opt).startswith(f"minivae.model.VAE.{name} is not the code the fast path was verified")
    with pytest.warns(FastPathWarning) as record:
        step = aevb_step(model, opt)
    assert type(step) is AEVB and len(record) == 1
    assert str(record[0].message) == (f"the fast path is off: {why_not(model, opt)}; training runs the readable "
                                      "NumPy code.")
    np.testing.assert_array_equal(step(x, None, np.random.default_rng(1)).elbo, expected)


@pytest.mark.parametrize("target,bad_call", [
    ("minivae.model.VAE.check_eps", lambda: _small().loss_and_grads(np.zeros((4, 6)), np.zeros((1, 5, 3)))),
    ("minivae.estimator.check_estimator", lambda: _small().loss_and_grads(np.zeros((4, 6)), np.zeros((1, 4, 3)), "C")),
    ("minivae.utils.check_matrix", lambda: utils.check_matrix(np.zeros((4, 5)), n_cols=6)),
])
def test_a_reworded_error_message_keeps_the_fast_path(monkeypatch, tmp_path, target, bad_call):
    """Only the wording of the error messages changed, on a copy (f-strings included): the same fingerprint,
    the fast path stays on, and the user reads the new wording."""
    module, _, attr = target.rpartition(".")
    owner = eligibility._resolve(module)
    reworded = _copy_of(getattr(owner, attr), _reword_the_messages, tmp_path)
    monkeypatch.setattr(owner, attr, reworded)
    assert "Reworded: " in inspect.getsource(reworded)
    assert eligibility.fingerprint(reworded) == eligibility.VERIFIED[target]
    assert why_not(_small(), Adagrad(0.1)) is None
    if jit_enabled():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert type(aevb_step(_small(), Adagrad(0.1))) is FastAEVB
    with pytest.raises(ValueError, match="^Reworded: "):
        bad_call()


def test_the_fingerprint_keeps_the_strings_that_are_code(tmp_path):
    """A string that selects something is code: Adam's state key, the estimator compared with "B"."""
    def replace(old, new):
        def edit(tree):
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value == old:
                    node.value = new
        return edit
    for target, old, new in [("minivae.optim.Adam._update", ".v", ".m"),
                             ("minivae.model.VAE.loss_and_grads", "B", "A")]:
        module, _, attr = target.rpartition(".")
        original = getattr(eligibility._resolve(module), attr)
        assert eligibility.fingerprint(_copy_of(original, replace(old, new), tmp_path)) != eligibility.VERIFIED[target]
        assert eligibility.fingerprint(_copy_of(original, lambda tree: None, tmp_path)) == eligibility.VERIFIED[target]


def test_the_refreshing_command_reports_and_writes_the_fingerprints(monkeypatch, tmp_path, capsys):
    """python -m minivae.fast.eligibility: without --write it names what differs from the code (exit
    status 1) and writes nothing; --write records the code as it stands; then nothing differs."""
    path = tmp_path / "verified.json"
    stale = {"step": {**eligibility.VERIFIED, "minivae.layers.Tanh.backward": "0" * 16}, "evaluation": {}}
    path.write_text(json.dumps(stale))
    monkeypatch.setattr(eligibility, "VERIFIED_FILE", path)
    assert eligibility.main([]) == 1
    out = capsys.readouterr().out
    assert "step: minivae.layers.Tanh.backward: recorded 0000000000000000, now " in out
    assert "evaluation: minivae.evaluate.logmeanexp: recorded None" in out and "--write" in out
    assert json.loads(path.read_text()) == stale
    assert eligibility.main(["--write"]) == 0
    written = json.loads(path.read_text())
    assert written["step"] == eligibility.current_fingerprints(eligibility.REPLACED) == eligibility.VERIFIED
    assert written["evaluation"] == eligibility.current_fingerprints(eligibility.EVAL_REPLACED)
    assert eligibility.main([]) == 0
    assert "are those of the code as it stands" in capsys.readouterr().out


def test_without_its_record_the_fast_path_says_so(monkeypatch):
    monkeypatch.setattr(eligibility, "VERIFIED", {})
    assert "record of the verified code (verified.json" in why_not(_small(), Adagrad(0.1))


def _reason_after(change):
    model, opt = _small(), Adagrad(0.1)
    change(model, opt)
    with pytest.warns(FastPathWarning) as record:
        step = aevb_step(model, opt)
    assert type(step) is AEVB and len(record) == 1
    return str(record[0].message)


class MyTanh(layers.Tanh):
    pass


class MyVAE(VAE):
    pass


@pytest.mark.parametrize("change,reason", [
    (lambda m, o: m.encoder.trunk.layers.append(layers.Identity()), "has 3 layers, not pairs"),
    (lambda m, o: m.decoder.trunk.layers.__setitem__(1, MyTanh()), "MyTanh, not one of the supported"),
    (lambda m, o: m.encoder.trunk.layers.__setitem__(0, layers.Tanh()), "layer 0 of the encoder trunk is a Tanh"),
    (lambda m, o: setattr(m.decoder.trunk.layers[1], "backward", lambda dout: dout), "its own backward"),
    (lambda m, o: setattr(m, "__class__", MyVAE), "the model is a MyVAE"),
], ids=["odd-trunk", "subclassed-activation", "no-linear", "instance-method", "subclassed-model"])
def test_an_unsupported_model_trains_on_the_readable_path_with_one_warning(change, reason):
    assert reason in _reason_after(change)


@pytest.mark.parametrize("target,replacement", [
    ("minivae.layers.Tanh.backward", lambda self, dout: dout),
    ("minivae.estimator.reparameterize_backward", lambda dz, lv, eps: (dz.sum(0), dz.sum(0))),
    ("minivae.optim.adagrad_update", lambda p, g, G, lr, eps: None),
    ("minivae.optim.Adagrad._update", lambda self, name, p, g: None),
])
def test_an_edited_readable_function_switches_the_fast_path_off(monkeypatch, target, replacement):
    module, _, attr = target.rpartition(".")
    owner = eligibility._resolve(module)
    monkeypatch.setattr(owner, attr, replacement)
    message = _reason_after(lambda m, o: None)
    assert target in message and "readable" in message


def test_a_student_editing_the_source_file_is_seen(tmp_path):
    """A student's copy of minivae with one line of layers.py changed: the fast path steps aside, by name."""
    import shutil
    import subprocess
    import sys
    copy = tmp_path / "minivae"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / "layers.py").read_text()
    edited = source.replace("return dout * (1.0 - h * h)", "return dout * (1.0 - h)")   # the planted bug
    assert edited != source
    (copy / "layers.py").write_text(edited)
    code = ("import minivae; from minivae.model import VAE; from minivae.optim import Adagrad; "
            "from minivae.fast import why_not; print(minivae.__file__); print(why_not(VAE(6, 5, 3), Adagrad(0.1)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)}).stdout.splitlines()
    assert out[0].startswith(str(copy))
    assert "minivae.layers.tanh_backward is not the code the fast path was verified against" in out[1]


def test_an_unsupported_optimizer_is_named():
    class Momentum(SGD):
        pass
    assert "the optimiser is a Momentum" in why_not(_small(), Momentum(0.1))


def test_a_refused_fast_step_raises_with_the_reason_not_a_key_error():
    model = _small()
    model.encoder.trunk.layers.append(layers.Identity())
    with pytest.raises(eligibility.FastPathUnavailable, match="not pairs of Linear"):
        FastAEVB(model, Adagrad(0.1))


# --- a fast step computes what the readable step computes ----------------------------------------------

def _steps(fast, decoder, sigmoid_mean, est, L, optimizer, dtype="float64", sizes=(30, 20, 4, 16), n_steps=2,
           seed=0, density=1.0, **fast_kw):
    D, H, J, M = sizes
    model = VAE(D=D, H=H, J=J, decoder=decoder, sigmoid_mean=sigmoid_mean, init="glorot", dtype=dtype,
                random_state=seed)
    step = FastAEVB(model, OPTIMIZERS[optimizer](), est, L, weight_decay=1e-3, **fast_kw) if fast else \
        AEVB(model, OPTIMIZERS[optimizer](), est, L, weight_decay=1e-3)
    rng = np.random.default_rng(seed + 1)
    record = []
    for _ in range(n_steps):
        x = rng.random((M, D)).astype(dtype)
        if density < 1:                                  # mostly zeros (MNIST: 0.19 nonzero), one empty row
            x *= rng.random((M, D)) < density            # and one empty column
            x[1], x[:, 2] = 0, 0
        loss, elbo = step(x, None, rng)
        record.append((loss, elbo.copy(), {k: g.copy() for k, g in model.grads.items()}))
    return record, {k: p.copy() for k, p in model.params.items()}, step.state_dict()


def _assert_same_steps(a, b, tol):
    (rec_a, params_a, state_a), (rec_b, params_b, state_b) = a, b
    for (loss_a, elbo_a, grads_a), (loss_b, elbo_b, grads_b) in zip(rec_a, rec_b):
        assert abs(loss_a - loss_b) <= tol * abs(loss_a)
        assert elbo_a.dtype == elbo_b.dtype and relative_error(elbo_a, elbo_b) <= tol
        for k in grads_a:
            assert relative_error(grads_a[k], grads_b[k]) <= tol, k
    for k in params_a:
        assert params_a[k].dtype == params_b[k].dtype
        assert relative_error(params_a[k], params_b[k]) <= tol, k
    assert set(state_a) == set(state_b)
    for k in state_a:
        assert relative_error(state_a[k], state_b[k]) <= tol, k


@pytest.fixture(params=["one-thread", "two-thread"])
def threads(request, monkeypatch):
    """The fast step's keywords for each way of running it: on the calling thread (BLAS's own threads),
    or on two threads of its own (minivae.fast.pair) with every layer split, however small."""
    if request.param == "one-thread":
        return dict(two_threads=False)
    monkeypatch.setattr(step_module, "PAIR_MIN_WORK", 0)
    return dict(two_threads=True)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("est", ["A", "B"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_training_steps_agree_in_float64(decoder, sigmoid_mean, est, L, optimizer, threads):
    args = (decoder, sigmoid_mean, est, L, optimizer)
    _assert_same_steps(_steps(False, *args), _steps(True, *args, **threads), 1e-12)


@pytest.mark.parametrize("H", [(), (12, 8)], ids=["linear", "two-hidden"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_other_depths_agree(decoder, sigmoid_mean, H, threads):
    args = (decoder, sigmoid_mean, "A", 2, "adam")
    kw = dict(sizes=(10, H, 3, 5))
    _assert_same_steps(_steps(False, *args, **kw), _steps(True, *args, **kw, **threads), 1e-12)


@pytest.mark.parametrize("two_threads", [False, True], ids=["one-thread", "two-thread"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_paper_sized_and_large_steps_agree(decoder, sigmoid_mean, dtype, tol, two_threads):
    """The MNIST model's sizes (784-500, M = 100); with the JIT, a batch large enough for the
    threaded branch of the heads and of bias + activation.

    float32 takes an SGD step: Adagrad's first step is lr * sign(g), which jumps at g = 0,
    so among 400k weights the float32 rounding of g (about 1e-7) flips one now and then.
    """
    D, H, M = (784, 500, 100) if not kernels.JIT_ENABLED else (784, 500, 600)
    if kernels.JIT_ENABLED:
        assert min(M * D, M * H) >= kernels.PARALLEL_MIN_SIZE
    args = (decoder, sigmoid_mean, "B", 1, "adagrad" if dtype == "float64" else "sgd")
    kw = dict(dtype=dtype, sizes=(D, H, 10, M), n_steps=1)
    _assert_same_steps(_steps(False, *args, **kw), _steps(True, *args, **kw, two_threads=two_threads), tol)


class _Calls:
    """Counts the calls of a kernel, and makes them."""

    def __init__(self, kernel):
        self.kernel, self.n = kernel, 0

    def __call__(self, *args):
        self.n += 1
        return self.kernel(*args)


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
@pytest.mark.parametrize("H", [(20,), (12, 8)], ids=["one-hidden", "two-hidden"])
@pytest.mark.parametrize("est", ["A", "B"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_a_mostly_zero_input_takes_the_sparse_products_and_agrees(monkeypatch, decoder, sigmoid_mean, est, H,
                                                                   optimizer):
    """x with 15 % nonzero pixels, an empty row and an empty column: the products with x skip its
    zeros, and the step is the readable one (and the fast step with dense products) to 1e-12."""
    """x with 15 % nonzero pixels, an empty row and an empty column: the products with x skip its
    zeros, and the step is the readable one (and the fast step with dense products) to 1e-12.
    On one thread (spies on the sparse products)."""
    calls = {name: _Calls(getattr(kernels, name)) for name in ("sparse_matmul", "sparse_matmul_t")}
    for name, spy in calls.items():
        monkeypatch.setattr(kernels, name, spy)
    args = (decoder, sigmoid_mean, est, 2, optimizer)
    kw = dict(sizes=(30, H, 4, 16), n_steps=3, density=0.15, two_threads=False)
    readable, sparse = _steps(False, *args, **kw), _steps(True, *args, **kw, sparse_input=True)
    assert calls["sparse_matmul"].n == calls["sparse_matmul_t"].n == 3       # one of each per step
    _assert_same_steps(readable, sparse, 1e-12)
    dense = _steps(True, *args, **kw, sparse_input=False)
    assert calls["sparse_matmul"].n == 3                                     # the dense step took none
    _assert_same_steps(readable, dense, 1e-12)


@pytest.mark.parametrize("two_threads,index", [(False, "sparse_index"), (True, "sparse_matmul_rows")],
                         ids=["one-thread", "two-thread"])
def test_a_dense_input_takes_the_dense_products(monkeypatch, two_threads, index):
    spy = _Calls(getattr(kernels, index))
    monkeypatch.setattr(kernels, index, spy)
    kw = dict(sparse_input=True, two_threads=two_threads)
    _steps(True, "bernoulli", True, "B", 1, "adagrad", density=0.5, **kw)   # above the density
    assert step_module.SPARSE_MAX_DENSITY < 0.5 and spy.n == 0
    _steps(True, "bernoulli", True, "B", 1, "adagrad", density=0.1, **kw)
    assert spy.n == 2


def test_the_threads_and_the_sparse_products_are_chosen_from_the_blas_thread_count():
    """One BLAS thread at the first step: one thread, sparse products. Two: the two-thread step (its
    products run on one BLAS thread each), sparse products. Forced choices are kept."""
    from threadpoolctl import threadpool_limits

    model = VAE(D=8, H=6, J=2, random_state=0)
    x = np.zeros((4, 8))
    x[:, 0] = 1.0                                            # 1/8 of the pixels nonzero
    one = FastAEVB(model, Adagrad())                         # built before the thread count is set,
    with threadpool_limits(1, user_api="blas"):             # as minivae train does: chosen at the first step
        assert step_module.blas_threads() == 1
        one(x, None, np.random.default_rng(0))
    assert one.takes_two_threads() is False and one.takes_sparse_products() is True
    with threadpool_limits(2, user_api="blas"):
        if step_module.blas_threads() == 2 and step_module.usable_cores() >= 2:   # (a BLAS without threads: 1)
            two = FastAEVB(model, Adagrad())
            assert two.takes_two_threads() is True and two.takes_sparse_products() is True
            alone = FastAEVB(model, Adagrad(), two_threads=False)
            assert alone.takes_two_threads() is False and alone.takes_sparse_products() is False
    forced = FastAEVB(model, Adagrad(), sparse_input=False, two_threads=True)
    assert forced.takes_sparse_products() is False and forced.takes_two_threads() is True


def test_changing_minibatch_size_between_steps():
    """Buffers are kept per minibatch shape; a last, shorter batch must not reuse the wrong ones."""
    results = {}
    for fast in (False, True):
        model = VAE(D=8, H=6, J=2, init="glorot", random_state=3)
        step = (FastAEVB if fast else AEVB)(model, SGD(0.01))
        rng = np.random.default_rng(4)
        out = []
        for M, L in [(5, 1), (3, 1), (5, 2), (5, 1), (3, 1)]:
            step.L = L
            out.append(step(rng.random((M, 8)), None, rng).elbo)
        results[fast] = out
    for a, b in zip(results[False], results[True]):
        assert a.shape == b.shape and relative_error(a, b) < 1e-12


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_non_finite_loss_changes_no_parameter_on_either_path(optimizer):
    """The update is fused into the backward pass, but only after the loss is known to be finite."""
    for step_class in (AEVB, FastAEVB):
        model = _small()
        model.params["enc.log_var.b"][...] = 1000.0                    # sigma^2 = inf: the KL, hence the loss, is inf
        before = {k: p.copy() for k, p in model.params.items()}
        opt = OPTIMIZERS[optimizer]()
        with np.errstate(over="ignore", invalid="ignore"):
            result = step_class(model, opt, weight_decay=0.1)(np.full((4, 6), 0.5), None, np.random.default_rng(0))
        assert not np.isfinite(result.loss)
        assert opt.t == 0 and not opt.state
        for k in before:
            np.testing.assert_array_equal(model.params[k], before[k])


def test_the_fused_update_is_optimizer_step(monkeypatch):
    """FastAEVB's update inside the backward pass against fast_loss_and_grads then optimizer.step (readable),
    over three steps of Adam (whose update depends on t): float64, 1e-12."""
    results = []
    for fused in (True, False):
        model = VAE(D=30, H=(20, 10), J=4, init="glorot", random_state=0)
        opt = Adam(0.01)
        step = FastAEVB(model, opt, "B", 2, weight_decay=1e-3)
        rng = np.random.default_rng(1)
        for _ in range(3):
            x = rng.random((16, 30))
            if fused:
                step(x, None, rng)
            else:
                eps = model.sample_eps(16, 2, rng)
                step.loss_and_grads(x, eps)
                opt.step(model.params, model.grads, weight_decay=1e-3)
        results.append(({k: p.copy() for k, p in model.params.items()}, opt.state_dict()))
    for k in results[0][0]:
        assert relative_error(results[0][0][k], results[1][0][k]) <= 1e-12, k
    assert int(results[0][1]["t"]) == int(results[1][1]["t"]) == 3


def test_bad_input_gets_the_same_error_on_both_paths():
    model = VAE(D=6, H=5, J=3, random_state=0)
    fast = FastAEVB(model, SGD(0.1))
    bad = [np.full((4, 6), np.nan), np.full((4, 6), 255.0), np.zeros((4, 5)), np.zeros((4, 6), np.uint8),
           np.zeros((4, 2, 3)), [[0.0] * 6] * 4]
    for x in bad:
        messages = []
        for run in (lambda: model.loss_and_grads(x, model.sample_eps(4)), lambda: fast.loss_and_grads(x, model.sample_eps(4))):
            with pytest.raises((ValueError, TypeError)) as err:
                run()
            messages.append(str(err.value))
        assert messages[0] == messages[1]
    with pytest.raises(ValueError, match="eps must have shape"):
        fast.loss_and_grads(np.zeros((4, 6)), np.zeros((1, 5, 3)))
    before = {k: v.copy() for k, v in model.params.items()}
    for eps in (np.full((1, 4, 3), np.nan), np.full((2, 4, 3), np.inf)):       # the model's dtype, C-ordered
        messages = []
        for run in (lambda e=eps: model.loss_and_grads(np.zeros((4, 6)), e),
                    lambda e=eps: fast.loss_and_grads(np.zeros((4, 6)), e)):
            with pytest.raises(ValueError) as err:
                run()
            messages.append(str(err.value))
        assert messages[0] == messages[1] == "eps contains NaN or infinite values."
    assert all(np.array_equal(before[k], model.params[k]) for k in before)


def test_float16_data_is_accepted_alike_on_both_paths():
    model = VAE(D=6, H=5, J=3, random_state=0)
    x = np.full((4, 6), 0.5, dtype=np.float16)
    eps = model.sample_eps(4, 1, 0)
    a = model.loss_and_grads(x, eps)[1]
    b = FastAEVB(model, SGD(0.1)).loss_and_grads(x, eps)[1]
    assert relative_error(a, b) < 1e-12


def test_the_fast_update_falls_back_for_arrays_it_cannot_flatten():
    from minivae.fast.step import fast_update
    results = []
    for use_fast in (False, True):
        base = np.arange(12.0).reshape(3, 4)
        params = {"w": base[:, ::2]}                                   # not contiguous
        opt = Adam(0.1)
        for _ in range(2):
            if use_fast:
                fast_update(opt, params, {"w": np.full((3, 2), 0.5)}, 0.0)
            else:
                opt.step(params, {"w": np.full((3, 2), 0.5)})
        results.append(base)
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], np.arange(12.0).reshape(3, 4))


@pytest.mark.skipif(not kernels.JIT_ENABLED, reason="as Python (NUMBA_DISABLE_JIT=1) this model takes a minute")
def test_a_fast_step_allocates_nothing_large():
    """Buffers are allocated once per minibatch shape: a step's Python-side peak is a few small arrays."""
    x = (np.random.default_rng(0).random((100, 784)) < 0.3).astype(np.float64)
    peaks = {}
    for fast in (False, True):
        model = VAE(D=784, H=500, J=20, random_state=0)
        step = (FastAEVB if fast else AEVB)(model, Adagrad(0.02), weight_decay=1 / 60000)
        rng = np.random.default_rng(1)
        step(x, None, rng)
        step(x, None, rng)                                             # warm: buffers and state exist
        tracemalloc.start()
        step(x, None, rng)
        peaks[fast] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # eps (16 kB), elbo and a few (M,) arrays; one (M, D) float64 array alone is 627 kB
    assert peaks[True] < 64_000, peaks
    assert peaks[False] > 20 * peaks[True], peaks                      # the readable path does allocate


@pytest.mark.parametrize("est", ["A", "B"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_the_fast_gradient_passes_finite_differences(decoder, sigmoid_mean, est):
    model = _small(decoder=decoder, sigmoid_mean=sigmoid_mean)
    rng = np.random.default_rng(1)
    errors = check_fast_model(model, rng.random((4, 6)), model.sample_eps(4, 3, rng), est)
    assert set(errors) == set(model.params) and max(errors.values()) < TOLERANCE, errors


def test_fit_with_a_fast_step_resumes_a_readable_run_exactly(tmp_path):
    """Checkpoints are the same for both steps: a run started readable can continue fast (float64, 1e-12)."""
    rng = np.random.default_rng(0)
    x, xt = rng.random((120, 12)), rng.random((40, 12))
    kw = dict(M=10, seed=3, eval_points=3, progress=False)
    whole = VAE(12, 6, 2, random_state=1)
    fit(whole, AEVB(whole, Adagrad(0.05), weight_decay=1 / 120), x, xt, samples=300, **kw)
    part = VAE(12, 6, 2, random_state=1)
    ck = tmp_path / "ck.npz"
    fit(part, AEVB(part, Adagrad(0.05), weight_decay=1 / 120), x, xt, samples=150, checkpoint=ck, **kw)
    resumed = VAE(12, 6, 2, random_state=7)
    fit(resumed, FastAEVB(resumed, Adagrad(0.05), weight_decay=1 / 120), x, xt, samples=300, checkpoint=ck,
        resume=True, **kw)
    for name in whole.params:
        assert relative_error(whole.params[name], resumed.params[name]) < 1e-12, name


# --- real data: a fixed-seed epoch, per-step bounds ---------------------------------------------------

@pytest.mark.realdata
@pytest.mark.slow
def test_fixed_seed_epoch_on_mnist_gives_the_same_bounds(data_dir):
    """The paper's MNIST model (784-500-20, Adagrad 0.02, estimator B, weight decay 1/N), float64,
    through fit: one epoch over the first 10000 training images (100 steps of M = 100).
    The whole 60000-image epoch is compared by ``python benchmarks/bench_train.py --check-epoch``."""
    from minivae.data import load_mnist

    X, _ = load_mnist("train", data_dir=data_dir)
    X = X[:10000] if kernels.JIT_ENABLED else X[:300]
    bounds = {}
    for fast in (False, True):
        model = VAE(D=784, H=500, J=20, dtype="float64", random_state=0)
        per_step = []

        class Recording(FastAEVB if fast else AEVB):
            def __call__(self, x, idx, rng):
                result = super().__call__(x, idx, rng)
                per_step.append(float(np.mean(result.elbo)))
                return result

        fit(model, Recording(model, Adagrad(0.02), weight_decay=1 / 60000), X, None, epochs=1, eval_points=1,
            eval_train_size=100, progress=False)
        bounds[fast] = np.array(per_step)
    assert len(bounds[False]) == len(X) // 100
    if kernels.JIT_ENABLED:
        assert bounds[False][-1] > bounds[False][0] + 50          # it learns (nats per datapoint)
    np.testing.assert_allclose(bounds[True], bounds[False], rtol=1e-9, atol=0)


# --- fast evaluation: the same draws, the same numbers --------------------------------------------

from minivae.evaluate import log_likelihood  # noqa: E402
from minivae.fast import evaluate as fast_evaluate  # noqa: E402
from minivae.train import dataset_elbo  # noqa: E402


def _eval_model(decoder="bernoulli", sigmoid_mean=True, dtype="float64", H=(12,)):
    return VAE(D=30, H=H, J=4, decoder=decoder, sigmoid_mean=sigmoid_mean, init="glorot", dtype=dtype,
               random_state=0)


def _eval_data(dtype="float64", n=37):
    return np.random.default_rng(1).random((n, 30)).astype(dtype)


@pytest.mark.parametrize("H", [(12,), (), (9, 7)], ids=["one-hidden", "linear", "two-hidden"])
@pytest.mark.parametrize("est", ["A", "B"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_fast_dataset_elbo_is_the_readable_one(decoder, sigmoid_mean, est, H):
    """Same number (float64, 1e-12) and the same draws: the rng ends in the same state."""
    model, x = _eval_model(decoder, sigmoid_mean, H=H), _eval_data()
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    a = dataset_elbo(model, x, rng_a, L=3, estimator=est, batch_size=10)     # 4 batches, the last one short
    b = fast_evaluate.fast_dataset_elbo(model, x, rng_b, L=3, estimator=est, batch_size=10)
    assert abs(a - b) <= 1e-12 * abs(a)
    assert rng_a.bit_generator.state == rng_b.bit_generator.state


@pytest.mark.parametrize("H", [(12,), (9, 7)], ids=["one-hidden", "two-hidden"])
@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_fast_log_likelihood_is_the_readable_one(decoder, sigmoid_mean, H):
    """K = 700 in chunks of 300 (the last one short), batches of 10 of 37 points: same estimates, same draws."""
    model, x = _eval_model(decoder, sigmoid_mean, H=H), _eval_data()
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a = log_likelihood(model, x, K=700, rng=rng_a, batch_size=10, chunk=300)
    b = fast_evaluate.fast_log_likelihood(model, x, K=700, rng=rng_b, batch_size=10, chunk=300)
    assert a.dtype == b.dtype == np.float64 and a.shape == b.shape == (37,)
    assert relative_error(a, b) <= 1e-12
    assert rng_a.bit_generator.state == rng_b.bit_generator.state
    # the meaning, on the fast path itself: the estimate lies above the bound (Jensen), here by a clear margin
    elbo = np.mean(model.elbo(x, model.sample_eps(len(x), 700, np.random.default_rng(4)), "A"))
    assert b.mean() > elbo


@pytest.mark.parametrize("decoder,sigmoid_mean", DECODERS, ids=DECODER_IDS)
def test_fast_evaluation_in_float32(decoder, sigmoid_mean):
    """float32 models: the kernels compute in float32 with their own polynomials: agreement to 1e-5."""
    model, x = _eval_model(decoder, sigmoid_mean, dtype="float32"), _eval_data("float32")
    a = dataset_elbo(model, x, np.random.default_rng(5), L=2)
    b = fast_evaluate.fast_dataset_elbo(model, x, np.random.default_rng(5), L=2)
    assert abs(a - b) <= 1e-5 * abs(a)
    a = log_likelihood(model, x, K=300, rng=np.random.default_rng(6), chunk=128)
    b = fast_evaluate.fast_log_likelihood(model, x, K=300, rng=np.random.default_rng(6), chunk=128)
    assert relative_error(a, b) <= 1e-5


def test_fast_evaluation_decodes_more_rows_than_one_block():
    """Several decoder blocks (and a short last one) for one chunk of samples."""
    model, x = _eval_model(), _eval_data(n=9)
    k = 2 * fast_evaluate.BLOCK_ROWS // 9 + 5                      # 9 * k rows: two full blocks and a part
    a = log_likelihood(model, x, K=k, rng=7)
    b = fast_evaluate.fast_log_likelihood(model, x, K=k, rng=7)
    assert 9 * k > 2 * fast_evaluate.BLOCK_ROWS and relative_error(a, b) <= 1e-12


def test_fast_evaluation_finds_log_px_of_the_linear_gaussian_model():
    """log p(x) in closed form (minivae.teaching.linear_gaussian). With the encoder at the exact posterior every
    importance weight is p(x), so the estimate is exact; with a shifted encoder mean it is within four
    of its standard errors (std(w) / (mean(w) sqrt(K)), from the same draws) of the truth."""
    from minivae.teaching.linear_gaussian import linear_gaussian
    lg = linear_gaussian(D=5, J=2)
    model, x = lg.model, lg.sample(20, rng=0)
    exact = lg.log_px(x)
    np.testing.assert_allclose(fast_evaluate.fast_log_likelihood(model, x, K=50, rng=8), exact, rtol=1e-12)
    model.params["enc.mu.b"] += 0.4                                   # q no longer the posterior
    K = 4000
    est = fast_evaluate.fast_log_likelihood(model, x, K=K, rng=8, batch_size=20, chunk=K)
    log_w = model.log_importance_weights(x, model.sample_eps(len(x), K, np.random.default_rng(8)))   # same draws
    w = np.exp(log_w - log_w.max(axis=0))
    se = w.std(axis=0) / (w.mean(axis=0) * np.sqrt(K))
    assert np.all(se > 1e-4) and np.all(np.abs(est - exact) < 4 * se), (est - exact, se)


def test_fast_evaluation_verified_fingerprints_are_those_of_the_code_as_it_stands():
    """If this fails, a readable evaluation function was changed: check the twins above, then record it:
    python -m minivae.fast.eligibility --write."""
    now = eligibility.current_fingerprints(eligibility.EVAL_REPLACED)
    assert None not in now.values()
    assert now == eligibility.EVAL_VERIFIED


def test_fast_evaluation_steps_aside_for_an_edited_function(monkeypatch):
    """An edited readable evaluation function: the fast functions return what the edited code returns."""
    import minivae.evaluate as readable
    model, x = _eval_model(), _eval_data()
    original = readable.logmeanexp
    monkeypatch.setattr(readable, "logmeanexp", lambda a, axis=0: original(a, axis) + 1.0)
    assert "minivae.evaluate.logmeanexp" in eligibility.why_not_evaluate(model)
    a = log_likelihood(model, x, K=50, rng=9)
    b = fast_evaluate.fast_log_likelihood(model, x, K=50, rng=9)
    np.testing.assert_array_equal(a, b)
    refused = _eval_model()
    refused.decoder.trunk.layers.append(layers.Identity())           # a model the fast path does not take
    assert "not pairs of Linear" in eligibility.why_not_evaluate(refused)
    assert fast_evaluate.fast_dataset_elbo(refused, x, 10) == dataset_elbo(refused, x, 10)   # the readable code ran


def test_fit_records_the_same_history_with_the_fast_evaluation():
    rng = np.random.default_rng(0)
    x, xt = rng.random((120, 12)), rng.random((40, 12))
    histories = []
    for evaluate in (None, fast_evaluate.fast_dataset_elbo):
        model = VAE(12, 6, 2, random_state=1)
        histories.append(fit(model, AEVB(model, Adagrad(0.05), weight_decay=1 / 120), x, xt, M=10, samples=300,
                             seed=3, eval_points=4, progress=False, evaluate=evaluate))
    for key in ("train_elbo", "test_elbo"):
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_loss_is_np_mean_of_the_bound_bit_for_bit(dtype):
    """The fast step's mean (for the loss) is np.mean's arithmetic, not an approximation of it."""
    rng = np.random.default_rng(3)
    for n in (1, 7, 100, 129, 1000):
        v = (-100 * rng.random(n)).astype(dtype)
        assert step_module._mean(v) == np.mean(v) and step_module._mean(v).dtype == np.mean(v).dtype


def test_the_fast_step_brings_its_fast_evaluator_and_says_which_code_runs():
    """fit records the bound with the step's own evaluator: the readable one for AEVB, the fused twin for FastAEVB."""
    model = VAE(D=6, H=5, J=3, random_state=0)
    fast, readable = FastAEVB(model, SGD(0.1)), AEVB(model, SGD(0.1))
    assert fast.evaluator() is fast_evaluate.fast_dataset_elbo
    assert readable.evaluator() is dataset_elbo
    assert fast.code_path.startswith("fast") and readable.code_path.startswith("readable")
