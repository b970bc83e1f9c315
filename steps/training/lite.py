"""The trained network as a TensorFlow Lite model, which the logged recogniser runs instead of the SavedModel's
network when it is there (steps/inference/lite.py): on a CPU, TensorFlow Lite's kernels read one word image
about twice as fast (README, "Performance").

The converter cannot take the Keras model as it is. Keras 3's variables stop it, and it fuses an LSTM into
its sequence kernel only when the LSTM is a function marked the way Keras 2 marked its own. So `convert`
writes the network again in plain TensorFlow ops over the trained weights, taken layer by layer from the
model that model.build made (conv blocks, column pool, dense, BiLSTMs, output), each LSTM direction as such
a marked function. Two things then differ from Keras, and both are undone:
- the converter gives the fused LSTM a cell clip of 10, where Keras has none (trained cells reach 30):
  `convert` sets it to 0, which means no clip;
- a fused LSTM keeps its last state between calls: the reader resets it before each image.
`check` compares the result with the Keras model on real canvases; export ships it only if they agree.

With int8 weights the LSTMs are written out step by step instead (`stepped_lstm`): the input's share of every
gate for all steps is one matrix product, then each step one product with the recurrent kernel, all of them
XNNPACK's int8 kernels. The fused kernel computes its int8 products with older SSE code, and the LSTMs were
half of the network's time: stepped, the default network reads a word in 0.51 against 0.80 ms (README,
"Performance"). In float, the fused kernel stays faster (1.67 against 2.08 ms), so float networks keep it.
A stepped network keeps no state between calls and takes any batch size.
"""

from __future__ import annotations

import re
import tempfile
import uuid

import keras
import numpy as np
import tensorflow as tf

from steps.inference import imaging
from steps.inference.lite import native_stderr_without
from steps.training import model as modelib

MAX_LOGIT_DIFFERENCE = 1e-3  # what check allows between the Lite model's logits and Keras' (float rounding: ~3e-5)


class LiteUnsupported(Exception):
    """The model has a layer or a set-up that convert does not write (a windowed line model, say)."""


def lstm_function(go_backwards: bool):
    """One LSTM direction over a whole sequence, shaped and marked as Keras 2's `standard_lstm`, which the
    converter replaces by its fused LSTM kernel: (inputs [B, T, F], h0, c0, kernel, recurrent kernel, bias)
    -> (last output, outputs [B, T, units] in the order read, last h, last c, a placeholder)."""

    def standard_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        sequence = tf.transpose(inputs, [1, 0, 2])
        if go_backwards:
            sequence = tf.reverse(sequence, [0])

        def step(carry, x):
            h, c = carry
            i, f, g, o = tf.split(tf.matmul(x, kernel) + tf.matmul(h, recurrent_kernel) + bias, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)  # Keras' gate order i, f, c, o
            return tf.sigmoid(o) * tf.tanh(c), c

        hs, cs = tf.scan(step, sequence, initializer=(init_h, init_c))
        outputs = tf.transpose(hs, [1, 0, 2])
        return outputs[:, -1], outputs, hs[-1], cs[-1], tf.constant(0.0)

    attributes = {
        "api_implements": f"lstm_{uuid.uuid4()}",
        "api_preferred_device": "CPU",
        "time_major": False,
        "go_backwards": go_backwards,
    }
    return tf.function(standard_lstm, autograph=False, experimental_attributes=attributes)


def stepped_lstm(
    inputs: tf.Tensor, kernel: tf.Tensor, recurrent_kernel: tf.Tensor, bias: tf.Tensor, go_backwards: bool
) -> tf.Tensor:
    """One LSTM direction from a zero state, written out step by step: inputs [B, T, F] -> outputs [B, T, units]
    in time order (a backward direction's too, as Bidirectional returns them). Keras' gate order (i, f, c, o)."""
    gates = tf.unstack(tf.matmul(inputs, kernel) + bias, axis=1)  # every step's input share in one product
    h = c = None
    outputs = []
    for z in gates[::-1] if go_backwards else gates:
        if h is not None:
            z = z + tf.matmul(h, recurrent_kernel)
        i, f, g, o = tf.split(z, 4, axis=1)
        c = tf.sigmoid(i) * tf.tanh(g) if c is None else tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        outputs.append(h)
    return tf.stack(outputs[::-1] if go_backwards else outputs, axis=1)


