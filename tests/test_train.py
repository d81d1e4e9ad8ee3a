"""The training loop: it learns on real MNIST, runs the step it is given (the readable
code, edited or not), resumes exactly from every checkpoint it writes, stops on a
signal with a checkpoint, and stops cleanly on NaN or an absurd bound."""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from minivae import layers, optim
from minivae.checkpoint import CheckpointMismatch, load_checkpoint
from minivae.gradcheck import TOLERANCE, check_model
from minivae.model import VAE
from minivae.optim import SGD, Adagrad, Adam
from minivae.steps import AEVB
from minivae.train import TrainingDiverged, TrainingInterrupted, dataset_elbo, eval_schedule, fit, trivial_bound


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


def _same_state(a_model, a_ck, b_model, b_ck):
    for name in a_model.params:
        np.testing.assert_array_equal(a_model.params[name], b_model.params[name], err_msg=name)
    assert set(a_ck["step_state"]) == set(b_ck["step_state"])
    for key in a_ck["step_state"]:
        np.testing.assert_array_equal(a_ck["step_state"][key], b_ck["step_state"][key], err_msg=key)
    ha, hb = dict(a_ck["history"]), dict(b_ck["history"])
    ha.pop("seconds"), hb.pop("seconds")                   # wall-clock time, the one thing that may differ
    assert ha == hb


@pytest.mark.parametrize("make_opt", [lambda: Adagrad(0.05), lambda: Adam(0.01), lambda: SGD(0.01)],
                         ids=["adagrad", "adam", "sgd"])
@pytest.mark.parametrize("binarize", [False, True], ids=["grey", "binarized"])
@pytest.mark.parametrize("estimator", ["A", "B"])
def test_resume_from_every_checkpoint_equals_the_uninterrupted_run(tmp_path, make_opt, binarize, estimator):
    """Checkpoints mid-epoch and at epoch boundaries (every 0.25 epoch of 12 steps: steps 3, 6, 9, 12, ...);
    resuming from each one ends bit for bit where the uninterrupted run ends."""
    x, xt = _toy()
    kw = dict(M=10, seed=3, binarize=binarize, eval_points=6, progress=False, estimator=estimator, L=2,
              checkpoint_every=0.25)
    whole = VAE(12, 6, 2, random_state=1)
    saved = []

    def keep(path):
        saved.append(tmp_path / f"ck{len(saved):02d}.npz")
        shutil.copy(path, saved[-1])

    ck = tmp_path / "whole.npz"
    fit(whole, make_opt(), x, xt, samples=370, checkpoint=ck, on_checkpoint=keep, **kw)   # 37 steps: 3 epochs + 1
    final = load_checkpoint(ck)
    assert len(saved) == 13 and int(final["loop"]["step"]) == 37
    assert any(int(load_checkpoint(p)["loop"]["batch"]) == 12 for p in saved)          # an epoch boundary
    for path in saved:
        resumed = VAE(12, 6, 2, random_state=99)                # another init: everything must come from the file
        fit(resumed, make_opt(), x, xt, samples=370, checkpoint=path, resume=True, **kw)
        _same_state(whole, final, resumed, load_checkpoint(path))


def test_an_evaluators_standard_error_is_recorded_and_a_run_saved_without_them_resumes(tmp_path):
    """An evaluator may return (mean, standard error) (Appendix D's does); the history keeps both.
    A checkpoint written before the standard errors were recorded resumes with None for its points."""
    x, xt = _toy()
    ck = tmp_path / "ck.npz"
    kw = dict(M=10, eval_points=2, progress=False, checkpoint=ck)
    h = fit(VAE(12, 6, 2, random_state=1), Adagrad(0.05), x, xt, samples=100, **kw,
            evaluate=lambda model, data, rng, estimator: (-1.0, 0.25))
    assert h["train_elbo"] == [-1.0, -1.0] and h["train_se"] == h["test_se"] == [0.25, 0.25]
    assert fit(VAE(12, 6, 2), Adagrad(0.05), x, xt, samples=100, **dict(kw, checkpoint=None))["test_se"] == [None, None]

    with np.load(ck) as f:
        arrays = dict(f)
    history = json.loads(str(arrays["history"]))
    del history["train_se"], history["test_se"]                  # as a run of an earlier version saved it
    arrays["history"] = np.array(json.dumps(history))
    np.savez(ck, **arrays)
    h = fit(VAE(12, 6, 2), Adagrad(0.05), x, xt, samples=200, resume=True, **kw,
            evaluate=lambda model, data, rng, estimator: (-2.0, 0.5))
    assert h["train_elbo"] == [-1.0, -1.0, -2.0] and h["train_se"] == [None, None, 0.5]


