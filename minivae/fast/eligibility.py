"""When the fast path may run: only where it computes what the readable code would.

The fast step stands in for a list of readable functions and methods (:data:`REPLACED`):
every function the readable step (``AEVB.__call__``) calls, down to the input checks, except
the few it calls itself (:data:`SHARED`); ``tests/test_fast.py`` traces the readable step to
hold the list to that. It runs only if

- the model is built from the library's own classes (no subclass), with
  trunks of ``[Linear, activation] * k`` and a supported activation, and the
  optimiser is the library's SGD, Adagrad or Adam;
- no object carries a method of its own (an instance attribute replacing
  ``forward`` or ``backward``);
- every replaced function is, statement for statement, the code the fast path
  was verified against: its syntax tree, without its docstring, its comments and
  the wording of its messages (:func:`fingerprint`), has the fingerprint recorded
  in ``verified.json`` beside this module (:data:`VERIFIED`). A student who edits
  ``Tanh.backward`` in ``minivae/layers.py``, or assigns ``Tanh.backward = ...``
  in a notebook, changes that fingerprint, and training runs the edited code;
  rewording an error message changes nothing.

:func:`why_not` returns the first reason it finds, or None. When a developer
changes a replaced function on purpose, the tests (``tests/test_fast.py``) fail
until its twin is checked again (``tests/test_kernels.py``, ``tests/test_fast.py``)
and the fingerprints are recorded again::

    python -m minivae.fast.eligibility           # which fingerprints differ from the code as it stands
    python -m minivae.fast.eligibility --write   # record the code as it stands in verified.json

The fast wake-sleep step (:mod:`minivae.fast.wakesleep`) has its own list,
:data:`WAKE_SLEEP_REPLACED` (what ``WakeSleep.__call__`` calls, less :data:`WAKE_SLEEP_SHARED`),
and its own table in ``verified.json``; :func:`why_not_wake_sleep` is its rule, so an edit to a
function only the AEVB step runs leaves it on, and the other way round.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import inspect
import json
import textwrap
import weakref
from pathlib import Path

from .. import layers, model as model_module, optim

__all__ = ["FastPathUnavailable", "why_not", "why_not_evaluate", "fingerprint", "current_fingerprints", "REPLACED",
           "EVAL_REPLACED", "SHARED", "VERIFIED", "EVAL_VERIFIED", "VERIFIED_FILE", "layer_pairs",
           "why_not_wake_sleep", "WAKE_SLEEP_REPLACED", "WAKE_SLEEP_SHARED", "WAKE_SLEEP_VERIFIED"]


class FastPathUnavailable(ValueError):
    """The fast path cannot compute this model's step exactly; the message says why."""


