"""steps.splits: writer-independent, deterministic, ratios held in samples, every split non-empty."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from steps.dataset import splits


def writer_units(n_writers: int = 200, seed: int = 7) -> list[str]:
    """One unit per sample: writers with 1..120 samples each (IAM writers vary that much)."""
    rng = random.Random(seed)
    units = [f"w{i:03d}" for i in range(n_writers) for _ in range(rng.randint(1, 120))]
    rng.shuffle(units)
    return units


def sample_fractions(units, assignment) -> dict[str, float]:
    counts = Counter(assignment[u] for u in units)
    return {name: counts[name] / len(units) for name in ("train", "val", "test")}


def test_every_unit_gets_exactly_one_known_split():
    units = writer_units()
    result = splits.assign(units, 0.75, 0.15, seed=42)
    assert set(result) == set(units)
    assert set(result.values()) == {"train", "val", "test"}


def test_writers_are_disjoint_across_splits_at_sample_level():
    units = writer_units()
    result = splits.assign(units, 0.75, 0.15, seed=42)
    samples = [(i, u, result[u]) for i, u in enumerate(units)]
    writers_of = {name: {u for _, u, s in samples if s == name} for name in ("train", "val", "test")}
    assert not writers_of["train"] & writers_of["val"]
    assert not writers_of["train"] & writers_of["test"]
    assert not writers_of["val"] & writers_of["test"]


def test_deterministic_for_a_seed_and_independent_of_input_order():
    units = writer_units()
    first = splits.assign(units, 0.75, 0.15, seed=42)
    assert splits.assign(units, 0.75, 0.15, seed=42) == first
    assert splits.assign(sorted(units), 0.75, 0.15, seed=42) == first


def test_different_seeds_give_different_splits():
    units = writer_units()
    assert splits.assign(units, 0.75, 0.15, seed=1) != splits.assign(units, 0.75, 0.15, seed=2)


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("train_ratio, val_ratio", [(0.75, 0.15), (0.9, 0.05), (0.6, 0.2)])
def test_ratios_hold_in_samples_within_tolerance(seed, train_ratio, val_ratio):
    units = writer_units(200, seed=seed + 100)
    fractions = sample_fractions(units, splits.assign(units, train_ratio, val_ratio, seed))
    # A boundary writer has at most 120 of ~12000 samples: 1% either way per boundary, 2% slack.
    assert fractions["train"] == pytest.approx(train_ratio, abs=0.02)
    assert fractions["val"] == pytest.approx(val_ratio, abs=0.02)
    assert fractions["test"] == pytest.approx(1 - train_ratio - val_ratio, abs=0.02)


def test_random_split_of_sample_ids_holds_the_ratios():
    ids = [f"s{i}" for i in range(1000)]
    fractions = sample_fractions(ids, splits.assign(ids, 0.8, 0.1, seed=3))
    assert fractions == pytest.approx({"train": 0.8, "val": 0.1, "test": 0.1}, abs=0.002)


@pytest.mark.parametrize("sizes", [(1, 1, 1), (100, 1, 1), (1, 1, 100), (500, 300, 2, 1), (50, 50, 50, 50, 1000)])
@pytest.mark.parametrize("seed", range(5))
def test_every_split_is_non_empty_with_three_or_more_units(sizes, seed):
    units = [f"w{i}" for i, n in enumerate(sizes) for _ in range(n)]
    result = splits.assign(units, 0.75, 0.15, seed)
    assert set(result.values()) == {"train", "val", "test"}, result


def test_zero_val_ratio_leaves_val_empty():
    units = writer_units(50)
    result = splits.assign(units, 0.8, 0.0, seed=0)
    assert set(result.values()) == {"train", "test"}


def test_fewer_than_three_units_do_not_crash():
    assert set(splits.assign(["w1"] * 10, 0.75, 0.15, 0).values()) <= {"train", "val", "test"}
    assert len(splits.assign(["w1", "w2"], 0.75, 0.15, 0)) == 2
    assert splits.assign([], 0.75, 0.15, 0) == {}


@pytest.mark.parametrize(
    "train_ratio, val_ratio",
    [(0, 0.1), (1.0, 0.0), (0.9, 0.1), (0.95, 0.1), (0.5, -0.1), (-0.5, 0.1), (0.5, 1.0), (1.5, 0.0)],
)
def test_check_ratios_rejects_impossible_ratios_with_a_clear_message(train_ratio, val_ratio):
    with pytest.raises(ValueError, match="the rest is the test split"):
        splits.check_ratios(train_ratio, val_ratio)
    with pytest.raises(ValueError):
        splits.assign(["a", "b", "c"], train_ratio, val_ratio, 0)


@pytest.mark.parametrize("train_ratio, val_ratio", [(0.75, 0.15), (0.5, 0.0), (0.01, 0.98)])
def test_check_ratios_accepts_valid_ratios(train_ratio, val_ratio):
    splits.check_ratios(train_ratio, val_ratio)


def test_every_split_is_non_empty_for_many_small_random_writer_sets():
    rng = random.Random(0)
    for trial in range(300):
        sizes = [rng.choice([1, 2, 5, 50, 400]) for _ in range(rng.randint(3, 6))]
        units = [f"w{i}" for i, n in enumerate(sizes) for _ in range(n)]
        train_ratio, val_ratio = rng.choice([(0.75, 0.15), (0.9, 0.05), (0.5, 0.25), (0.8, 0.0)])
        result = splits.assign(units, train_ratio, val_ratio, seed=trial)
        expected = {"train", "val", "test"} if val_ratio else {"train", "test"}
        assert set(result.values()) == expected, (sizes, train_ratio, val_ratio, trial, result)
