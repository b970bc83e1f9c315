"""Train/val/test splits: writer-independent by default, deterministic for a seed."""

from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

SPLIT_METHODS = ("writer", "random")


def check_ratios(train_ratio: float, val_ratio: float) -> None:
    if not (0 < train_ratio < 1 and 0 <= val_ratio < 1 and train_ratio + val_ratio < 1):
        raise ValueError(
            f"need 0 < train_ratio, 0 <= val_ratio and train_ratio + val_ratio < 1 "
            f"(got {train_ratio} and {val_ratio}); the rest is the test split"
        )


def assign(units: Sequence[str], train_ratio: float, val_ratio: float, seed: int) -> dict[str, str]:
    """Assign each sample's unit (writer id, or sample id for a random split) to train/val/test.

    Units are shuffled with `seed` and filled into train, then val, then test, weighting each by
    its number of samples, so the ratios hold in samples rather than in writers. Each split gets at
    least one unit when there are three or more.
    """
    check_ratios(train_ratio, val_ratio)
    sizes = Counter(units)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    total = sum(sizes.values())
    targets = (train_ratio * total, (train_ratio + val_ratio) * total)
    result, seen = {}, 0
    for unit in order:
        midpoint = seen + sizes[unit] / 2  # place a unit by where its centre falls
        result[unit] = "train" if midpoint < targets[0] else "val" if midpoint < targets[1] else "test"
        seen += sizes[unit]
    # With few large units the midpoint rule can leave a split empty: borrow a boundary unit of the
    # split with the most units (it has two or more, so it never becomes empty itself).
    if len(order) >= 3:
        names = ("train", "val", "test") if val_ratio > 0 else ("train", "test")
        for name in names:
            if name not in result.values():
                counts = Counter(result.values())
                donor = max(counts, key=counts.get)
                members = [u for u in order if result[u] == donor]
                after = names.index(name) > names.index(donor)
                result[members[-1] if after else members[0]] = name
    return result