def test_resume_refuses_other_settings_and_a_missing_checkpoint(tmp_path):
    x, xt = _toy()
    ck = tmp_path / "ck.npz"
    fit(VAE(12, 6, 2, random_state=1), Adagrad(0.05), x, xt, M=10, samples=100, checkpoint=ck, progress=False)
    with pytest.raises(CheckpointMismatch, match=r"lr: 0.05 there, 0.1 now"):
        fit(VAE(12, 6, 2), Adagrad(0.1), x, xt, M=10, samples=200, checkpoint=ck, resume=True, progress=False)
    with pytest.raises(CheckpointMismatch, match=r"loop.M: 10 there, 20 now"):
        fit(VAE(12, 6, 2), Adagrad(0.05), x, xt, M=20, samples=200, checkpoint=ck, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        fit(VAE(12, 6, 2), Adagrad(0.05), x, xt, M=10, samples=200, checkpoint=tmp_path / "none.npz",
            resume=True, progress=False)


def test_evaluation_frequency_does_not_change_training():
    x, xt = _toy()
    a, b = VAE(12, 6, 2, random_state=1), VAE(12, 6, 2, random_state=1)
    fit(a, Adagrad(0.05), x, xt, M=10, samples=300, eval_points=2, progress=False)
    fit(b, Adagrad(0.05), x, xt, M=10, samples=300, eval_points=30, progress=False)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_a_nan_stops_training_with_the_step_and_quantity_and_keeps_the_checkpoint(tmp_path, recwarn):
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
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]   # one message, no warning spam
    saved = load_checkpoint(ck)                    # the last good checkpoint: end of epoch 2 (step 24)
    assert int(saved["loop"]["step"]) == 24
    assert all(np.isfinite(v).all() for v in saved["params"].values())


def test_divergence_names_no_checkpoint_that_does_not_exist(tmp_path):
    x, xt = _toy()
    model = VAE(12, 6, 2, random_state=1)
    model.params["dec.logits.W"][...] = np.nan
    with pytest.raises(TrainingDiverged, match="no checkpoint was written before it") as err:
        fit(model, SGD(0.1), x, xt, M=10, samples=100, checkpoint=tmp_path / "ck.npz", progress=False)
    assert "last good checkpoint" not in str(err.value)


def test_a_bound_far_below_the_trivial_model_is_divergence():
    """A huge learning rate drives the bound to ~-1e5 nats or lower without a NaN: that is divergence too."""
    x, xt = _toy(n=200)
    floor = trivial_bound(x, "bernoulli") - 100 * 12
    model = VAE(12, 6, 2, init="glorot", random_state=1)
    with pytest.raises(TrainingDiverged, match="below the floor"):
        fit(model, SGD(1e4), x, xt, M=10, samples=2000, progress=False)
    assert trivial_bound(x, "bernoulli") < 0 and floor < -1000


def test_trivial_bound_is_the_pixelwise_model():
    x = np.array([[1.0, 0.0], [0.0, 0.0]])             # pixel means 0.5 and 0 (clipped to 1e-3)
    expected = np.log(0.5) + np.log1p(-1e-3)
    assert abs(trivial_bound(x, "bernoulli") - expected) < 1e-12
    g = np.array([[0.0, 1.0], [2.0, 1.0]])              # means (1, 1), variances (1, 1e-6 floor)
    value = trivial_bound(g, "gaussian")
    assert np.isfinite(value) and value > trivial_bound(g + np.array([[0.0, 0.5], [0.0, -0.5]]), "gaussian")


@pytest.mark.parametrize("before", [signal.default_int_handler, signal.SIG_IGN], ids=["terminal", "background"])
def test_sigint_finishes_the_step_writes_a_checkpoint_and_says_so(tmp_path, before):
    """Also when the process started with SIGINT ignored (a background job): ``kill -INT`` still stops
    it cleanly, and the handling it started with is put back."""
    x, xt = _toy()
    ck = tmp_path / "ck.npz"
    model = VAE(12, 6, 2, random_state=1)

    class Interrupting(AEVB):
        def __call__(self, x, idx, rng):
            result = super().__call__(x, idx, rng)
            if self.optimizer.t == 5:
                # Ctrl-C during step 5, sent to this thread (os.kill would send it to the process, and a
                # busy machine may hand it to another thread, so that Python sees it a step or more later).
                signal.raise_signal(signal.SIGINT)
            return result

    previous = signal.signal(signal.SIGINT, before)
    try:
        with pytest.raises(TrainingInterrupted, match="SIGINT received: stopped after step 5") as err:
            fit(model, Interrupting(model, Adagrad(0.05)), x, xt, M=10, samples=1000, checkpoint=ck,
                progress=False, catch_signals=True)
        assert signal.getsignal(signal.SIGINT) is before                       # put back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert err.value.step == 5 and err.value.signum == signal.SIGINT
    assert int(load_checkpoint(ck)["loop"]["step"]) == 5