def _numbered(model: keras.Model, prefix: str) -> list[keras.layers.Layer]:
    layers = [layer for layer in model.layers if re.fullmatch(rf"{prefix}\d+", layer.name)]
    return sorted(layers, key=lambda layer: int(layer.name[len(prefix) :]))


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return _numbered(model, "bilstm")


def network_function(model: keras.Model, stepped: bool = False) -> tf.types.experimental.ConcreteFunction:
    """uint8 canvas [1, H, W, 1] -> logits [1, T, C]: the recogniser that model.build made, in plain TF ops
    over its weights as constants (batch normalisation folded into the convolutions). Its LSTMs are marked for
    the converter's fused kernel, or with `stepped` written out by stepped_lstm (then canvases [B, H, W, 1])."""
    if modelib.is_windowed(model):
        raise LiteUnsupported("a windowed model reads each line at its own width; Lite models have one shape")
    _, height, width, _ = model.input_shape
    const = lambda v: tf.constant(np.asarray(v), tf.float32)  # noqa: E731  (read eagerly, here, not in the graph)
    blocks = []
    for conv, bn, pool in zip(*(_numbered(model, p) for p in ("conv", "bn", "pool"))):
        scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        kernel, bias = (
            conv.kernel.numpy() * scale,
            (conv.bias.numpy() - bn.moving_mean.numpy()) * scale + bn.beta.numpy(),
        )
        blocks.append((const(kernel), const(bias), tuple(pool.pool_size)))
    if not blocks or len(blocks) != len(_numbered(model, "conv")):
        raise LiteUnsupported("expected conv<i>, bn<i> and pool<i> layers as model.build names them")
    column_pool = "column_pool" in {layer.name for layer in model.layers}
    dense, out = model.get_layer("dense"), model.get_layer("logits")
    dense_kernel, dense_bias, out_kernel, out_bias = (
        const(w) for w in (dense.kernel, dense.bias, out.kernel, out.bias)
    )
    if dense.activation is not keras.activations.relu or out.activation is not keras.activations.linear:
        raise LiteUnsupported("expected a relu projection and linear logits")
    recurrent = []
    for bilstm in recurrent_layers(model):
        cells = (bilstm.forward_layer.cell, bilstm.backward_layer.cell)
        if bilstm.merge_mode != "concat" or any(
            not c.use_bias
            or c.activation is not keras.activations.tanh
            or c.recurrent_activation is not keras.activations.sigmoid
            for c in cells
        ):
            raise LiteUnsupported(f"{bilstm.name} is not a BiLSTM as model.build makes them")
        recurrent.append(
            [
                (layer.go_backwards, layer.cell.units)
                + tuple(const(w) for w in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias))
                for layer in (bilstm.forward_layer, bilstm.backward_layer)
            ]
        )

    def direction(x, go_backwards, units, kernel, recurrent_kernel, bias):
        """One LSTM direction's outputs [B, T, units], in time order."""
        if stepped:
            return stepped_lstm(x, kernel, recurrent_kernel, bias, go_backwards)
        zeros = tf.zeros([1, units])
        outputs = lstm_function(go_backwards)(x, zeros, zeros, kernel, recurrent_kernel, bias)[1]
        return tf.reverse(outputs, [1]) if go_backwards else outputs  # back in time order, as Bidirectional

    @tf.function(input_signature=[tf.TensorSpec([None if stepped else 1, height, width, 1], tf.uint8)])
    def network(canvas):
        x = tf.transpose(imaging.to_model_input(canvas), [0, 2, 1, 3])  # columns first, as the model's Permute
        for kernel, bias, pool in blocks:
            x = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)
            x = tf.nn.max_pool2d(x, pool, pool, "VALID")
        x = tf.reduce_max(x, axis=2) if column_pool else tf.reshape(x, [-1, x.shape[1], x.shape[2] * x.shape[3]])
        x = projected = tf.nn.relu(tf.matmul(x, dense_kernel) + dense_bias)
        for directions in recurrent:
            x = tf.concat([direction(x, *d) for d in directions], axis=-1)
        x = tf.concat([x, projected], axis=-1)
        return tf.matmul(x, out_kernel) + out_bias

    return network.get_concrete_function()


