"""steps.model: shapes, a CTC loss that uses the true label lengths, and a model that can learn.

`overfit()` trains a small CRNN on one batch of real rendered words; it is cached for the session
so that test_exported reuses the same trained network (texts it decodes are then non-trivial).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import time
from dataclasses import dataclass

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from steps.evaluation import metrics
from steps.inference import ctc, imaging
from steps.inference.charset import Charset
from steps.training import model as modelib
from steps.training import warmstart
from steps.training.model import ModelConfig
from steps.workflow import config

_TRAIN = config.defaults("train")


def model_config(**overrides) -> ModelConfig:
    """train's MLproject defaults (the only place they live), with `overrides`."""
    return dataclasses.replace(ModelConfig.from_params(_TRAIN), **overrides)


H, W, MAX_LEN = 32, 128, 12
WORDS = ["hello", "world", "cat", "dog", "ink", "pen", "the", "mlflow"]


def render_word(text: str, size: int = 28, fmt: str = "PNG") -> bytes:
    """Black text on white paper with a margin, encoded as `fmt`: a stand-in for a scanned word."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 16, bottom - top + 12), 255)
    ImageDraw.Draw(image).text((8 - left, 6 - top), text, fill=0, font=font)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def encode_labels(chars: Charset, texts: list[str], max_length: int = MAX_LEN) -> np.ndarray:
    labels = np.zeros((len(texts), max_length), np.int32)
    for i, t in enumerate(texts):
        labels[i, : len(t)] = chars.encode(t)
    return labels


@dataclass
class Overfit:
    net: keras.Model
    chars: Charset
    words: list[str]
    pngs: list[bytes]
    inputs: tf.Tensor  # float [8, H, W, 1]
    labels: np.ndarray
    loss_before: float
    loss_after: float
    seconds: float


SMALL = dict(conv_filters=(16, 32), dense_units=64, rnn_units=(64,), dropout=0.0)


@functools.cache
def overfit(steps: int = 250) -> Overfit:
    """Train a small CRNN on one batch of 8 rendered words with Adam 3e-3 (about 15 s on 2 cores)."""
    pngs = [render_word(w) for w in WORDS]
    canvases = np.stack([imaging.preprocess_bytes(tf.constant(p), H, W).numpy() for p in pngs])
    inputs = imaging.to_model_input(canvases)
    chars = Charset.from_texts(WORDS)
    labels = encode_labels(chars, WORDS)
    keras.utils.set_random_seed(0)
    net = modelib.build(model_config(**SMALL), H, W, chars.size)
    # BatchNorm's moving averages (momentum 0.99) would lag far behind in a 250-step run; at 0.9 they
    # catch up, so the inference path (training=False), which is what users get, is what we test.
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    net.compile(optimizer=keras.optimizers.Adam(3e-3), loss=ctc.loss)
    before = float(net.evaluate(inputs, labels, verbose=0))
    start = time.perf_counter()
    net.fit(tf.data.Dataset.from_tensors((inputs, labels)).repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    after = float(net.evaluate(inputs, labels, verbose=0))
    return Overfit(net, chars, list(WORDS), pngs, inputs, labels, before, after, seconds)


def greedy_texts(net: keras.Model, chars: Charset, inputs) -> list[str]:
    texts, _ = ctc.decode(net(inputs, training=False), tf.constant(list(chars.characters)))
    return [t.decode("utf-8") for t in texts.numpy()]


# --- shapes --------------------------------------------------------------------------------------


def test_default_config_output_shape():
    net = modelib.build(model_config(), H, W, num_classes=80)
    assert net.input_shape == (None, H, W, 1)
    out = net(tf.zeros((3, H, W, 1)), training=False)
    assert out.shape == (3, W // 4, 80) and out.dtype == tf.float32
    assert sum(isinstance(layer, keras.layers.Bidirectional) for layer in net.layers) == 1  # MLproject: one BiLSTM


def test_deeper_config_output_shape():
    net = modelib.build(
        model_config(conv_filters=(16, 32, 48), width_pools=3, dense_units=32, rnn_units=(32, 32, 16)),
        H,
        W,
        num_classes=30,
    )
    out = net(tf.zeros((2, H, W, 1)), training=False)
    assert out.shape == (2, W // 8, 30)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in net.layers) == 3
    assert sum(isinstance(layer, keras.layers.Bidirectional) for layer in net.layers) == 3


def test_other_canvas_sizes_give_one_time_step_per_pooled_column():
    net = modelib.build(model_config(conv_filters=(8, 8), dense_units=8, rnn_units=(8,)), 64, 256, num_classes=5)
    assert net(tf.zeros((1, 64, 256, 1))).shape == (1, 64, 5)


def test_a_windowed_model_reads_any_pooled_width_with_the_same_weights():
    small = model_config(conv_filters=(8, 8), dense_units=8, rnn_units=(8,))
    fixed = modelib.build(small, H, 512, num_classes=5)
    windowed = modelib.build(small, H, 512, num_classes=5, windowed=True)
    windowed.set_weights(fixed.get_weights())  # one architecture: weights move between the two freely
    assert modelib.is_windowed(windowed) and not modelib.is_windowed(fixed)
    for width in (64, 192, 512):
        assert windowed(tf.zeros((2, H, width, 1))).shape == (2, width // 4, 5)
    canvas = np.zeros((1, H, 512, 1), np.float32)
    canvas[0, 8:24, 200:300:3] = 1.0
    np.testing.assert_allclose(windowed(canvas), fixed(canvas), atol=1e-5)


def test_read_canvases_reads_each_line_in_its_own_window_whatever_it_is_batched_with():
    small = model_config(conv_filters=(8, 8), dense_units=8, rnn_units=(8,))
    canvases = np.zeros((3, H, 512, 1), np.uint8)
    canvases[0, 8:24, 230:280:3] = 255  # 50 px of ink in the middle
    canvases[1, 8:24, 40:470:3] = 255  # a long line
    canvases[2, 8:24, 200:320:2] = 255
    windowed = modelib.build(small, H, 512, num_classes=5, windowed=True)
    together = modelib.read_canvases(windowed, tf.constant(canvases)).numpy()
    assert together.shape == (3, 128, 5)  # the canvas's time steps, whatever the windows
    for i in range(3):
        alone = modelib.read_canvases(windowed, tf.constant(canvases[i : i + 1])).numpy()[0]
        np.testing.assert_array_equal(together[i], alone)
        # = the model on the window alone, centred between frames that are certainly blank
        window = imaging.crop_window(tf.constant(canvases[i : i + 1]))
        direct = windowed(imaging.to_model_input(window)).numpy()[0]
        start = (128 - len(direct)) // 2
        np.testing.assert_allclose(together[i, start : start + len(direct)], direct, atol=1e-5)
        padding = np.delete(together[i], range(start, start + len(direct)), axis=0)
        assert np.all(padding.argmax(-1) == 0) and np.all(padding[:, 1:] < -1e3)
    assert len(direct) < 128  # the short line really was read in a narrower window
    fixed = modelib.build(small, H, 512, num_classes=5)
    assert modelib.read_canvases(fixed, tf.constant(canvases)).shape == (3, 128, 5)


def test_blank_padding_changes_no_reading_and_no_loss():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 10, 6)).astype(np.float32)
    blank = np.full((2, 5, 6), -1e4, np.float32)
    blank[..., 0] = 0.0
    padded = tf.constant(np.concatenate([blank, logits, blank], axis=1))
    chars = tf.constant(list("abcde"))
    labels = tf.constant([[1, 2, 0], [3, 3, 4]])
    for beam in (0, 5):
        (texts, scores), (ptexts, pscores) = ctc.decode(logits, chars, beam), ctc.decode(padded, chars, beam)
        assert texts.numpy().tolist() == ptexts.numpy().tolist()
        np.testing.assert_allclose(scores, pscores, atol=1e-6)
    np.testing.assert_allclose(ctc.loss(labels, logits), ctc.loss(labels, padded), rtol=1e-5)


def test_canvas_not_divisible_by_the_pooling_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        modelib.build(model_config(conv_filters=(8, 8, 8), width_pools=3), 32, 100, num_classes=5)


# --- loss ----------------------------------------------------------------------------------------


def test_ctc_loss_is_finite_and_per_sample():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(4, W // 4, 10)).astype(np.float32))
    labels = tf.constant([[1, 2, 3, 0, 0], [4, 0, 0, 0, 0], [5, 5, 5, 5, 5], [9, 1, 9, 1, 0]])
    loss = ctc.loss(labels, logits).numpy()
    assert loss.shape == (4,) and np.all(np.isfinite(loss)) and np.all(loss > 0)


def test_label_length_is_the_true_length_not_the_padded_width():
    rng = np.random.default_rng(1)
    logits = tf.constant(rng.normal(size=(3, 32, 8)).astype(np.float32))
    labels = np.array(
        [[1, 2, 2, 3, 0, 0, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0, 0, 0, 0, 0], [4, 5, 6, 7, 1, 2, 3, 0, 0, 0]], np.int32
    )
    true_length = np.array([4, 1, 7], np.int32)
    expected = tf.nn.ctc_loss(
        labels=tf.constant(labels),
        logits=logits,
        label_length=true_length,
        logit_length=tf.fill([3], 32),
        logits_time_major=False,
        blank_index=0,
    ).numpy()
    np.testing.assert_allclose(ctc.loss(tf.constant(labels), logits).numpy(), expected, rtol=1e-4)
    # The Keras example's mistake (the padded width as label_length) gives a different loss: this test can tell.
    padded = tf.nn.ctc_loss(
        labels=tf.constant(labels),
        logits=logits,
        label_length=np.full(3, 10, np.int32),
        logit_length=tf.fill([3], 32),
        logits_time_major=False,
        blank_index=0,
    ).numpy()
    assert not np.allclose(padded, expected, rtol=1e-2)


def dense_reference(labels: np.ndarray, logits: tf.Tensor) -> tf.Tensor:
    """TensorFlow's dense-label CTC (what keras.ops.ctc_loss runs) with the true lengths."""
    return tf.nn.ctc_loss(
        labels=tf.constant(labels),
        logits=logits,
        label_length=np.count_nonzero(labels, axis=1).astype(np.int32),
        logit_length=tf.fill([labels.shape[0]], logits.shape[1]),
        logits_time_major=False,
        blank_index=0,
    )


