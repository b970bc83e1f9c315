"""steps.inference.calibration: the isotonic map, the reliability table and the ECE on constructed examples."""

from __future__ import annotations

import numpy as np
import pytest

from steps.inference.calibration import (
    Calibration,
    CalibrationError,
    expected_calibration_error,
    isotonic,
    reliability,
)


def test_isotonic_map_is_monotone_and_in_the_unit_interval():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 500)
    correct = rng.uniform(0, 1, 500) < scores**2  # true P(correct | s) = s^2, plus noise
    cal = isotonic(scores, correct)
    grid = np.linspace(-0.5, 1.5, 1001)
    out = cal(grid)
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
    assert cal.samples == 500
    # It recovers the curve roughly: s^2 at 0.3 is 0.09, at 0.9 it is 0.81.
    assert cal([0.3])[0] == pytest.approx(0.09, abs=0.1) and cal([0.9])[0] == pytest.approx(0.81, abs=0.1)


def test_isotonic_pools_violators_into_their_mean():
    # Scores in order 0.1..0.5 with outcomes 1, 0, 0, 1, 1: the first three pool to accuracy 1/3.
    cal = isotonic([0.1, 0.2, 0.3, 0.4, 0.5], [1, 0, 0, 1, 1])
    assert cal.scores == pytest.approx((0.2, 0.45)) and cal.probabilities == pytest.approx((1 / 3, 1.0))
    assert cal([0.0, 0.2, 0.45, 0.9]).tolist() == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])


def test_a_model_that_is_never_right_gets_confidence_zero_everywhere():
    cal = isotonic([0.2, 0.5, 0.9, 0.9], [0, 0, 0, 0])
    assert cal([0.0, 0.5, 1.0]).tolist() == [0.0, 0.0, 0.0]


def test_no_validation_words_is_the_identity_and_roundtrips(tmp_path):
    assert isotonic([], []) == Calibration.identity()
    cal = isotonic([0.1, 0.6, 0.7], [0, 1, 1])
    cal.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == cal


def test_a_broken_calibration_file_says_so(tmp_path):
    (tmp_path / "c.json").write_text('{"scores": [0.5, 0.1], "probabilities": [0, 1], "samples": 2}')
    with pytest.raises(CalibrationError, match="increasing"):
        Calibration.load(tmp_path / "c.json")


def test_ece_on_a_hand_computed_example():
    # Bin [0.2, 0.3): confidences 0.25, 0.25, outcomes 1, 0 -> |0.5 - 0.25| = 0.25, weight 2/5.
    # Bin [0.9, 1.0]: confidences 0.9, 0.95, 1.0, outcomes 1, 1, 1 -> |1 - 0.95| = 0.05, weight 3/5.
    conf, correct = [0.25, 0.25, 0.9, 0.95, 1.0], [1, 0, 1, 1, 1]
    table = reliability(conf, correct, 10)
    assert [(b["low"], b["count"]) for b in table] == [(0.2, 2), (0.9, 3)]
    assert table[1]["confidence"] == pytest.approx(0.95) and table[0]["accuracy"] == 0.5
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(0.4 * 0.25 + 0.6 * 0.05)


def test_a_calibrated_map_lowers_the_ece_of_an_overconfident_score():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.5, 1, 4000)
    correct = rng.uniform(0, 1, 4000) < (raw - 0.5) * 2  # raw says 0.75 where the truth is 0.5
    fit, held_out = slice(0, 2000), slice(2000, None)
    cal = isotonic(raw[fit], correct[fit])
    before = expected_calibration_error(raw[held_out], correct[held_out], 10)
    after = expected_calibration_error(cal(raw[held_out]), correct[held_out], 10)
    assert before > 0.2 and after < 0.05
