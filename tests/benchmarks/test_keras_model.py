"""The Keras IAM example's model as the benchmark rebuilds it (benchmarks/keras_model.py): shapes, loss, decoding."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import keras_baseline as kb  # noqa: E402
import keras_model as km  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "a", "mat"]


@pytest.fixture(scope="module")
def pipe():
    return kb.KerasExamplePipeline(WORDS, batch_size=4)


@pytest.fixture(scope="module")
def model(pipe):
    return km.build_model(pipe.image_width, pipe.image_height, len(pipe.char_to_num.get_vocabulary()))


def test_model_has_the_examples_layers_and_outputs(pipe, model):
    vocabulary = pipe.char_to_num.get_vocabulary()  # [UNK] + the 9 distinct characters
    predict = km.prediction_model(model)
    assert predict.input_shape == (None, 128, 32, 1)
    assert predict.output_shape == (None, 32, len(vocabulary) + 2)  # 32 time steps, blank last
    # The published summary of the same layers over its 79-token vocabulary: 424,081 parameters; the only
    # vocabulary-dependent layer is dense2 (129 weights per output class).
    assert model.count_params() == 424_081 - (79 + 2 - (len(vocabulary) + 2)) * 129


def test_loss_is_finite_and_a_training_step_lowers_it(pipe, model):
    rng = np.random.default_rng(0)
    images = rng.random((4, 128, 32, 1)).astype("float32")
    labels = np.stack([pipe.vectorize_label(w).numpy() for w in WORDS[:4]])
    assert labels.shape == (4, pipe.max_len) and (labels[3, 2:] == kb.PADDING_TOKEN).all()  # "on" + padding
    batch = {"image": images, "label": labels}
    first = model.evaluate(batch, verbose=0)
    for _ in range(5):
        model.train_on_batch(batch)
    assert np.isfinite(first) and first > 0
    assert model.evaluate(batch, verbose=0) < first


def test_greedy_decoding_collapses_repeats_drops_blanks_and_unknown_classes(pipe):
    vocabulary = pipe.char_to_num.get_vocabulary()
    classes, blank = len(vocabulary) + 2, len(vocabulary) + 1
    ids = {c: vocabulary.index(c) for c in "cat"}
    # c c blank a t t, then the OOV index 0 and the spare class, then blanks to the end
    path = [ids["c"], ids["c"], blank, ids["a"], ids["t"], ids["t"], 0, len(vocabulary)] + [blank] * 24
    pred = np.full((1, 32, classes), 1e-4, "float32")
    pred[0, np.arange(32), path] = 1.0
    assert km.decode_batch_predictions(pred, vocabulary, pipe.max_len) == ["cat"]
    # Truncated to max_len characters, as the example truncates.
    long = [ids["c"], blank] * 16
    pred = np.full((1, 32, classes), 1e-4, "float32")
    pred[0, np.arange(32), long] = 1.0
    assert km.decode_batch_predictions(pred, vocabulary, pipe.max_len) == ["c" * pipe.max_len]


def test_time_budget_stops_training_within_the_first_epoch(pipe, model):
    import tensorflow as tf

    images = np.random.default_rng(1).random((8, 128, 32, 1)).astype("float32")
    labels = np.stack([pipe.vectorize_label(w).numpy() for w in WORDS + WORDS[:2]])
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).batch(2)
    stopping = km.early_stopping()
    budget = km.TimeBudget(0.0, stopping)  # a deadline already passed: stop after the first batch
    history = model.fit(ds, validation_data=ds, epochs=5, callbacks=[stopping, budget], verbose=0)
    assert budget.stopped_by_budget and len(history.history["loss"]) == 1  # of 5 epochs of 4 batches