@pytest.mark.parametrize("in_graph", [False, True], ids=["eager", "tf.function"])
def test_loss_and_gradients_equal_the_dense_label_ctc(in_graph):
    # The last class and class 1 both appear: the kernel's blank is the last class, ours class 0.
    rng = np.random.default_rng(3)
    logits = tf.Variable(rng.normal(size=(3, 20, 9)).astype(np.float32))
    labels = np.array([[8, 1, 1, 8, 0, 0], [1, 0, 0, 0, 0, 0], [2, 3, 4, 5, 6, 7]], np.int32)

    def both():
        with tf.GradientTape(persistent=True) as tape:
            ours, reference = ctc.loss(tf.constant(labels), logits), dense_reference(labels, logits)
        return ours, reference, tape.gradient(ours, logits), tape.gradient(reference, logits)

    ours, reference, ours_grad, reference_grad = (tf.function(both) if in_graph else both)()
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours_grad.numpy(), reference_grad.numpy(), atol=1e-5)


def test_a_label_longer_than_the_time_steps_adds_nothing_instead_of_failing():
    logits = tf.zeros((2, 4, 5))
    labels = tf.constant([[1, 2, 0, 0, 0], [1, 1, 1, 2, 3]])  # the second needs 7 steps (two blanks between repeats)
    loss = ctc.loss(labels, logits).numpy()
    assert loss[0] > 0 and loss[1] == 0