# --- the seam: the loop trains whatever readable code the step runs --------------------------

def _trajectory(x, xt, make_opt=lambda: Adagrad(0.05)):
    model = VAE(12, 6, 2, init="glorot", random_state=1)
    fit(model, make_opt(), x, xt, M=10, samples=300, progress=False)
    return {k: p.copy() for k, p in model.params.items()}


def test_a_wrong_tanh_backward_is_what_trains_and_what_the_gradient_check_reports(monkeypatch):
    x, xt = _toy()
    stock = _trajectory(x, xt)
    assert all(np.array_equal(stock[k], v) for k, v in _trajectory(x, xt).items())   # deterministic
    monkeypatch.setattr(layers.Tanh, "backward", lambda self, dout: dout * (1.0 - self._h))   # a planted bug
    planted = _trajectory(x, xt)
    assert any(not np.array_equal(stock[k], planted[k]) for k in stock)
    model = VAE(6, 5, 3, init="glorot", random_state=0)
    rng = np.random.default_rng(1)
    errors = check_model(model, rng.random((4, 6)), model.sample_eps(4, 2, rng))
    assert max(errors.values()) > 1e3 * TOLERANCE


def test_a_wrong_adagrad_update_is_what_trains(monkeypatch):
    x, xt = _toy()
    stock = _trajectory(x, xt)

    def wrong(p, g, G, lr, eps):
        G += g * g
        p -= lr * g / (G + eps)                          # forgot the square root
    monkeypatch.setattr(optim, "adagrad_update", wrong)
    planted = _trajectory(x, xt)
    assert any(not np.array_equal(stock[k], planted[k]) for k in stock)