def _unclip(blob: bytes) -> bytes:
    """The flatbuffer with every fused LSTM's cell clip set to 0 (none), as Keras computes it."""
    from tensorflow.lite.tools import flatbuffer_utils

    lite = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    for graph in lite.subgraphs:
        for op in graph.operators:
            if hasattr(op.builtinOptions, "cellClip"):
                op.builtinOptions.cellClip = 0.0
    return bytes(flatbuffer_utils.convert_object_to_bytearray(lite))


def convert(model: keras.Model, int8_weights: bool = False) -> bytes:
    """The recogniser (model.build's) -> a TensorFlow Lite flatbuffer: uint8 canvas [1, H, W, 1] -> logits.

    With `int8_weights`, its weights are stored as int8 (see to_lite) and its LSTMs written out step by step
    (the module docstring says why), so it reads canvases [B, H, W, 1]: faster, but its readings may differ,
    so export checks them against the float network's before shipping it.
    LiteUnsupported if the model is not one that network_function writes, or if the converter leaves a float
    network's LSTM unfused (the reader would then be slower than the SavedModel)."""
    blob = to_lite(network_function(model, stepped=int8_weights), int8_weights)
    if int8_weights:
        return blob
    with native_stderr_without():
        ops = {op["op_name"] for op in tf.lite.Interpreter(model_content=blob)._get_ops_details()}  # no public listing
    if "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops and recurrent_layers(model):
        raise LiteUnsupported("the converter did not fuse the LSTMs")
    return blob


def to_lite(function: tf.types.experimental.ConcreteFunction, int8_weights: bool = False) -> bytes:
    """A concrete function -> TensorFlow Lite, its marked LSTMs fused, with no cell clip.

    `int8_weights` is the converter's dynamic-range quantization: weights stored as int8 with a scale per
    output channel, each call quantizing its activations on the fly, so the convolutions and matrix products
    run on int8 (XNNPACK's kernels); no calibration data is needed. The gain depends on the CPU's int8 dot
    products: the default network, one thread, took 0.81 against 1.67 ms per word on an AMD EPYC with AVX-512
    VNNI with its LSTMs fused, 0.51 with them written out (convert does so for int8); 1.89 against 2.08 ms fused
    on a CPU with AVX2 only (README, "Performance"). Full int8 (activations calibrated ahead) was slower
    (2.9 ms): the fused LSTM stays float, and the layers around it quantize and dequantize.
    """
    module = tf.Module()
    module.function = function
    with tempfile.TemporaryDirectory(prefix="hwr-lite-") as saved:
        # Through a SavedModel, not from the function: converting a function inlines the marked LSTMs first.
        tf.saved_model.save(module, saved, signatures={"serving_default": function})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if int8_weights:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        with native_stderr_without():
            blob = converter.convert()
        return _unclip(blob)


def check(blob: bytes, model: keras.Model, canvases: np.ndarray) -> float:
    """The largest difference between the Lite model's logits and the Keras model's over uint8 canvases
    [N, H, W, 1] (read one at a time, as the reader does)."""
    from steps.inference.lite import LiteNetwork

    lite = LiteNetwork(blob).logits(canvases)
    keras_logits = modelib.read_canvases(model, tf.constant(canvases)).numpy()
    return float(np.abs(lite - keras_logits).max())