def test_extra_padding_does_not_change_the_loss():
    rng = np.random.default_rng(2)
    logits = tf.constant(rng.normal(size=(2, 16, 6)).astype(np.float32))
    short = tf.constant([[1, 2, 3], [4, 0, 0]])
    long = tf.concat([short, tf.zeros((2, 9), tf.int32)], axis=1)
    np.testing.assert_allclose(ctc.loss(short, logits).numpy(), ctc.loss(long, logits).numpy(), rtol=1e-5)


def test_loss_is_lower_for_logits_that_spell_the_label():
    labels = tf.constant([[1, 2, 0, 0]])
    spelled = np.full((1, 8, 4), -5.0, np.float32)
    for t, c in enumerate([1, 1, 0, 2, 2, 0, 0, 0]):
        spelled[0, t, c] = 5.0
    wrong = np.roll(spelled, 1, axis=-1)
    assert float(ctc.loss(labels, tf.constant(spelled))[0]) < 0.1
    assert float(ctc.loss(labels, tf.constant(wrong))[0]) > 5.0


# --- it learns --------------------------------------------------------------------------------------


def test_overfit_one_batch_of_real_canvases():
    run = overfit()
    assert run.inputs.shape == (8, H, W, 1)
    assert run.loss_after < 0.2 * run.loss_before, (run.loss_before, run.loss_after)
    predicted = greedy_texts(run.net, run.chars, run.inputs)
    assert sum(p == w for p, w in zip(predicted, run.words)) >= 6, predicted
    assert metrics.error_rates(run.words, predicted)["cer"] < 0.15, predicted
    assert run.seconds < 60


