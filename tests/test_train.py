"""The AEVB loop: it learns on real MNIST, resumes exactly, and stops cleanly on NaN."""

import numpy as np
import pytest

from minivae.checkpoint import load_checkpoint
from minivae.model import VAE
from minivae.optim import SGD, Adagrad, Adam
from minivae.train import TrainingDiverged, dataset_elbo, eval_schedule, fit


def _toy(seed=0, n=120, D=12):
    rng = np.random.default_rng(seed)
    return rng.random((n, D)), rng.random((40, D))


@pytest.mark.realdata
@pytest.mark.slow
def test_smoke_training_on_real_mnist_raises_the_bound(data_dir):
    """300 Adagrad steps (30,000 samples, seed 0) of a 784-200-20 model on grey MNIST.

    The initial bound is about -543 nats (all pixels at probability 1/2); after
    300 steps it is about -200. We require a rise of at least 250 nats.
    """
    from minivae.data import load_mnist
    x_train, _ = load_mnist("train", data_dir=data_dir)
    x_test, _ = load_mnist("test", data_dir=data_dir)
    model = VAE(784, 200, 20, dtype="float32", random_state=0)
    before = dataset_elbo(model, x_test[:1000], np.random.default_rng(1))
    history = fit(model, Adagrad(0.02), x_train, x_test[:1000], M=100, samples=30000, seed=0,
                  eval_points=4, eval_train_size=1000, progress=False)
    after = history["test_elbo"][-1]
    assert before < -500
    assert after - before > 250, (before, after)
    assert history["samples"][-1] == 30000
    assert history["train_elbo"][-1] > history["train_elbo"][0] + 250


def test_eval_schedule_is_log_spaced_and_ends_at_the_budget():
    s = eval_schedule(6000, 20)
    assert s[0] == 1 and s[-1] == 6000 and s == sorted(set(s))
    ratios = np.diff(np.log(s[5:]))
    assert np.allclose(ratios, ratios.mean(), rtol=0.05)


@pytest.mark.parametrize("make_opt", [lambda: Adagrad(0.05), lambda: Adam(0.01), lambda: SGD(0.01)])
@pytest.mark.parametrize("binarize", [False, True])
def test_resume_equals_an_uninterrupted_run(tmp_path, make_opt, binarize):
    x, xt = _toy()
    kw = dict(M=10, seed=3, binarize=binarize, eval_points=5, progress=False, estimator="A", L=2)
    whole = VAE(12, 6, 2, random_state=1)
    h_whole = fit(whole, make_opt(), x, xt, samples=370, **kw)       # 37 steps: 3 epochs + 1 partial

    ck = tmp_path / "ck.npz"
    part = VAE(12, 6, 2, random_state=1)
    fit(part, make_opt(), x, xt, samples=150, checkpoint=ck, **kw)   # stops mid-epoch (15 steps)
    resumed = VAE(12, 6, 2, random_state=99)                          # different init: all must come from the file
    fit(resumed, make_opt(), x, xt, samples=370, checkpoint=ck, resume=True, **kw)
    for name in whole.params:
        np.testing.assert_array_equal(whole.params[name], resumed.params[name], err_msg=name)
    assert load_checkpoint(ck)["loop"]["step"] == 37
    assert len(h_whole["samples"]) == 5


def test_evaluation_frequency_does_not_change_training():
    x, xt = _toy()
    a, b = VAE(12, 6, 2, random_state=1), VAE(12, 6, 2, random_state=1)
    fit(a, Adagrad(0.05), x, xt, M=10, samples=300, eval_points=2, progress=False)
    fit(b, Adagrad(0.05), x, xt, M=10, samples=300, eval_points=30, progress=False)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_a_nan_stops_training_with_the_step_and_quantity_and_keeps_the_checkpoint(tmp_path):
    x, xt = _toy()
    model = VAE(12, 6, 2, random_state=1)
    ck = tmp_path / "ck.npz"

    class Poisoned(Adagrad):
        def step(self, params, grads, weight_decay=0.0):
            super().step(params, grads, weight_decay)
            if self.t == 25:                      # step 25 writes a NaN into one weight
                params["dec.logits.W"][0, 0] = np.nan

    with pytest.raises(TrainingDiverged, match=r"step 26 \(260 samples seen\).*non-finite parameters: dec.logits.W") as err:
        fit(model, Poisoned(0.05), x, xt, M=10, samples=1000, checkpoint=ck, progress=False)
    assert str(ck) in str(err.value)
    saved = load_checkpoint(ck)                    # the last good checkpoint: end of epoch 2 (step 24)
    assert int(saved["loop"]["step"]) == 24
    assert all(np.isfinite(v).all() for v in saved["params"].values())


def test_bad_training_arguments():
    x, xt = _toy()
    model = VAE(12, 6, 2, random_state=1)
    with pytest.raises(ValueError, match="give a training budget"):
        fit(model, SGD(0.1), x, xt, progress=False)
    with pytest.raises(ValueError, match="larger than the training set"):
        fit(model, SGD(0.1), x, xt, M=1000, samples=10, progress=False)
    with pytest.raises(ValueError, match="pixels in \\[0, 1\\]"):
        fit(model, SGD(0.1), x * 255, xt, M=10, samples=10, progress=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit(model, SGD(0.1), np.where(x > 0.99, np.nan, x), xt, M=10, samples=10, progress=False)
