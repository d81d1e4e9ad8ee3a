"""utils.check_scalar, the one check of every scalar setting: what passes, and the one sentence otherwise."""

import numpy as np
import pytest

from minivae.utils import check_scalar


@pytest.mark.parametrize("value, kind, bounds, message", [
    (0, int, dict(min_val=1), "J must be a positive integer; got 0."),
    (True, int, dict(min_val=1), "J must be a positive integer; got True."),        # a bool is not a count
    (2.0, int, dict(min_val=1), "J must be a positive integer; got 2.0."),
    (-1, int, dict(min_val=0), "J must be a non-negative integer; got -1."),
    (3, int, dict(min_val=4), "J must be an integer >= 4; got 3."),
    (float("inf"), float, dict(min_val=0, include_boundaries="neither"), "J must be a finite number > 0; got inf."),
    (float("nan"), float, dict(min_val=0), "J must be a finite number >= 0; got nan."),
    ("0.1", float, dict(min_val=0), "J must be a finite number >= 0; got '0.1'."),
    (1.0, float, dict(min_val=0, max_val=1, include_boundaries="left"), "J must be a number in [0, 1); got 1.0."),
    (0, int, dict(min_val=1, max_val=9), "J must be an integer in [1, 9]; got 0."),
    (None, int, dict(min_val=1), "J must be a positive integer; got None."),
])
def test_a_wrong_scalar_gets_one_sentence(value, kind, bounds, message):
    with pytest.raises(ValueError) as err:
        check_scalar(value, "J", kind, **bounds)
    assert str(err.value) == message


def test_a_right_scalar_comes_back_unchanged():
    for value, kind, bounds in [(1, int, dict(min_val=1)), (np.int64(7), int, dict(min_val=1)),
                                (0, int, dict(min_val=0)), (3, float, dict(min_val=0, include_boundaries="neither")),
                                (np.float32(0.5), float, dict(min_val=0, max_val=1)),
                                (0.0, float, dict(min_val=0, max_val=1, include_boundaries="left")),
                                (None, int, dict(min_val=1, allow_none=True))]:
        assert check_scalar(value, "x", kind, **bounds) is value