#: Every readable function or method whose arithmetic the fast step reproduces.
REPLACED = (
    "minivae.layers.sigmoid", "minivae.layers.softplus", "minivae.layers.tanh_backward",
    "minivae.layers.sigmoid_backward", "minivae.layers.relu_backward", "minivae.layers.softplus_backward",
    "minivae.layers.Linear.forward", "minivae.layers.Linear.backward", "minivae.layers.Linear.backward_input",
    "minivae.layers.Tanh.forward", "minivae.layers.Tanh.backward",
    "minivae.layers.Sigmoid.forward", "minivae.layers.Sigmoid.backward",
    "minivae.layers.ReLU.forward", "minivae.layers.ReLU.backward",
    "minivae.layers.Softplus.forward", "minivae.layers.Softplus.backward",
    "minivae.layers.Identity.forward", "minivae.layers.Identity.backward",
    "minivae.layers.Sequential.forward", "minivae.layers.Sequential.backward",
    "minivae.estimator.check_estimator",
    "minivae.estimator.reparameterize", "minivae.estimator.reparameterize_backward",
    "minivae.estimator.kl_standard_normal", "minivae.estimator.kl_standard_normal_grad",
    "minivae.estimator.bernoulli_log_likelihood", "minivae.estimator.bernoulli_log_likelihood_grad",
    "minivae.estimator.gaussian_log_likelihood", "minivae.estimator.gaussian_log_likelihood_grad",
    "minivae.estimator.log_standard_normal", "minivae.estimator.log_standard_normal_grad",
    "minivae.estimator.log_diag_gaussian", "minivae.estimator.log_diag_gaussian_grad",
    "minivae.estimator.estimator_a", "minivae.estimator.estimator_a_backward",
    "minivae.estimator.estimator_b", "minivae.estimator.estimator_b_backward",
    "minivae.estimator.log_parameter_prior_grad",
    "minivae.model.GaussianEncoder.forward", "minivae.model.GaussianEncoder.backward",
    "minivae.model.BernoulliDecoder.forward", "minivae.model.BernoulliDecoder.backward",
    "minivae.model.BernoulliDecoder.log_likelihood", "minivae.model.BernoulliDecoder.log_likelihood_grad",
    "minivae.model.GaussianDecoder.forward", "minivae.model.GaussianDecoder.backward",
    "minivae.model.GaussianDecoder.log_likelihood", "minivae.model.GaussianDecoder.log_likelihood_grad",
    "minivae.model.VAE.check_x", "minivae.model.VAE.check_eps", "minivae.utils.check_matrix",
    "minivae.model.VAE._forward", "minivae.model.VAE.loss_and_grads",
    "minivae.optim.decayed_gradient", "minivae.optim.sgd_update", "minivae.optim.adagrad_update",
    "minivae.optim.adam_update", "minivae.optim.Optimizer.step", "minivae.optim.Optimizer._slot",
    "minivae.optim.SGD._update", "minivae.optim.Adagrad._update", "minivae.optim.Adam._update",
    "minivae.steps.AEVB.__call__",
)

#: The readable evaluation functions whose results :mod:`minivae.fast.evaluate` reproduces
#: (beyond :data:`REPLACED`, whose forward parts and checks it also stands in for).
EVAL_REPLACED = (
    "minivae.model.VAE.elbo", "minivae.model.VAE.log_importance_weights", "minivae.train.dataset_elbo",
    "minivae.evaluate.log_likelihood", "minivae.evaluate.logmeanexp",
)

#: Readable functions the readable step calls that the fast step and the fast evaluation call
#: too (the noise is drawn by the model's own ``sample_eps``): an edit to one of them reaches
#: both paths alike, so none is fingerprinted.
SHARED = ("minivae.model.VAE.sample_eps", "minivae.utils.as_generator")

#: What :data:`REPLACED` holds for AEVB alone: the wake-sleep step runs none of it.
_AEVB_ONLY = (
    "minivae.estimator.check_estimator", "minivae.estimator.reparameterize_backward",
    "minivae.estimator.kl_standard_normal", "minivae.estimator.kl_standard_normal_grad",
    "minivae.estimator.log_standard_normal_grad",
    "minivae.estimator.estimator_a", "minivae.estimator.estimator_a_backward",
    "minivae.estimator.estimator_b", "minivae.estimator.estimator_b_backward",
    "minivae.model.VAE._forward", "minivae.model.VAE.loss_and_grads", "minivae.steps.AEVB.__call__",
)

#: Every readable function the wake-sleep step (``WakeSleep.__call__``) calls whose arithmetic
#: :class:`minivae.fast.wakesleep.FastWakeSleep` reproduces: its two phases and its dream, and the
#: layers, likelihoods, input checks and optimisers it shares with the AEVB step.
WAKE_SLEEP_REPLACED = (
    "minivae.baselines.wakesleep.WakeSleep.__call__", "minivae.baselines.wakesleep.wake_loss_and_grads",
    "minivae.baselines.wakesleep.sleep_loss_and_grads", "minivae.baselines.wakesleep.dream",
    "minivae.model.BernoulliDecoder.sample", "minivae.model.BernoulliDecoder.mean",
) + tuple(name for name in REPLACED if name not in _AEVB_ONLY)

