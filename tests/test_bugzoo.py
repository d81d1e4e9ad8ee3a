"""The bug zoo and the checks of meaning, tested both ways.

Each check of minivae.teaching.checks passes on the stock code; each bug of minivae.teaching.bugzoo, injected,
fails the check its entry names; the gradient check (relative error <= TOLERANCE = 1e-7)
passes or fails exactly as the entry says; leaving ``inject`` restores the library.
"""

import numpy as np
import pytest

from minivae import estimator as est
from minivae import optim, train
from minivae.model import VAE
from minivae.teaching import bugzoo, checks

#: The mistakes issue 14 lists, by their names in the zoo.
LISTED = ["std_as_variance", "eps_redrawn", "clipped_bernoulli", "eps_zero_elbo", "kl_wrong_direction",
          "adam_epochs", "sum_not_mean"]


def test_the_zoo_has_every_listed_mistake_and_each_names_a_library_check():
    assert sorted(bugzoo.BUGS) == sorted(LISTED)
    for bug in bugzoo.BUGS.values():
        assert bug.caught_by in checks.CHECKS
        assert bug.why and bug.mistake and bug.title
    # Only the redrawn eps is visible to the gradient check; every other bug agrees with itself.
    assert [n for n, b in bugzoo.BUGS.items() if not b.gradient_check_passes] == ["eps_redrawn"]


@pytest.mark.parametrize("name", list(checks.CHECKS))
def test_every_check_passes_on_the_stock_code(name):
    result = checks.run_check(name)
    assert result.passed, str(result)
    assert str(result).startswith(f"PASS  {name}:")


@pytest.mark.parametrize("name", LISTED)
def test_each_bug_fails_its_check_and_the_gradient_check_does_as_its_entry_says(name):
    demo = bugzoo.demonstrate(name)
    assert demo.stock.passed, str(demo.stock)
    assert not demo.injected.passed, str(demo.injected)
    assert demo.gradient.passed == bugzoo.BUGS[name].gradient_check_passes, str(demo.gradient)
    assert demo.as_claimed and "as the entry says" in str(demo)


def test_the_std_as_variance_bug_is_also_seen_by_the_monte_carlo_kl():
    with bugzoo.inject("std_as_variance"):
        assert not checks.run_check("kl_monte_carlo").passed
    assert checks.run_check("kl_monte_carlo").passed


def test_inject_restores_the_library():
    originals = [est.reparameterize, est.reparameterize_backward, est.kl_standard_normal, est.bernoulli_log_likelihood,
                 train.dataset_elbo, optim.Adam.__dict__["_update"], VAE.__dict__["loss_and_grads"]]
    for name in LISTED:
        with bugzoo.inject(name) as bug:
            assert bug.name == name
    assert originals == [est.reparameterize, est.reparameterize_backward, est.kl_standard_normal,
                         est.bernoulli_log_likelihood, train.dataset_elbo, optim.Adam.__dict__["_update"],
                         VAE.__dict__["loss_and_grads"]]
    with pytest.raises(RuntimeError):
        with bugzoo.inject("kl_wrong_direction"):
            raise RuntimeError("a failure inside")
    assert est.kl_standard_normal is originals[2]


def test_the_injected_bug_reaches_training_code():
    """Inside inject, VAE.loss_and_grads itself runs the mistake: the sum's loss is M times the mean's."""
    model = VAE(D=6, H=5, J=3, init="glorot", random_state=0)
    x = np.random.default_rng(0).random((4, 6))
    eps = model.sample_eps(4, rng=1)
    loss, _ = model.loss_and_grads(x, eps)
    with bugzoo.inject("sum_not_mean"):
        loss_sum, _ = model.loss_and_grads(x, eps)
    assert loss_sum == pytest.approx(4 * loss, rel=1e-12)


def test_eps_zero_is_not_a_lower_bound():
    """The eps = 0 "ELBO" of the linear-Gaussian model lies above log p(x) itself."""
    stock = checks.run_check("elbo_unbiased").numbers
    with bugzoo.inject("eps_zero_elbo"):
        bad = checks.run_check("elbo_unbiased").numbers
    assert bad["reported"] > bad["log_px"] > bad["exact_elbo"]     # a "bound" above log p(x): not a bound
    assert bad["se"] <= 1e-12                                      # and deterministic
    assert stock["reported"] < stock["log_px"]


def test_unknown_names_are_refused_with_the_list():
    with pytest.raises(KeyError, match="its bugs are: std_as_variance"):
        with bugzoo.inject("nan_gradient"):
            pass
    with pytest.raises(KeyError, match="the checks are: sampler_variance"):
        checks.run_check("speed")
