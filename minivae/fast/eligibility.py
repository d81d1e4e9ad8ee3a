"""When the fast path may run: only where it computes what the readable code would.

The fast step replaces a list of readable functions and methods (:data:`REPLACED`)
by fused kernels. It runs only if

- the model is built from the library's own classes (no subclass), with
  trunks of ``[Linear, activation] * k`` and a supported activation, and the
  optimiser is the library's SGD, Adagrad or Adam;
- no object carries a method of its own (an instance attribute replacing
  ``forward`` or ``backward``);
- every replaced function is, statement for statement, the code the fast path
  was verified against: its syntax tree (docstrings and comments left out) has
  the fingerprint recorded in :data:`VERIFIED`. A student who edits
  ``Tanh.backward`` in ``minivae/layers.py``, or assigns ``Tanh.backward = ...``
  in a notebook, changes that fingerprint, and training runs the edited code.

:func:`why_not` returns the first reason it finds, or None. When a developer
changes a readable function on purpose, the tests (``tests/test_fast.py``) fail
until the twin is checked again and the table is refreshed with
``python -m minivae.fast.eligibility``, which prints it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import textwrap

from .. import layers, model as model_module, optim

__all__ = ["FastPathUnavailable", "why_not", "why_not_evaluate", "fingerprint", "EVAL_REPLACED", "EVAL_VERIFIED", "current_fingerprints", "REPLACED", "VERIFIED",
           "layer_pairs"]


class FastPathUnavailable(ValueError):
    """The fast path cannot compute this model's step exactly; the message says why."""


#: Every readable function or method whose arithmetic the fast step reproduces.
REPLACED = (
    "minivae.layers.sigmoid", "minivae.layers.softplus", "minivae.layers.tanh_backward",
    "minivae.layers.sigmoid_backward", "minivae.layers.relu_backward", "minivae.layers.softplus_backward",
    "minivae.layers.Linear.forward", "minivae.layers.Linear.backward",
    "minivae.layers.Tanh.forward", "minivae.layers.Tanh.backward",
    "minivae.layers.Sigmoid.forward", "minivae.layers.Sigmoid.backward",
    "minivae.layers.ReLU.forward", "minivae.layers.ReLU.backward",
    "minivae.layers.Softplus.forward", "minivae.layers.Softplus.backward",
    "minivae.layers.Identity.forward", "minivae.layers.Identity.backward",
    "minivae.layers.Sequential.forward", "minivae.layers.Sequential.backward",
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
    "minivae.model.VAE._forward", "minivae.model.VAE.loss_and_grads", "minivae.model.VAE.sample_eps",
    "minivae.optim.decayed_gradient", "minivae.optim.sgd_update", "minivae.optim.adagrad_update",
    "minivae.optim.adam_update", "minivae.optim.Optimizer.step", "minivae.optim.Optimizer._slot",
    "minivae.optim.SGD._update", "minivae.optim.Adagrad._update", "minivae.optim.Adam._update",
    "minivae.steps.AEVB.__call__",
)