#: Readable functions the readable wake-sleep step calls that the fast one calls too: the noise,
#: the parameter groups, and the Gaussian decoder's sample (its draws and arithmetic, on the mean
#: and log-variance the fast step computes).
WAKE_SLEEP_SHARED = SHARED + ("minivae.model.VAE.theta", "minivae.model.VAE.phi", "minivae.model.GaussianDecoder.sample")

#: The file of the verified fingerprints (``python -m minivae.fast.eligibility --write``).
VERIFIED_FILE = Path(__file__).with_name("verified.json")


_TABLE_NAMES = ("step", "evaluation", "wake-sleep")


def _read_verified():
    """{"step": {...}, "evaluation": {...}, "wake-sleep": {...}} from :data:`VERIFIED_FILE`; an empty
    table for each that cannot be read."""
    try:
        tables = json.loads(VERIFIED_FILE.read_text())
    except (OSError, ValueError):
        tables = {}
    out = {}
    for name in _TABLE_NAMES:
        try:
            out[name] = dict(tables[name])
        except (KeyError, TypeError, ValueError):
            out[name] = {}
    return out


_TABLES = _read_verified()
#: Fingerprints of :data:`REPLACED` as verified against the fast step (read from ``verified.json``).
VERIFIED = _TABLES["step"]
#: Fingerprints of :data:`EVAL_REPLACED` as verified against the fast evaluation.
EVAL_VERIFIED = _TABLES["evaluation"]
#: Fingerprints of :data:`WAKE_SLEEP_REPLACED` as verified against the fast wake-sleep step.
WAKE_SLEEP_VERIFIED = _TABLES["wake-sleep"]

_SUPPORTED_OPTIMIZERS = (optim.SGD, optim.Adagrad, optim.Adam)
_ACTIVATION_TYPES = tuple(layers.ACTIVATIONS.values())


def _resolve(qualified):
    """The object a dotted name refers to *now* (module attributes looked up at call time)."""
    parts = qualified.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(qualified)


class _Blank(ast.NodeTransformer):
    """Turns every string and f-string below the node it visits into ``""``."""

    def visit_JoinedStr(self, node):
        return ast.Constant("")

    def visit_Constant(self, node):
        return ast.Constant("") if isinstance(node.value, str) else node


def _is_warn(func):
    return ((isinstance(func, ast.Attribute) and func.attr == "warn" and isinstance(func.value, ast.Name)
             and func.value.id == "warnings") or (isinstance(func, ast.Name) and func.id == "warn"))


def _blank_messages(tree):
    """Blank the wording of the messages in ``tree``, in place: every string in a ``raise``, in an
    ``assert``'s message and in the arguments of ``warnings.warn``, and every f-string that is not
    a key (a subscript, a dict key) or compared. A string that selects something stays, as code:
    ``decoder == "bernoulli"``, ``params["W"]``, ``name + ".m"``."""
    blank = _Blank()
    keys = set()                         # f-strings that select something: left as they are
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            keys.add(id(node.slice))
        elif isinstance(node, ast.Dict):
            keys.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Compare):
            keys.update(id(operand) for operand in (node.left, *node.comparators))
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            node.exc = blank.visit(node.exc)
        elif isinstance(node, ast.Assert) and node.msg is not None:
            node.msg = blank.visit(node.msg)
        elif isinstance(node, ast.Call) and _is_warn(node.func):
            node.args = [blank.visit(arg) for arg in node.args]
            for keyword in node.keywords:
                keyword.value = blank.visit(keyword.value)
        for field, value in ast.iter_fields(node):
            if isinstance(value, ast.JoinedStr) and id(value) not in keys:
                setattr(node, field, ast.Constant(""))
            elif isinstance(value, list):
                setattr(node, field, [ast.Constant("") if isinstance(v, ast.JoinedStr) and id(v) not in keys else v
                                      for v in value])


