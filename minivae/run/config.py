"""Run configuration: one dataclass with the paper's defaults, and the paper's two presets.

Every run saves its configuration beside its results (``config.json``);
unknown keys are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .algorithms import ALGORITHMS
from ..data import DATASETS
from ..estimator import ESTIMATORS
from ..layers import ACTIVATIONS
from ..model import DECODERS
from ..optim import OPTIMIZERS
from ..utils import check_scalar

__all__ = ["Config", "PRESETS", "preset", "CHOICES"]

#: The allowed values of the configuration's string fields, each from the one list its module keeps.
CHOICES = dict(dataset=DATASETS, binarize=("none", "dynamic"), decoder=tuple(DECODERS),
               activation=tuple(ACTIVATIONS), init=("paper", "glorot"), dtype=("float32", "float64"),
               optimizer=tuple(OPTIMIZERS), estimator=ESTIMATORS,
               algorithm=tuple(ALGORITHMS), record=("elbo", "marginal"))


@dataclass
class Config:
    """Everything that defines a training run (the paper's Section 5 defaults).

    Data
        dataset: "mnist" (grey levels from the IDX files), "mnist-binarized"
        (Larochelle's fixed binarisation), "frey", or "digits-synthetic"
        (generated offline stand-in, never MNIST). binarize: "none" (grey levels
        used as Bernoulli means, as the paper's authors did) or "dynamic" (a
        fresh Bernoulli draw of every pixel each time it is used).
    Model
        decoder "bernoulli" | "gaussian"; sigmoid_mean (Gaussian only); H hidden
        units; J latent size; activation; init "paper" = N(0, 0.01^2) | "glorot";
        dtype "float32" | "float64".
    Training (Algorithm 1, or a baseline)
        algorithm: "aevb" (Algorithm 1), "wake-sleep" or "mcem" (Monte-Carlo EM),
        from the one list in :mod:`minivae.run.algorithms`; train_size: use only the
        first train_size training points (Figure 3 trains on 1000 and 50000;
        None = all). optimizer "adagrad" | "sgd" | "adam"; lr; M minibatch; L samples per
        datapoint; estimator "A" | "B"; weight_decay: the N(0, I) prior on the
        parameters (MAP); a budget of ``epochs`` or ``samples`` (training
        samples evaluated, as on the paper's x axis).
    Evaluation
        eval_points: how many log-spaced points on the samples axis get a
        train and test bound; eval_train_size: how many training points (a
        fixed random subset) the train bound averages over. record: what the
        history records at those points, "elbo" (estimator B's bound, Figure 2)
        or "marginal" (the Appendix D estimate of log p(x), Figure 3; costly,
        so it is taken on the first eval_train_size points of the fixed train
        subset and of the test set).
    """

    dataset: str = "mnist"
    train_size: int | None = None
    binarize: str = "none"
    data_dir: str | None = None
    decoder: str = "bernoulli"
    sigmoid_mean: bool = True
    H: int = 500
    J: int = 20
    activation: str = "tanh"
    init: str = "paper"
    dtype: str = "float32"
    algorithm: str = "aevb"
    optimizer: str = "adagrad"
    lr: float = 0.02
    M: int = 100
    L: int = 1
    estimator: str = "B"
    weight_decay: bool = True
    epochs: float | None = None
    samples: int | None = None
    seed: int = 0
    eval_points: int = 20
    eval_train_size: int = 10000
    record: str = "elbo"
    checkpoint_every: float = 1.0  # epochs (0.25: four checkpoints an epoch)

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Refuse values that cannot work, each with one sentence."""
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(map(str, allowed))}; got {getattr(self, key)!r}.")
        for key in ("H", "J", "M", "L", "eval_points", "eval_train_size", "train_size"):
            check_scalar(getattr(self, key), key, int, min_val=1, allow_none=key == "train_size")   # None: all
        check_scalar(self.seed, "seed", int, min_val=0)
        for key in ("lr", "checkpoint_every", "epochs", "samples"):
            check_scalar(getattr(self, key), key, float, min_val=0, include_boundaries="neither",
                         allow_none=key in ("epochs", "samples"))
        if self.epochs is not None and self.samples is not None:
            raise ValueError("give a budget of epochs or of samples, not both.")
        if self.decoder == "bernoulli" and self.dataset == "frey":
            raise ValueError("Frey Face is grey-level data: use the Gaussian decoder (--decoder gaussian or --preset frey).")
        return self

    def to_dict(self):
        """The settings as plain Python values (a NumPy number given for one is written as a number)."""
        return {k: getattr(v, "item", lambda: v)() for k, v in dataclasses.asdict(self).items()}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        """Build from a dict; unknown keys are an error, not ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}; known keys: {', '.join(sorted(names))}.")
        return cls(**d)

    def replace(self, **changes):
        return Config.from_dict({**self.to_dict(), **changes})


#: The paper's two set-ups (Section 5, Appendix C), plus the offline stand-in.
PRESETS = {
    "mnist": dict(dataset="mnist", decoder="bernoulli", H=500, J=20, optimizer="adagrad", lr=0.02, M=100, L=1),
    "frey": dict(dataset="frey", decoder="gaussian", sigmoid_mean=True, H=200, J=2, optimizer="adagrad",
                 lr=0.01, M=100, L=1, eval_train_size=1700),
    "digits": dict(dataset="digits-synthetic", decoder="bernoulli", H=500, J=2, optimizer="adagrad",
                   lr=0.02, M=100, L=1),
}


def preset(name, **changes):
    """A Config for a named preset, with optional changes."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}.")
    return Config.from_dict({**PRESETS[name], **changes})