#: Fingerprints of :data:`REPLACED` as verified against the fast path (``python -m minivae.fast.eligibility``).
VERIFIED = {
    'minivae.layers.sigmoid': '6d93519e8bec7073',
    'minivae.layers.softplus': '1de75730f6b729b6',
    'minivae.layers.tanh_backward': '8890479c74803db2',
    'minivae.layers.sigmoid_backward': '70be1a7927532345',
    'minivae.layers.relu_backward': '8004a46fd61a395e',
    'minivae.layers.softplus_backward': 'b2fe9b243a08dc64',
    'minivae.layers.Linear.forward': '3bd0ad117330a339',
    'minivae.layers.Linear.backward': '0ecdef7ba7d07ce9',
    'minivae.layers.Tanh.forward': 'f510ff9eabb18d70',
    'minivae.layers.Tanh.backward': '68fa4a824f6326d3',
    'minivae.layers.Sigmoid.forward': 'c75a55e20a638e8a',
    'minivae.layers.Sigmoid.backward': '6a74a64311f9c263',
    'minivae.layers.ReLU.forward': '9f154759c93bb8aa',
    'minivae.layers.ReLU.backward': '604ff8e07333d081',
    'minivae.layers.Softplus.forward': 'a268688dde262fab',
    'minivae.layers.Softplus.backward': 'c16f12955255638b',
    'minivae.layers.Identity.forward': '2dafc97604351456',
    'minivae.layers.Identity.backward': 'e15f25f623249974',
    'minivae.layers.Sequential.forward': '9361fd7c5b4eb8b8',
    'minivae.layers.Sequential.backward': 'e69533981f1957fc',
    'minivae.estimator.reparameterize': 'fd81a2ef27fb948f',
    'minivae.estimator.reparameterize_backward': 'd0300d68f906f847',
    'minivae.estimator.kl_standard_normal': 'a22441e7fc453b60',
    'minivae.estimator.kl_standard_normal_grad': '7774893ad1d55c29',
    'minivae.estimator.bernoulli_log_likelihood': 'f56bce83559c58bd',
    'minivae.estimator.bernoulli_log_likelihood_grad': '03c02871b0c123ca',
    'minivae.estimator.gaussian_log_likelihood': '0a6b768d49d9b4ad',
    'minivae.estimator.gaussian_log_likelihood_grad': '790ef8b45a9d2dbc',
    'minivae.estimator.log_standard_normal': '5ac984547411689a',
    'minivae.estimator.log_standard_normal_grad': '656e9cc38b8b0c6a',
    'minivae.estimator.log_diag_gaussian': '47d7fc151f47a086',
    'minivae.estimator.log_diag_gaussian_grad': 'd35c42a38483970c',
    'minivae.estimator.estimator_a': '6d4cfeabdea4478b',
    'minivae.estimator.estimator_a_backward': '002e663f9fe6aee1',
    'minivae.estimator.estimator_b': 'a647a8e50865c0d7',
    'minivae.estimator.estimator_b_backward': '7d72fc99f8b1bb7e',
    'minivae.estimator.log_parameter_prior_grad': 'b2ba682a130ca371',
    'minivae.model.GaussianEncoder.forward': '65e8fd0f35d56419',
    'minivae.model.GaussianEncoder.backward': '7185743ddaeca905',
    'minivae.model.BernoulliDecoder.forward': '19d2b8d62af75ca8',
    'minivae.model.BernoulliDecoder.backward': 'd5521ffaea166769',
    'minivae.model.BernoulliDecoder.log_likelihood': '0d5fdcacc6bb6a72',
    'minivae.model.BernoulliDecoder.log_likelihood_grad': '57eaef72fe74fcf7',
    'minivae.model.GaussianDecoder.forward': 'd3a9a7a09ad8d545',
    'minivae.model.GaussianDecoder.backward': '652478e3fd8938fe',
    'minivae.model.GaussianDecoder.log_likelihood': '74984f70fa313697',
    'minivae.model.GaussianDecoder.log_likelihood_grad': '1d333dd23d8aa477',
    'minivae.model.VAE._forward': '14618c2eaa5a4924',
    'minivae.model.VAE.loss_and_grads': '804d75b2b0d9ab9c',
    'minivae.model.VAE.sample_eps': '48a51d1693bfdc40',
    'minivae.optim.decayed_gradient': '09a2864940fb1bed',
    'minivae.optim.sgd_update': '9785e4c3c755e7fb',
    'minivae.optim.adagrad_update': '968de8290b351ee5',
    'minivae.optim.adam_update': '8afc397d64e0c290',
    'minivae.optim.Optimizer.step': 'd3bf3a73f631d673',
    'minivae.optim.Optimizer._slot': 'e110c305724e16cc',
    'minivae.optim.SGD._update': '1b9095b7fd368a93',
    'minivae.optim.Adagrad._update': '60d0a556fbec0614',
    'minivae.optim.Adam._update': '0decae417d445509',
    'minivae.steps.AEVB.__call__': '542f6339e3589aa4',
}

#: The readable evaluation functions whose results :mod:`minivae.fast.evaluate` reproduces
#: (beyond :data:`REPLACED`, whose forward parts it also uses).
EVAL_REPLACED = (
    "minivae.model.VAE.elbo", "minivae.model.VAE.log_importance_weights", "minivae.model.VAE.check_x",
    "minivae.model.VAE.check_eps", "minivae.train.dataset_elbo", "minivae.evaluate.log_likelihood",
    "minivae.evaluate.logmeanexp",
)

#: Fingerprints of :data:`EVAL_REPLACED` as verified against the fast evaluation.
EVAL_VERIFIED = {
    'minivae.model.VAE.elbo': '0408d9af0c294251',
    'minivae.model.VAE.log_importance_weights': 'e214827a5401778b',
    'minivae.model.VAE.check_x': '62623da7e93d1d08',
    'minivae.model.VAE.check_eps': '2cf6fa9bcb3d921f',
    'minivae.train.dataset_elbo': '4bda1ab3e4aa8051',
    'minivae.evaluate.log_likelihood': '1fc063103e3cc970',
    'minivae.evaluate.logmeanexp': '176ad2a3f5684590',
}

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


def fingerprint(func):
    """sha256 (16 hex digits) of a function's syntax tree without its docstring; None if it has no source."""
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
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:16]


def current_fingerprints(names=REPLACED):
    """{qualified name: fingerprint} of ``names`` (:data:`REPLACED` by default) as the code stands now."""
    return {name: fingerprint(_resolve(name)) for name in names}


def _edited(names, verified):
    """The first of ``names`` whose code is not the verified one, as a reason; or None."""
    for name in names:
        try:
            now = fingerprint(_resolve(name))
        except (ImportError, AttributeError):
            return f"{name} no longer exists"
        if now is None or now != verified.get(name):
            return (f"{name} is not the code the fast path was verified against (it was edited or replaced), "
                    "so the readable code runs as it stands")
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
    if optimizer is not None:
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
    reason = _edited(REPLACED, VERIFIED)
    if reason is not None:
        return reason.replace("so the readable", "so training runs the readable")
    return None


def why_not_evaluate(model):
    """The reason the fast evaluation cannot run for this model, or None (:func:`why_not`, plus
    the readable evaluation functions of :data:`EVAL_REPLACED` unchanged)."""
    return why_not(model) or _edited(EVAL_REPLACED, EVAL_VERIFIED)


if __name__ == "__main__":  # pragma: no cover - a developer's tool
    for table, names in (("VERIFIED", REPLACED), ("EVAL_VERIFIED", EVAL_REPLACED)):
        print(f"{table} = {{")
        for key, value in current_fingerprints(names).items():
            print(f"    {key!r}: {value!r},")
        print("}")