def fingerprint(func):
    """sha256 (16 hex digits) of a function's syntax tree, without its docstring and its comments, and
    with the wording of its messages blanked (:func:`_blank_messages`); None if it has no source.

    So the fingerprint changes with what the function does, not with how it explains an error. It is
    kept for the function object as long as its code object is the same (:func:`why_not` asks often).
    """
    known = _KNOWN.get(func) if inspect.isfunction(func) else None
    if known is not None and known[0] is func.__code__:
        return known[1]
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:                  # a lambda inside a longer expression, say: not verifiable
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    for node in ast.walk(tree):          # the name it is defined under does not matter, only what it does
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.name = "_"
            break
    _blank_messages(tree)
    digest = hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:16]
    if inspect.isfunction(func):
        _KNOWN[func] = (func.__code__, digest)
    return digest


_KNOWN = weakref.WeakKeyDictionary()     # function -> (its code object, its fingerprint)


def current_fingerprints(names=REPLACED):
    """{qualified name: fingerprint} of ``names`` (:data:`REPLACED` by default) as the code stands now."""
    return {name: fingerprint(_resolve(name)) for name in names}


def _edited(names, verified):
    """The first of ``names`` whose code is not the verified one, as a reason; or None."""
    if not verified:
        return f"its record of the verified code ({VERIFIED_FILE.name}, beside {__name__}) is missing"
    for name in names:
        try:
            now = fingerprint(_resolve(name))
        except (ImportError, AttributeError):
            return f"{name} no longer exists"
        if now is None or now != verified.get(name):
            return f"{name} is not the code the fast path was verified against (it was edited or replaced)"
    return None


def _own_methods(obj):
    """Names of callables stored on the object itself (replacing its class's methods)."""
    return sorted(k for k, v in vars(obj).items() if callable(v) and not isinstance(v, type)
                  and not k.startswith("__"))


def layer_pairs(trunk):
    """[(Linear, activation code), ...] of a trunk built by :func:`minivae.layers.mlp`."""
    from .kernels import ACT_CODES
    names = {cls: name for name, cls in layers.ACTIVATIONS.items()}
    ls = trunk.layers
    return [(ls[i], ACT_CODES[names[type(ls[i + 1])]]) for i in range(0, len(ls), 2)]


def _trunk_reason(trunk, where):
    if type(trunk) is not layers.Sequential:
        return f"the {where} trunk is a {type(trunk).__name__}, not the library's Sequential"
    ls = trunk.layers
    if len(ls) % 2:
        return f"the {where} trunk has {len(ls)} layers, not pairs of Linear and an activation"
    for i in range(0, len(ls), 2):
        if type(ls[i]) is not layers.Linear:
            return f"layer {i} of the {where} trunk is a {type(ls[i]).__name__}, not the library's Linear"
        if type(ls[i + 1]) not in _ACTIVATION_TYPES:
            return (f"layer {i + 1} of the {where} trunk is a {type(ls[i + 1]).__name__}, not one of the "
                    f"supported activations ({', '.join(layers.ACTIVATIONS)})")
    return None


def why_not(model, optimizer=None):
    """The reason the fast path cannot run this model (and optimiser) exactly, or None if it can."""
    return _structure_reason(model, () if optimizer is None else (optimizer,)) or _edited(REPLACED, VERIFIED)


def why_not_wake_sleep(model, opt_theta, opt_phi):
    """The reason the fast wake-sleep step cannot run this model and its two optimisers exactly, or None:
    the model and both optimisers as :func:`why_not` asks, and the functions of
    :data:`WAKE_SLEEP_REPLACED` the code the fast step was verified against."""
    return _structure_reason(model, (opt_theta, opt_phi)) or _edited(WAKE_SLEEP_REPLACED, WAKE_SLEEP_VERIFIED)


