"""A word's confidence: the probability that it is read exactly right, calibrated on the validation split.

The raw score of a reading is its weakest frame: the smallest, over the model's time steps, of the
posterior of the class the greedy path takes there (one uncertain character is enough to misread a word;
the product over all frames, the old score, mostly measures the word's length). Train fits a monotone map
score -> P(word correct) on the validation split by isotonic regression (pool adjacent violators) and ships
it inside the logged model as calibration.json, so serve, infer and evaluate all report the same
calibrated number. Numpy only: this module is part of the logged model's code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np


class CalibrationError(ValueError):
    """A calibration file or fit input that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A non-decreasing piecewise-linear map from raw score to probability: np.interp over the knots."""

    scores: tuple[float, ...]  # knots, strictly increasing
    probabilities: tuple[float, ...]  # non-decreasing, in [0, 1]
    samples: int  # validation words it was fitted on (0 = the identity, nothing to fit on)

    def __post_init__(self):
        s, p = np.asarray(self.scores), np.asarray(self.probabilities)
        if len(s) == 0 or len(s) != len(p) or np.any(np.diff(s) <= 0) or np.any(np.diff(p) < 0):
            raise CalibrationError("a calibration needs increasing scores and non-decreasing probabilities")
        if np.any((p < 0) | (p > 1)):
            raise CalibrationError("calibrated probabilities must lie in [0, 1]")

    @classmethod
    def identity(cls) -> "Calibration":
        """The raw score as it is: for a model with no validation words to fit on."""
        return cls((0.0, 1.0), (0.0, 1.0), 0)

    def __call__(self, raw: Sequence[float] | np.ndarray) -> np.ndarray:
        """Raw scores -> calibrated probabilities (flat beyond the outermost knots)."""
        return np.interp(np.asarray(raw, np.float64), self.scores, self.probabilities)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(tuple(data["scores"]), tuple(data["probabilities"]), int(data["samples"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CalibrationError(f"cannot read the calibration {path}: {e}") from None


def isotonic(scores: Sequence[float], correct: Sequence[bool]) -> Calibration:
    """Fit P(correct | score) as a non-decreasing step function (pool adjacent violators), interpolated.

    Each pooled block becomes one knot at its mean score holding its accuracy, so the map is monotone
    and its value at a block is exactly the fraction of that block's validation words read right.
    """
    x, y = np.asarray(scores, np.float64), np.asarray(correct, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise CalibrationError("scores and correct must be two sequences of the same length")
    if len(x) == 0:
        return Calibration.identity()
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    # Blocks as [sum_y, count, sum_x]; equal scores start in one block so knots stay strictly increasing.
    blocks: list[list[float]] = []
    for value in np.unique(x):
        same = x == value
        blocks.append([y[same].sum(), float(same.sum()), value * same.sum()])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    knots = tuple(float(sx / n) for _, n, sx in blocks)
    probabilities = tuple(float(sy / n) for sy, n, _ in blocks)
    if len(knots) == 1:  # one block: a constant; two knots keep np.interp's contract
        knots, probabilities = (knots[0], knots[0] + 1e-9), probabilities * 2
    return Calibration(knots, probabilities, len(x))


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int) -> list[dict]:
    """Equal-width bins over [0, 1]: {low, high, count, confidence (mean), accuracy} per non-empty bin."""
    c, y = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    index = np.minimum((c * bins).astype(int), bins - 1)  # confidence 1.0 falls in the last bin
    out = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(inside.sum()),
                    "confidence": float(c[inside].mean()),
                    "accuracy": float(y[inside].mean()),
                }
            )
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int) -> float:
    """ECE: the count-weighted mean |accuracy - mean confidence| over equal-width confidence bins."""
    table = reliability(confidence, correct, bins)
    total = sum(b["count"] for b in table)
    return sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / total if total else float("nan")
