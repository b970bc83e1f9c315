"""steps.training.lite and steps.inference.lite: the network as TensorFlow Lite must read as the Keras model does.

Small networks with random weights and moved batch-norm statistics, converted for real and run by TensorFlow
Lite's interpreter; the trained model's case is in tests/steps/inference/test_recognizer.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from steps.inference.lite import LiteNetwork
from steps.training import export, lite
from steps.training import model as modelib

H, W, CLASSES = 16, 32, 7
ROOT = Path(__file__).resolve().parents[3]


def network(config: modelib.ModelConfig, seed: int = 0, windowed: bool = False) -> keras.Model:
    """A built recogniser whose every weight (batch-norm statistics too) is moved off its initial value."""
    keras.utils.set_random_seed(seed)
    net = modelib.build(config, H, W, CLASSES, windowed=windowed)
    rng = np.random.default_rng(seed)
    for v in net.weights:
        value = v.numpy()
        moved = np.abs(value) + 0.5 if "variance" in v.path else value + rng.normal(0, 0.2, value.shape)
        v.assign(moved.astype(value.dtype))
    return net


def canvases(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((count, H, W, 1), np.uint8)
    out[:, 3:13, 2:30] = rng.integers(0, 256, (count, 10, 28, 1))  # ink in the middle, padding around it
    return out


def keras_logits(net: keras.Model, images: np.ndarray) -> np.ndarray:
    return modelib.read_canvases(net, tf.constant(images)).numpy()


CONFIGS = {
    "default shape": modelib.ModelConfig((8, 16), 1, True, 12, (6,), 0.1, 0.1),
    "flattened columns": modelib.ModelConfig((8, 16), 1, False, 12, (6,), 0.0, 0.0),
    "two BiLSTMs": modelib.ModelConfig((8, 16), 2, True, 12, (6, 5), 0.1, 0.0),
    "no recurrent layer": modelib.ModelConfig((8,), 0, True, 12, (), 0.0, 0.0),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_lite_network_reads_as_the_keras_model(name):
    net = network(CONFIGS[name])
    blob = lite.convert(net)
    images = canvases(6)
    np.testing.assert_allclose(LiteNetwork(blob).logits(images), keras_logits(net, images), atol=1e-4)
    assert lite.check(blob, net, images) < lite.MAX_LOGIT_DIFFERENCE


@pytest.mark.parametrize("name", CONFIGS)
def test_lstms_written_out_step_by_step_read_as_the_keras_model(name):
    """What int8 networks are made of, checked in float, where it must be exact to rounding."""
    net = network(CONFIGS[name])
    reader = LiteNetwork(lite.to_lite(lite.network_function(net, stepped=True)))
    images = canvases(6)
    np.testing.assert_allclose(reader.logits(images), keras_logits(net, images), atol=1e-4)
    assert reader.stateless


def ops(blob: bytes) -> set[str]:
    return {op["op_name"] for op in tf.lite.Interpreter(model_content=blob)._get_ops_details()}


def test_float_lstms_are_fused_and_int8_ones_written_out_without_a_loop():
    net = network(CONFIGS["two BiLSTMs"])
    fused, stepped = ops(lite.convert(net)), ops(lite.convert(net, int8_weights=True))
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in fused and "WHILE" not in fused
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in stepped and "WHILE" not in stepped
    assert "FULLY_CONNECTED" in stepped  # the steps' matrix products, XNNPACK's int8 kernels


def test_a_written_out_network_takes_a_batch_and_reads_it_as_each_image_alone():
    blob = lite.convert(network(CONFIGS["default shape"]), int8_weights=True)
    images = canvases(5)
    interpreter = tf.lite.Interpreter(model_content=blob)
    source = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(source, list(images.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source, images)
    interpreter.invoke()
    batch = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(batch, LiteNetwork(blob).logits(images), atol=1e-5)


def one_cell_lstm() -> tf.types.experimental.ConcreteFunction:
    """An LSTM of one unit whose cell adds its input (+1 or -1) at each step: gates i, f, o open."""
    lstm = lite.lstm_function(go_backwards=False)
    kernel = tf.constant([[0.0, 0.0, 10.0, 0.0]])  # the input drives g only: tanh(10 x) = x
    recurrent = tf.zeros([1, 4])
    bias = tf.constant([20.0, 20.0, 0.0, 20.0])

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 1], tf.float32)])
    def run(x):
        zeros = tf.zeros([1, 1])
        return lstm(x, zeros, zeros, kernel, recurrent, bias)[1]

    return run.get_concrete_function()


def test_cell_states_beyond_ten_are_not_clipped():
    """The converter clips a fused LSTM's cell at 10 (Keras does not; trained cells pass 30): to_lite removes it.

    The cell climbs to 20 and comes down 12 steps: 8 (output tanh(8) = 1) unclipped, -2 if clipped at 10."""
    x = np.concatenate([np.ones(20), -np.ones(12)]).astype(np.float32).reshape(1, 32, 1)
    function = one_cell_lstm()
    expected = function(tf.constant(x)).numpy()
    assert expected[0, -1, 0] == pytest.approx(np.tanh(8.0), abs=1e-3)

    def read(blob: bytes) -> np.ndarray:
        interpreter = tf.lite.Interpreter(model_content=blob)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    np.testing.assert_allclose(read(lite.to_lite(function)), expected, atol=1e-4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lite, "_unclip", lambda blob: blob)
        assert read(lite.to_lite(function))[0, -1, 0] == pytest.approx(np.tanh(-2.0), abs=1e-3)  # as converted


@pytest.mark.parametrize("int8_weights", [False, True])
def test_each_image_starts_from_a_fresh_lstm_state(int8_weights):
    reader = LiteNetwork(lite.convert(network(CONFIGS["default shape"]), int8_weights=int8_weights))
    assert reader.stateless == int8_weights
    a, b = canvases(2)
    np.testing.assert_array_equal(reader.logits(np.stack([a, b]))[1], reader.logits(b[np.newaxis])[0])


@pytest.mark.parametrize("int8_weights", [False, True])
def test_concurrent_calls_each_borrow_an_interpreter_of_the_pool(int8_weights):
    reader = LiteNetwork(lite.convert(network(CONFIGS["default shape"]), int8_weights=int8_weights))
    images = canvases(8)
    expected = reader.logits(images)
    results: dict[int, np.ndarray] = {}

    def read(i: int) -> None:
        for _ in range(5):
            results[i] = reader.logits(images)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4
    for got in results.values():
        np.testing.assert_array_equal(got, expected)
    assert reader.pooled() <= 4  # at most one per call at once


def test_threads_taking_turns_share_one_interpreter():
    """A server's request threads call one at a time: the pool stays one interpreter, warm in the cache."""
    reader = LiteNetwork(lite.convert(network(CONFIGS["default shape"])))
    image = canvases(1)
    for _ in range(6):
        thread = threading.Thread(target=reader.logits, args=(image,))
        thread.start()
        thread.join(30)
    assert reader.pooled() == 1