def test_model_survives_a_keras_save_and_load(tmp_path):
    run = overfit()
    path = tmp_path / "model.keras"
    run.net.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(
        reloaded(run.inputs, training=False).numpy(), run.net(run.inputs, training=False).numpy(), atol=1e-5
    )


def test_height_only_pooling_keeps_the_time_steps_of_width_pools():
    config = model_config(conv_filters=(8, 8, 8, 8), width_pools=2, column_pool=True, dense_units=8, rnn_units=(8,))
    net = modelib.build(config, H, W, num_classes=5)
    assert net(tf.zeros((1, H, W, 1))).shape == (1, W // 4, 5) == (1, config.time_steps(W), 5)


def test_the_shortcut_head_is_a_second_output_of_the_trainer_only():
    config = model_config(conv_filters=(8, 8), dense_units=8, rnn_units=(8,), shortcut=0.1)
    net, trainer = modelib.build_for_training(config, H, W, num_classes=5)
    out = trainer(tf.zeros((2, H, W, 1)))
    assert set(out) == {"logits", "shortcut"} and out["shortcut"].shape == out["logits"].shape == (2, W // 4, 5)
    assert net(tf.zeros((2, H, W, 1))).shape == (2, W // 4, 5)  # the recogniser has one output, shared layers
    assert {w.path for w in net.weights} < {w.path for w in trainer.weights}
    plain_net, plain_trainer = modelib.build_for_training(model_config(shortcut=0.0), H, W, num_classes=5)
    assert plain_net is plain_trainer


def test_model_config_reads_train_parameters_as_mlflow_spells_them():
    config = ModelConfig.from_params({**_TRAIN, "conv_filters": "8,16", "column_pool": "true", "shortcut": "0.2"})
    assert config.conv_filters == (8, 16) and config.column_pool is True and config.shortcut == 0.2
    with pytest.raises(ValueError, match="positive integers"):
        ModelConfig.from_params({**_TRAIN, "conv_filters": "8,x"})


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_fused_batch_norm_computes_what_keras_batch_norm_does(graph):
    x = tf.random.stateless_normal([8, 16, 6, 5], seed=[1, 2]) * 3.0 + 1.5
    ours, theirs = modelib.FusedBatchNorm(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    for layer in (ours, theirs):
        layer.build(x.shape)
        layer.gamma.assign(tf.linspace(0.5, 2.0, 5))
        layer.beta.assign(tf.linspace(-1.0, 1.0, 5))
    variables = ours.trainable_variables + theirs.trainable_variables

    def step():
        with tf.GradientTape() as tape:
            a, b = ours(x, training=True), theirs(x, training=True)
            loss = tf.reduce_sum(a * tf.range(5.0) * x) + tf.reduce_sum(b * tf.range(5.0) * x)
        grads = tape.gradient(loss, variables)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            loss_a = tf.reduce_sum(ours(x, training=True) * tf.range(5.0) * x)
            loss_b = tf.reduce_sum(theirs(x, training=True) * tf.range(5.0) * x)
        return a, b, grads, tape.gradient(loss_a, x), tape.gradient(loss_b, x)

    a, b, grads, dx_ours, dx_theirs = (tf.function(step) if graph else step)()
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(dx_ours, dx_theirs, rtol=1e-3, atol=1e-3)
    for g_ours, g_theirs in zip(grads[:2], grads[2:]):
        np.testing.assert_allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ours.moving_mean, theirs.moving_mean, atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance, theirs.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), atol=1e-4)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_fused_lstm_computes_what_keras_lstm_does_both_ways_with_its_gradients(graph):
    x = tf.random.stateless_normal([4, 9, 6], seed=[3, 4])
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))
    ours = keras.layers.Bidirectional(modelib.FusedLSTM(5, return_sequences=True))
    theirs(x), ours(x)
    ours.set_weights(theirs.get_weights())

    def outputs_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(3.0 * y) * tf.range(10.0))
        return y, tape.gradient(loss, [x] + layer.trainable_variables)

    run = tf.function(outputs_and_gradients) if graph else outputs_and_gradients
    (y_ours, g_ours), (y_theirs, g_theirs) = run(ours), run(theirs)
    np.testing.assert_allclose(y_ours, y_theirs, atol=1e-6)
    assert len(g_ours) == 7  # the input, then kernel, recurrent kernel and bias of each direction
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fused_lstm_drops_one_input_mask_per_sequence_and_falls_back_where_the_kernel_cannot():
    x = tf.ones([64, 7, 40])
    layer = modelib.FusedLSTM(3, return_sequences=True, dropout=0.5)
    layer(x)
    layer.cell.kernel.assign(tf.ones_like(layer.cell.kernel) * 0.05)
    a, b = layer(x, training=True), layer(x, training=True)
    assert not np.allclose(a, b)  # dropout is on in training, drawn afresh per call
    np.testing.assert_allclose(layer(x), layer(x))  # and off in inference
    # A mask goes through Keras' own loop, with the same weights: masked steps repeat the last output.
    mask = tf.sequence_mask([7, 3], 7)
    masked = layer(x[:2], mask=mask)
    np.testing.assert_allclose(masked[1, 3:], tf.repeat(masked[1, 2:3], 4, axis=0), atol=1e-6)
    np.testing.assert_allclose(masked[0], layer(x[:1])[0], atol=1e-6)


