"""benchmarks/phases.py: the input phase reads each pipeline the way its own training reads it."""

import sys
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import phases  # noqa: E402

TEN = tf.data.Dataset.range(10).map(lambda i: (i, i)).batch(4)  # (image, label) batches of 4, 4 and 2


def test_an_endless_stream_is_read_in_passes_of_one_iterator_as_fit_reads_it():
    passes = phases.Passes(TEN.repeat(), steps=3)
    assert [int(images[0]) for images, _ in passes] == [0, 4, 8]
    assert phases._epoch(passes)[0] == 10  # the next pass: all ten images again
    # Epochs go on where the last one stopped: one iterator, not a new one per epoch.
    halves = phases.Passes(TEN.repeat(), steps=2)
    assert [[int(images[0]) for images, _ in halves] for _ in range(3)] == [[0, 4], [8, 0], [4, 8]]


def test_each_timed_epoch_counts_the_images_of_one_pass_for_both_kinds_of_pipeline():
    timed = phases._time_epochs(
        {"finite": lambda: TEN, "endless": lambda: phases.Passes(TEN.repeat(), 3)},
        min_warm_seconds=0.0,
        min_warm_epochs=2,
        max_epochs=5,
    )
    for name in ("finite", "endless"):
        assert timed[name]["images_per_epoch"] == 10
        assert timed[name]["epochs"] >= 3 and timed[name]["steady_images_per_second"] > 0


def test_every_pipeline_takes_at_least_three_turns_and_each_turn_is_kept():
    timed = phases._time_epochs(
        {"finite": lambda: TEN, "endless": lambda: phases.Passes(TEN.repeat(), 3)},
        min_warm_seconds=0.0,
        min_warm_epochs=1,
        max_epochs=1000,
        slice_seconds=0.01,
    )
    for name in ("finite", "endless"):
        turns = timed[name]["turns"]
        assert len(turns) >= 3 and all(images % 10 == 0 and images > 0 for images, _ in turns)
        assert sum(images for images, _ in turns) == 10 * (timed[name]["epochs"] - 1)  # every warm epoch, once