def _structure_reason(model, optimizers):
    """The reason the model (library classes, supported layers, no instance methods, one dtype) or one
    of the optimisers is not what the fast path computes, or None."""
    m = model_module
    if type(model) is not m.VAE:
        return f"the model is a {type(model).__name__}, not the library's VAE"
    enc, dec = model.encoder, model.decoder
    if type(enc) is not m.GaussianEncoder:
        return f"the encoder is a {type(enc).__name__}, not the library's GaussianEncoder"
    if type(dec) not in (m.BernoulliDecoder, m.GaussianDecoder):
        return f"the decoder is a {type(dec).__name__}, not one of the library's decoders"
    for trunk, where in ((enc.trunk, "encoder"), (dec.trunk, "decoder")):
        reason = _trunk_reason(trunk, where)
        if reason:
            return reason
    heads = [enc.mu, enc.log_var] + ([dec.logits] if type(dec) is m.BernoulliDecoder else [dec.mean_layer, dec.log_var])
    for head in heads:
        if type(head) is not layers.Linear:
            return f"an output layer is a {type(head).__name__}, not the library's Linear"
    if type(dec) is m.GaussianDecoder:
        expected = layers.Sigmoid if dec.sigmoid_mean else type(None)
        if type(dec._squash) is not expected:
            return "the Gaussian decoder's mean squashing does not match its sigmoid_mean setting"
    objects = [("the model", model), ("the encoder", enc), ("the decoder", dec)]
    objects += [(f"a layer ({type(layer).__name__})", layer) for t in (enc.trunk, dec.trunk) for layer in t.layers]
    objects += [(f"an output layer", h) for h in heads]
    for optimizer in optimizers:
        if type(optimizer) not in _SUPPORTED_OPTIMIZERS:
            return f"the optimiser is a {type(optimizer).__name__}, not the library's SGD, Adagrad or Adam"
        objects.append(("the optimiser", optimizer))
    for what, obj in objects:
        own = _own_methods(obj)
        if own:
            return f"{what} has its own {', '.join(own)} (an instance attribute), which the fast path would not run"
    for name, p in model.params.items():
        g = model.grads.get(name)
        if p.dtype != model.dtype or g is None or g.dtype != model.dtype:
            return f"parameter {name} or its gradient is not of the model's dtype {model.dtype}"
    return None


def why_not_evaluate(model):
    """The reason the fast evaluation cannot run for this model, or None (:func:`why_not`, plus
    the readable evaluation functions of :data:`EVAL_REPLACED` unchanged)."""
    return why_not(model) or _edited(EVAL_REPLACED, EVAL_VERIFIED)


def main(argv=None):
    """``python -m minivae.fast.eligibility [--write]``: report the fingerprints that differ from the
    code as it stands (exit status 1 if any), or record the code as it stands in ``verified.json``."""
    parser = argparse.ArgumentParser(prog="python -m minivae.fast.eligibility", description=main.__doc__)
    parser.add_argument("--write", action="store_true",
                        help="record the code as it stands (after checking the fast path against it)")
    args = parser.parse_args(argv)
    now = {"step": current_fingerprints(REPLACED), "evaluation": current_fingerprints(EVAL_REPLACED),
           "wake-sleep": current_fingerprints(WAKE_SLEEP_REPLACED)}
    missing = [name for table in now.values() for name, value in table.items() if value is None]
    if missing:
        print(f"no source to fingerprint for {', '.join(missing)}")
        return 1
    if args.write:
        VERIFIED_FILE.write_text(json.dumps({
            "about": "fingerprints of the readable functions the fast path was verified against; "
                     "written by python -m minivae.fast.eligibility --write",
            **now}, indent=1) + "\n")
        print(f"wrote {sum(map(len, now.values()))} fingerprints to {VERIFIED_FILE}")
        return 0
    recorded = _read_verified()
    differ = [f"{table}: {name}: recorded {recorded[table].get(name)}, now {value}"
              for table in now for name, value in now[table].items() if recorded[table].get(name) != value]
    differ += [f"{table}: {name}: recorded, no longer replaced"
               for table in now for name in recorded[table] if name not in now[table]]
    if not differ:
        print(f"{VERIFIED_FILE}: the {sum(map(len, now.values()))} fingerprints are those of the code as it stands")
        return 0
    print("\n".join(differ))
    print("Check the fast path against the changed functions (tests/test_kernels.py, tests/test_fast.py), "
          "then record them with --write.")
    return 1


if __name__ == "__main__":  # pragma: no cover - a developer's tool
    raise SystemExit(main())