def test_a_canvas_of_another_size_is_refused_with_the_sizes():
    reader = LiteNetwork(lite.convert(network(CONFIGS["default shape"])))
    with pytest.raises(ValueError, match=r"canvases of shape \(16, 64, 1\), the network reads \(16, 32, 1\)"):
        reader.logits(np.zeros((1, H, 2 * W, 1), np.uint8))
    assert reader.logits(np.zeros((0, H, W, 1), np.uint8)).shape == (0, W // 2, CLASSES)


def test_a_windowed_line_model_stays_tensorflow_only(tmp_path):
    net = network(CONFIGS["default shape"], windowed=True)
    with pytest.raises(lite.LiteUnsupported, match="windowed"):
        lite.convert(net)
    assert export.save_lite(net, canvases(2), tmp_path).startswith("the network stays TensorFlow only")
    assert not (tmp_path / "network.tflite").exists()


def test_save_lite_writes_the_file_only_when_the_check_passes(tmp_path):
    net = network(CONFIGS["default shape"])
    said = export.save_lite(net, canvases(4), tmp_path)
    assert said.startswith("the network is also TensorFlow Lite") and (tmp_path / "network.tflite").exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lite, "check", lambda blob, model, images: 0.5)
        refused = tmp_path / "refused"
        refused.mkdir()
        assert "logits differ by 0.5" in export.save_lite(net, canvases(4), refused)
        assert not (refused / "network.tflite").exists()