def test_bad_training_arguments():
    x, xt = _toy()
    model = VAE(12, 6, 2, random_state=1)
    with pytest.raises(ValueError, match="give a training budget"):
        fit(model, SGD(0.1), x, xt, progress=False)
    for bad in (float("inf"), float("nan"), -1, 0):
        with pytest.raises(ValueError, match="budget epochs must be a finite number > 0"):
            fit(model, SGD(0.1), x, xt, epochs=bad, progress=False)
    with pytest.raises(ValueError, match="built for another model"):
        fit(model, AEVB(VAE(12, 6, 2), SGD(0.1)), x, xt, samples=10, progress=False)
    with pytest.raises(ValueError, match="larger than the training set"):
        fit(model, SGD(0.1), x, xt, M=1000, samples=10, progress=False)
    with pytest.raises(ValueError, match="pixels in \\[0, 1\\]"):
        fit(model, SGD(0.1), x * 255, xt, M=10, samples=10, progress=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit(model, SGD(0.1), np.where(x > 0.99, np.nan, x), xt, M=10, samples=10, progress=False)


def test_one_minibatch_far_below_the_floor_is_not_divergence_but_a_run_of_them_is():
    """The paper's MNIST preset dips to about -3.4e5 nats for one Adagrad step (its 4th) and recovers:
    fit must go on. A bound that stays below the floor for FLOOR_PATIENCE steps is divergence."""
    from minivae.steps import StepResult
    from minivae.train import FLOOR_PATIENCE
    x, xt = _toy()

    class Dipping(AEVB):
        def __init__(self, model, opt, bad_steps):
            super().__init__(model, opt)
            self.bad_steps = bad_steps

        def __call__(self, x, idx, rng):
            loss, elbo = super().__call__(x, idx, rng)
            if self.optimizer.t in self.bad_steps:
                elbo = np.full_like(elbo, -1e9)               # what the progress check sees
            return StepResult(loss, elbo)

    model = VAE(12, 6, 2, random_state=1)
    h = fit(model, Dipping(model, Adagrad(0.05), {4}), x, xt, M=10, samples=200, progress=False)
    assert h["samples"][-1] == 200
    model = VAE(12, 6, 2, random_state=1)
    with pytest.raises(TrainingDiverged, match=f"below the floor .* for {FLOOR_PATIENCE} steps in a row"):
        fit(model, Dipping(model, Adagrad(0.05), set(range(3, 3 + FLOOR_PATIENCE))), x, xt, M=10, samples=400,
            progress=False)


# --- the loop's seams: the evaluator comes from the step, the data is checked once -----------

def test_the_recorded_bound_is_computed_by_the_steps_evaluator():
    x, xt = _toy()
    seen = []

    class Counting(AEVB):
        def evaluator(self):
            def evaluate(model, data, rng, estimator="B"):
                seen.append(len(data))
                return dataset_elbo(model, data, rng, estimator=estimator)
            return evaluate

    model = VAE(12, 6, 2, random_state=1)
    h = fit(model, Counting(model, Adagrad(0.05)), x, xt, M=10, samples=200, eval_points=3, eval_train_size=50,
            progress=False)
    assert seen == [50, 40] * len(h["samples"])                 # the train subset, then the test set, each time
    assert AEVB(model, Adagrad(0.05)).evaluator() is dataset_elbo
    # fit's evaluate= still wins over the step's (the command line's record = "marginal")
    h2 = fit(VAE(12, 6, 2, random_state=1), Adagrad(0.05), x, xt, M=10, samples=200, eval_points=3, progress=False,
             evaluate=lambda model, data, rng, estimator: -1.0)
    assert h2["train_elbo"] == [-1.0] * len(h2["samples"])


def test_fit_checks_the_data_once_and_a_step_on_its_own_checks_every_minibatch(monkeypatch):
    from minivae import model as model_module
    from minivae.baselines.wakesleep import WakeSleep
    x, xt = _toy()
    calls = []
    real = model_module.check_matrix
    monkeypatch.setattr(model_module, "check_matrix",
                        lambda a, *args, **kw: calls.append(a.shape) or real(a, *args, **kw))
    for make in (lambda m: AEVB(m, Adagrad(0.05)), lambda m: WakeSleep(m, Adagrad(0.05), Adagrad(0.05))):
        model = VAE(12, 6, 2, random_state=1)
        step = make(model)
        calls.clear()
        fit(model, step, x, None, M=10, samples=300, eval_points=1, eval_train_size=20, progress=False)
        assert (10, 12) not in calls, type(step).__name__       # 30 steps, no minibatch scanned again
        assert not model.x_checked                             # only while fit runs
        bad = np.where(x[:10] > 0.9, np.nan, x[:10])
        with pytest.raises(ValueError, match="x contains .* NaN or infinite value"):
            step(bad, np.arange(10), np.random.default_rng(0))  # called on its own: the clear error
    with model.checked_data():
        assert model.x_checked
    assert not model.x_checked


def test_a_loss_and_grads_written_with_the_papers_arguments_is_what_fit_trains(monkeypatch):
    """A student's (or the bug zoo's) VAE.loss_and_grads(x, eps, estimator) needs no other argument:
    fit's single check of the data lives in VAE.check_x, not in the signature."""
    x, xt = _toy()
    stock = _trajectory(x, xt)
    readable = VAE.loss_and_grads

    def halved(self, x, eps, estimator="B"):
        loss, elbo = readable(self, x, eps, estimator)
        for g in self.grads.values():
            g *= 0.5
        return loss, elbo
    monkeypatch.setattr(VAE, "loss_and_grads", halved)
    planted = _trajectory(x, xt)
    assert any(not np.array_equal(stock[k], planted[k]) for k in stock)


def test_hooks_run_at_their_named_points(monkeypatch):
    """The loop calls every hook at start, after each step, and at close (also when the loop stops on an error)."""
    from minivae.train import Hook, LoopState, Schedule
    x, xt = _toy()
    plan = Schedule.of(120, 10, 300, None, 4, 1)
    assert (plan.total_steps, plan.batches_per_epoch, plan.save_every) == (30, 12, 12)
    assert plan.eval_at == frozenset(eval_schedule(30, 4))
    loop = LoopState.new(0)
    rows = [loop.next_batch(plan) for _ in range(13)]
    assert loop.epoch == 1 and loop.batch == 1                  # the 13th minibatch opened the second epoch
    assert sorted(np.concatenate(rows[:12]).tolist()) == list(range(120))

    class Recording(Hook):
        def __init__(self):
            self.events = []

        def start(self, loop):
            self.events.append(("start", loop.step))

        def after_step(self, loop, result):
            self.events.append(("step", loop.step))

        def close(self):
            self.events.append(("close",))

    from minivae import train as train_module
    hook = Recording()
    monkeypatch.setattr(train_module, "Progress", lambda plan, name: hook)     # where the progress bar stands
    fit(VAE(12, 6, 2, random_state=1), Adagrad(0.05), x, xt, M=10, samples=50, progress=True)
    assert hook.events == [("start", 0)] + [("step", k) for k in range(1, 6)] + [("close",)]
    hook.events.clear()
    with pytest.raises(TrainingDiverged):                                       # a NaN at the 3rd step
        fit(VAE(12, 6, 2, random_state=1), _NaNAfter(3), x, xt, M=10, samples=50, eval_points=1, progress=True)
    assert hook.events == [("start", 0), ("step", 1), ("step", 2), ("close",)]


class _NaNAfter(Adagrad):
    """Adagrad whose parameters become NaN at update ``k`` (the next loss is then NaN)."""

    def __init__(self, k):
        super().__init__(0.05)
        self.k = k

    def step(self, params, grads, weight_decay=0.0):
        super().step(params, grads, weight_decay)
        if self.t == self.k - 1:
            next(iter(params.values()))[...] = np.nan
