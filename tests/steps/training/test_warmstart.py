"""steps.training.warmstart: a parent's weights through its real exported SavedModel into a wider network."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from steps.inference import ctc
from steps.inference.calibration import Calibration
from steps.inference.charset import Charset
from steps.training import export, warmstart
from steps.training import model as modelib
from steps.training.errors import ConfigError
from steps.training.model import ModelConfig

pytestmark = pytest.mark.slow  # each test exports a real SavedModel (about 25 s)

CFG = ModelConfig((8, 16), 1, True, 16, (8,), 0.0, 0.1)
OLD = Charset(("a", "b", "c"))


def _parent(tmp_path, cfg: ModelConfig = CFG) -> tuple[warmstart.Parent, dict[str, np.ndarray]]:
    """Export a trained-looking network as train does, and read it back as fine-tuning does."""
    net = modelib.build(cfg, 32, 64, OLD.size)
    export.save(net, OLD, Calibration.identity(), 32, 64, tmp_path / "export")
    module = tf.saved_model.load(str(tmp_path / "export" / "saved_model"))
    weights = {warmstart.key(v.name): v.numpy() for v in module.variables}
    return warmstart.Parent("models:/M@champion", "models:/M/3", OLD, weights), {
        warmstart.key(v.path): np.array(v) for v in net.variables
    }


def test_old_characters_keep_their_output_weights_and_new_ones_start_fresh(tmp_path):
    parent, original = _parent(tmp_path)
    new = Charset(("A", "a", "b", "c", "ж"))  # a new character before and after the old ones
    assert warmstart.class_map(OLD, new) == [0, -1, 1, 2, 3, -1]
    _, trainer = modelib.build_for_training(CFG, 32, 64, new.size)
    counts = warmstart.transfer(trainer, parent, new)
    weights = {warmstart.key(v.path): np.array(v) for v in trainer.variables}
    np.testing.assert_array_equal(weights["conv1/kernel"], original["conv1/kernel"])
    np.testing.assert_array_equal(
        weights["bilstm1/forward_lstm/lstm_cell/kernel"], original["bilstm1/forward_lstm/lstm_cell/kernel"]
    )
    kernel, old_kernel = weights["logits/kernel"], original["logits/kernel"]
    np.testing.assert_array_equal(kernel[:, [0, 2, 3, 4]], old_kernel[:, [0, 1, 2, 3]])  # blank, a, b, c
    assert not np.allclose(kernel[:, 1], old_kernel[:, 1]) and not np.allclose(kernel[:, 5], 0)
    assert counts["new_characters"] == 2 and counts["extended"] == 2  # logits kernel and bias
    assert counts["fresh"] >= 2  # the shortcut head: the exported parent does not carry it


def test_another_architecture_is_refused_with_what_to_do(tmp_path):
    parent, _ = _parent(tmp_path)
    other = modelib.build(ModelConfig((8, 32), 1, True, 16, (8,), 0.0, 0.0), 32, 64, OLD.size)
    with pytest.raises(ConfigError, match="conv2/kernel is .* train with the parent's architecture"):
        warmstart.transfer(other, parent, OLD)


def test_a_parent_with_a_layer_more_or_less_is_refused_before_anything_is_copied(tmp_path):
    deeper = ModelConfig((8, 16), 1, True, 16, (8, 8), 0.0, 0.0)
    parent, _ = _parent(tmp_path / "deeper", deeper)
    net = modelib.build(CFG, 32, 64, OLD.size)  # one BiLSTM fewer: the parent's second would be dropped
    before = {v.path: np.array(v) for v in net.variables}
    with pytest.raises(ConfigError, match=r"bilstm2/\S+ is only there: train with the parent's architecture"):
        warmstart.transfer(net, parent, OLD)
    assert all(np.array_equal(np.array(v), before[v.path]) for v in net.variables)  # nothing half-copied
    shallower, _ = _parent(tmp_path / "shallower")
    with pytest.raises(ConfigError, match=r"bilstm2/\S+ is only here: .*rnn_units"):
        warmstart.transfer(modelib.build(deeper, 32, 64, OLD.size), shallower, OLD)


def test_frozen_convolutions_do_not_move_until_their_epochs_are_over(tmp_path):
    parent, original = _parent(tmp_path, ModelConfig((8, 16), 1, True, 16, (8,), 0.0, 0.0))
    net = modelib.build(ModelConfig((8, 16), 1, True, 16, (8,), 0.0, 0.0), 32, 64, OLD.size)
    import keras

    net.compile(optimizer=keras.optimizers.Adam(0.01), loss=ctc.loss)
    start = warmstart.WarmStart(parent, freeze_epochs=1)
    start.apply(net, OLD)
    rng = np.random.default_rng(0)
    images = rng.random((16, 32, 64, 1)).astype("float32")
    labels = rng.integers(1, 4, (16, 3)).astype("int32")
    net.fit(images, labels, epochs=1, batch_size=8, callbacks=start.callbacks(), verbose=0)
    np.testing.assert_array_equal(np.array(net.get_layer("conv1").kernel), original["conv1/kernel"])
    assert not np.allclose(np.array(net.get_layer("dense").kernel), original["dense/kernel"])
    net.fit(images, labels, epochs=2, initial_epoch=1, batch_size=8, callbacks=start.callbacks(), verbose=0)
    assert not np.allclose(np.array(net.get_layer("conv1").kernel), original["conv1/kernel"])
