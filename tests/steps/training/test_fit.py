"""steps.training.fit: when training stops, and which configurations are refused before any work."""

from __future__ import annotations

import pytest

from steps.dataset.info import DatasetInfo
from steps.inference.charset import Charset
from steps.training.errors import ConfigError
from steps.training.fit import TrainConfig, check_feasible, ctc_length, stop_reason
from steps.training.model import ModelConfig


def test_patience_never_runs_out_while_the_model_still_emits_blanks():
    assert stop_reason([1.0] * 20, patience=3) is None  # the all-blank start of CTC does not count


def test_patience_counts_from_the_first_epoch_that_reads():
    assert stop_reason([1.0, 1.0, 0.9, 0.8], patience=2) is None
    assert stop_reason([1.0, 1.0, 0.9, 0.8, 0.85, 0.81], patience=2) == (
        "stopped early after epoch 6: val CER has not improved for 2 epochs (best 0.8000 at epoch 4)"
    )


def test_a_tie_is_no_improvement():
    assert "best 0.5000 at epoch 1" in stop_reason([0.5, 0.5, 0.5], patience=2)


def test_ctc_length_counts_a_blank_between_repeats():
    assert [ctc_length(t) for t in ("", "a", "ab", "aa", "hello", "aaa")] == [0, 1, 2, 3, 6, 5]


def info(width: int = 128, train: int = 100) -> DatasetInfo:
    return DatasetInfo(
        "/nowhere",
        32,
        width,
        24,
        {"train": train, "val": 10, "test": 10},
        {},
        {},
        "",
        "writer",
        Charset(tuple("abcdefghijklmnopqrstuvwxyz")),
    )


def cfg(width_pools: int = 2, batch_size: int = 32, conv=(32, 64)) -> TrainConfig:
    return TrainConfig(
        batch_size, 3, 1e-3, 3, "cosine", 100, False, 0, ModelConfig(conv, width_pools, True, 16, (16,), 0.0, 0.0)
    )


def test_too_few_time_steps_for_the_longest_label_is_refused_with_the_fix():
    texts = ["short", "a" * 20]  # needs 39 time steps
    check_feasible(cfg(width_pools=1), info(), texts)  # 64 steps: fine
    with pytest.raises(ConfigError, match=r"32 time steps .* CTC needs 39 .*-P width_pools=1"):
        check_feasible(cfg(width_pools=2), info(), texts)


def test_a_batch_larger_than_the_training_set_is_refused():
    with pytest.raises(ConfigError, match="batch_size 64 is larger than the 50 training samples"):
        check_feasible(cfg(batch_size=64), info(train=50), ["word"])


def test_a_canvas_the_pooling_cannot_divide_is_refused():
    with pytest.raises(ConfigError, match="divisible"):
        check_feasible(cfg(conv=(8, 8, 8, 8, 8, 8)), info(), ["word"])


def test_a_damaged_history_is_discarded_with_a_warning(tmp_path, capsys):
    from steps.training.fit import read_history

    path = tmp_path / "history.json"
    assert read_history(path) == {}
    path.write_text('{"val_cer": [0.5, 0.4')  # truncated by a kill
    assert read_history(path) == {} and "discarding the damaged training history" in capsys.readouterr().err
    path.write_text('{"val_cer": [0.5, 0.4]}')
    assert read_history(path) == {"val_cer": [0.5, 0.4]}


@pytest.mark.parametrize("shortcut", [0.0, 0.3])
def test_the_report_validates_as_keras_would_in_one_pass(tmp_path, shortcut):
    """EpochReport computes the validation losses (Keras' names, Keras' figures) beside the CER from one pass."""
    import keras
    import numpy as np
    import tensorflow as tf

    from steps.inference import ctc
    from steps.training import model as modelib
    from steps.training.fit import EpochReport

    keras.utils.set_random_seed(0)
    mc = ModelConfig((8, 8), 2, True, 16, (16,), 0.0, shortcut)
    net, trainer = modelib.build_for_training(mc, 32, 64, 27)
    weights = {"logits": 1.0, "shortcut": shortcut} if shortcut else None
    loss = {"logits": ctc.loss, "shortcut": ctc.loss} if shortcut else ctc.loss
    trainer.compile(keras.optimizers.Adam(1e-3), loss=loss, loss_weights=weights)
    rng = np.random.default_rng(0)
    images = rng.random((20, 32, 64, 1), dtype=np.float32)
    labels = np.zeros((20, 6), np.int32)
    for i in range(20):
        labels[i, : 1 + i % 6] = rng.integers(1, 27, 1 + i % 6)
    val = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)  # the last batch is short
    heads = (lambda ds: ds.map(lambda x, y: (x, {"logits": y, "shortcut": y}))) if shortcut else (lambda ds: ds)
    texts = ["".join("abcdefghijklmnopqrstuvwxyz"[c - 1] for c in row if c) for row in labels]
    chars = tf.constant(list("abcdefghijklmnopqrstuvwxyz"))
    report = EpochReport(val, texts, chars, weights, 20, tmp_path, None)
    trainer.fit(heads(val), epochs=1, callbacks=[report], verbose=0)

    history = {k: v[0] for k, v in report.history.items()}
    # Keras' val_loss is the mean over samples (its per-head figures are means of batch means: not compared)
    assert history["val_loss"] == pytest.approx(
        trainer.evaluate(heads(val), return_dict=True, verbose=0)["loss"], rel=1e-4
    )
    if shortcut:
        out = trainer(images, training=False)
        per_head = {name: float(tf.reduce_mean(ctc.loss(labels, out[name]))) for name in ("logits", "shortcut")}
        assert history["val_logits_loss"] == pytest.approx(per_head["logits"], rel=1e-4)
        assert history["val_shortcut_loss"] == pytest.approx(per_head["shortcut"], rel=1e-4)
        assert history["val_loss"] == pytest.approx(per_head["logits"] + shortcut * per_head["shortcut"], rel=1e-4)
    assert 0.0 <= report.history["val_cer"][0] <= 1.0 and report.history["samples_per_second"][0] > 0
    assert (tmp_path / "history.json").exists() and (tmp_path / "best.weights.h5").exists()