def test_a_model_saved_with_keras_lstm_loads_into_the_fused_one(tmp_path):
    cfg = ModelConfig((8, 16), 1, True, 12, (6,), 0.1, 0.0)
    ours = modelib.build(cfg, 16, 32, 7)
    # the same network with Keras' own LSTM, as models trained before the fused layer were saved
    theirs = keras.models.clone_model(
        ours,
        clone_function=lambda layer: (
            keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True, dropout=0.1), name=layer.name)
            if isinstance(layer, keras.layers.Bidirectional)
            else layer.__class__.from_config(layer.get_config())
        ),
    )
    assert not any(
        isinstance(layer.forward_layer, modelib.FusedLSTM) for layer in theirs.layers if hasattr(layer, "forward_layer")
    )
    # init_model finds a parent's weights by variable path: the fused layer must keep Keras' paths
    paths = lambda net: sorted(warmstart.key(v.path) for v in net.variables)  # noqa: E731
    assert paths(ours) == paths(theirs) and "bilstm1/forward_lstm/lstm_cell/kernel" in paths(ours)
    theirs.save_weights(tmp_path / "old.weights.h5")
    ours.load_weights(tmp_path / "old.weights.h5")
    x = tf.random.stateless_uniform([3, 16, 32, 1], seed=[5, 6])
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)
    ours.save(tmp_path / "fused.keras")
    again = keras.models.load_model(tmp_path / "fused.keras")
    np.testing.assert_allclose(again(x), ours(x), atol=1e-6)
