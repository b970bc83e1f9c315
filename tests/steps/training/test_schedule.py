"""steps.training.schedule: the cosine learning rate and the length of an epoch."""

from __future__ import annotations

import pytest

from steps.training.schedule import FINAL_FRACTION, cosine, steps_per_epoch


def test_an_epoch_is_one_pass_over_a_large_dataset():
    assert steps_per_epoch(4066, 32, minimum=100) == 128


def test_an_epoch_of_a_small_dataset_is_never_shorter_than_the_minimum():
    assert steps_per_epoch(1150, 32, minimum=100) == 100
    assert steps_per_epoch(12, 4, minimum=100) == 100
    assert steps_per_epoch(12, 4, minimum=1) == 3


def test_cosine_starts_at_the_initial_rate_and_ends_at_its_final_fraction():
    assert cosine(0, 1000, 0.003) == pytest.approx(0.003)
    assert cosine(999, 1000, 0.003) == pytest.approx(0.003 * FINAL_FRACTION)
    assert cosine(5000, 1000, 0.003) == pytest.approx(0.003 * FINAL_FRACTION)  # held after the planned end


def test_cosine_falls_monotonically_through_the_midpoint():
    rates = [cosine(s, 100, 1.0) for s in range(100)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[0] > rates[50] > rates[99]
    assert cosine(50, 101, 1.0) == pytest.approx((1 + FINAL_FRACTION) / 2)