def test_known_native_lines_are_held_back_and_every_other_line_still_reaches_stderr(capfd):
    from steps.inference.lite import native_stderr_without

    with native_stderr_without():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 something went wrong\n")
    assert capfd.readouterr().err == "E0000 something went wrong\n"


def test_converting_and_reading_print_nothing(tmp_path):
    """In a process of its own, as train and serve run: TensorFlow Lite's C++ lines stay out of the log."""
    script = (
        "import numpy as np\n"
        "from steps.training import lite, model\n"
        "from steps.inference.lite import LiteNetwork\n"
        "net = model.build(model.ModelConfig((8, 16), 1, True, 12, (6,), 0.1, 0.1), 16, 32, 7)\n"
        "print(LiteNetwork(lite.convert(net)).logits(np.zeros((1, 16, 32, 1), np.uint8)).shape)\n"
        "print(LiteNetwork(lite.convert(net, int8_weights=True)).logits(np.zeros((1, 16, 32, 1), np.uint8)).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(1, 16, 7)"] * 2
    assert done.stderr == ""


def test_a_converter_failure_leaves_the_model_tensorflow_only(tmp_path):
    def fail(model):
        raise RuntimeError("ConverterError: op not supported\nmore detail")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lite, "convert", fail)
        said = export.save_lite(network(CONFIGS["default shape"]), canvases(2), tmp_path)
    assert said == (
        "the network stays TensorFlow only: converting it failed (RuntimeError: ConverterError: op not supported)"
    )
    assert not (tmp_path / "network.tflite").exists()


def test_int8_weights_make_a_network_that_reads_nearly_alike():
    net = network(CONFIGS["default shape"])
    as_float, as_int8 = LiteNetwork(lite.convert(net)), LiteNetwork(lite.convert(net, int8_weights=True))
    assert (as_float.int8_weights, as_int8.int8_weights) == (False, True)
    images = canvases(6)
    difference = np.abs(as_int8.logits(images) - as_float.logits(images))
    assert 0 < difference.max() < 0.1 * np.abs(as_float.logits(images)).max()


def labelled(net: keras.Model, count: int) -> tuple[np.ndarray, list[str], tuple[str, ...]]:
    """Canvases labelled with what the float network reads in them: its CER is 0 by construction."""
    from steps.inference import ctc

    characters = tuple("abcdef")  # CLASSES - 1 characters after the blank
    images = canvases(count)
    texts, _ = ctc.greedy_numpy(LiteNetwork(lite.convert(net)).logits(images), characters)
    return images, texts, characters


def test_int8_weights_ship_only_when_they_read_the_validation_words_as_well(tmp_path):
    net = network(CONFIGS["default shape"])
    images, texts, characters = labelled(net, 8)
    assert export.save_lite(net, images, tmp_path).startswith("the network is also TensorFlow Lite")
    float_blob = (tmp_path / "network.tflite").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "int8_allowance", lambda float_cer: -0.5)  # int8 must read better than the float's CER 0
        said, figures = export.save_int8_weights(net, images, texts, characters, tmp_path)
    assert said.startswith("the TensorFlow Lite network keeps float weights: int8 weights read worse (CER ")
    assert figures["lite_float_check_cer"] == 0.0 and figures["lite_int8_check_cer"] >= 0.0
    assert (tmp_path / "network.tflite").read_bytes() == float_blob
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "int8_allowance", lambda float_cer: 1.0)
        said, figures = export.save_int8_weights(net, images, texts, characters, tmp_path)
    assert said.startswith("the TensorFlow Lite network has int8 weights (") and "on 8 validation words" in said
    assert LiteNetwork((tmp_path / "network.tflite").read_bytes()).int8_weights


def test_int8_weights_may_cost_0_002_cer_or_2_percent_of_a_weaker_models():
    assert export.int8_allowance(0.05) == 0.002
    assert export.int8_allowance(0.28) == pytest.approx(0.0056)


def test_int8_weights_need_labelled_words(tmp_path):
    net = network(CONFIGS["default shape"])
    export.save_lite(net, canvases(2), tmp_path)
    said, figures = export.save_int8_weights(net, canvases(0), [], tuple("abcdef"), tmp_path)
    assert said == "the TensorFlow Lite network keeps float weights: no labelled words to check int8 weights on"
    assert figures == {} and not LiteNetwork((tmp_path / "network.tflite").read_bytes()).int8_weights
