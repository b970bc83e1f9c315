"""The recogniser: a CNN + BiLSTM emitting per-column character logits, trained with CTC.

The shape is configurable in depth and width. What the literature on CRNN-CTC for handwriting finds to
matter is available as options and measured in the README: column-wise max pooling of the CNN features
before the recurrent layers, blocks that pool the height only (so depth does not cost time steps), and an
auxiliary CTC "shortcut" head on the CNN features during training (Retsinas et al. 2022), which gives the
convolutions a direct gradient. The output layer reads the CNN features beside the BiLSTMs' context, so a
new model reads from its first epochs instead of emitting only blanks until the recurrent layers catch up.
The model outputs logits over blank (class 0) + the charset's characters; labels are padded with 0, which
CTC never sees because each label's true length is passed (keras issue 21876: passing the padded width as
label_length trains on padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import keras
import tensorflow as tf

from steps.inference import imaging
from steps.inference.charset import BLANK_INDEX


@keras.saving.register_keras_serializable(package="crnn")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, computed in training by TensorFlow's one fused kernel.

    Keras 3 normalises through separate moment, subtract and scale ops, whose gradients made batch
    normalisation cost about as much as the convolutions themselves on a CPU; the fused op (oneDNN's, which
    train turns on: config.TRAINING_ENV) does the same arithmetic in one pass. Same variables, same moving
    averages (of the biased batch variance, as Keras keeps them), same inference path.
    """

    def call(self, inputs, training=None, mask=None):
        if not training or not self.trainable or inputs.dtype != tf.float32 or len(inputs.shape) != 4:
            return super().call(inputs, training=training, mask=mask)
        empty = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=self.gamma,
            offset=self.beta,
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        # The fused op returns the Bessel-corrected variance; Keras averages the biased one.
        n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * (n - 1.0) / n
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return y


@keras.saving.register_keras_serializable(package="crnn")
class FusedLSTM(keras.layers.LSTM):
    """Keras' LSTM, computed by TensorFlow's fused sequence kernel (BlockLSTM) where it can be.

    Keras 3 steps a while loop through time on a CPU, a dozen small ops per step in each direction and
    again in the gradient; the fused kernel runs the whole sequence, and its gradient, in one op each. Same
    variables, same gates (i, f, c, o; tanh and sigmoid), same input dropout (one mask per sequence), same
    outputs to float rounding: weights saved from either layer load into the other. Anything the kernel
    does not do (masks, initial or returned states, recurrent dropout, other activations) takes Keras' path.
    """

    def call(self, sequences, initial_state=None, mask=None, training=False):
        cell = self.cell
        if (
            mask is not None
            or initial_state is not None
            or self.return_state
            or not self.return_sequences
            or cell.recurrent_dropout
            or not cell.use_bias
            or cell.activation is not keras.activations.tanh
            or cell.recurrent_activation is not keras.activations.sigmoid
        ):
            return super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        x = sequences
        if training and cell.dropout > 0:  # one input mask per sequence, as Keras' cell draws it
            keep = keras.random.dropout(tf.ones_like(x[:, :1]), cell.dropout, seed=cell.seed_generator)
            x = x * keep
        x = tf.transpose(x, [1, 0, 2])  # the kernel is time-major
        if self.go_backwards:
            x = tf.reverse(x, [0])
        zeros = tf.zeros([tf.shape(x)[1], cell.units], x.dtype)
        no_peephole = tf.zeros([cell.units], x.dtype)
        # The kernel's gates are (i, c, f, o), Keras' (i, f, c, o). BlockLSTMV2 would take Keras' order, but
        # its registered gradient disagrees with its forward pass (TF 2.17: wrong input and weight gradients),
        # so the first version it is, with no forget bias added and no clipping.
        i, f, c, o = tf.split(tf.concat([cell.kernel, cell.recurrent_kernel], axis=0), 4, axis=1)
        bi, bf, bc, bo = tf.split(cell.bias, 4)
        outputs = tf.raw_ops.BlockLSTM(
            seq_len_max=tf.cast(tf.shape(x)[0], tf.int64),
            x=x,
            cs_prev=zeros,
            h_prev=zeros,
            w=tf.concat([i, c, f, o], axis=1),
            wci=no_peephole,
            wcf=no_peephole,
            wco=no_peephole,
            b=tf.concat([bi, bc, bf, bo], axis=0),
            forget_bias=0.0,
            cell_clip=-1.0,
            use_peephole=False,
        )
        # Like Keras, a backward layer returns its outputs in the order it read them (Bidirectional
        # reverses them back).
        return tf.transpose(outputs[6], [1, 0, 2])


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape; no defaults here (they are train's MLproject parameters)."""

    conv_filters: tuple[int, ...]  # one conv block (conv 3x3, batch norm, relu, max pool) per entry
    width_pools: int  # how many of the blocks (the first ones) halve the width too; the others halve the height only
    column_pool: bool  # collapse each column of CNN features by its max over height, instead of flattening it
    dense_units: int  # per-column projection before the BiLSTMs
    rnn_units: tuple[int, ...]  # one BiLSTM per entry
    dropout: float
    shortcut: float  # weight of the auxiliary CTC head on the CNN features in training (0 = none)

    def time_steps(self, width: int) -> int:
        return width // 2**self.width_pools

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> "ModelConfig":
        """From train's parameters as MLproject and `mlflow run` spell them ("32,64", "true", "0.1")."""
        return cls(
            conv_filters=parse_ints(params["conv_filters"]),
            width_pools=int(params["width_pools"]),
            column_pool=parse_bool(params["column_pool"]),
            dense_units=int(params["dense_units"]),
            rnn_units=parse_ints(params["rnn_units"]),
            dropout=float(params["dropout"]),
            shortcut=float(params["shortcut"]),
        )


def parse_ints(value: object) -> tuple[int, ...]:
    """ "32,64" (or a sequence) -> (32, 64); ValueError unless positive integers."""
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[arg-type]
    try:
        ints = tuple(int(v) for v in items if str(v).strip())
    except ValueError:
        ints = ()
    if not ints or min(ints) < 1:
        raise ValueError(f"expected comma-separated positive integers like 32,64, got {value!r}")
    return ints


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"expected true or false, got {value!r}")
    return text in ("true", "1", "yes")


def check_shape(config: ModelConfig, height: int, width: int) -> None:
    """ValueError unless the canvas fits the pooling of the conv blocks."""
    if not 0 <= config.width_pools <= len(config.conv_filters):
        raise ValueError(f"width_pools must be between 0 and the {len(config.conv_filters)} conv blocks")
    if height % 2 ** len(config.conv_filters) or width % 2**config.width_pools:
        raise ValueError(
            f"image size {height}x{width} must be divisible by 2**{len(config.conv_filters)} in height and "
            f"2**{config.width_pools} in width (one pooling per conv block)"
        )


def build_for_training(
    config: ModelConfig, height: int, width: int, num_classes: int, windowed: bool = False
) -> tuple[keras.Model, keras.Model]:
    """(recogniser, trainer): the recogniser maps float32 images [B, height, width, 1] in [0, 1] to logits
    [B, time steps, num_classes]; the trainer shares its layers and adds the shortcut head's logits as a second
    output when config.shortcut > 0 (else it is the recogniser itself). A `windowed` model takes any width
    that the pooling divides (lines, read in windows as wide as their ink: imaging.crop_window); the
    weights are the same either way."""
    check_shape(config, height, width)
    inputs = keras.Input((height, None if windowed else width, 1), name="image")
    # Columns become time steps: put width first so each step sees one vertical slice.
    x = keras.layers.Permute((2, 1, 3))(inputs)
    for i, filters in enumerate(config.conv_filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"conv{i + 1}")(x)
        # Keras' default momentum (0.99) averages the batch statistics over ~100 steps: a small dataset's first
        # epochs would be validated with the initialisation's statistics and read nothing although training
        # already reads. 0.9 is PyTorch's default, which the HTR references train with.
        x = FusedBatchNorm(momentum=0.9, name=f"bn{i + 1}")(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D((2, 2) if i < config.width_pools else (1, 2), name=f"pool{i + 1}")(x)
    rows = height // 2 ** len(config.conv_filters)
    if config.column_pool:
        x = keras.layers.MaxPooling2D((1, rows), name="column_pool")(x)
        x = keras.layers.Reshape((-1, config.conv_filters[-1]))(x)  # time steps: width / 2**width_pools
    else:
        x = keras.layers.Reshape((-1, rows * config.conv_filters[-1]))(x)
    features = x
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = projected = keras.layers.Dropout(config.dropout)(x)
    for i, units in enumerate(config.rnn_units):
        x = keras.layers.Bidirectional(
            # named as Keras' LSTM is, so the variable paths (bilstm1/forward_lstm/lstm_cell/kernel) are those
            # of models trained before the fused layer: init_model matches a parent's weights by path
            FusedLSTM(units, return_sequences=True, dropout=config.dropout, name="lstm"),
            name=f"bilstm{i + 1}",
        )(x)
    # The output reads the per-column CNN features beside the BiLSTMs' context: CTC can learn characters
    # from the convolutions while the recurrent layers are still near their initialisation, which is most
    # of what kept a new model at CER 1.0 for its first epochs (README, "Learning from the first epochs").
    x = keras.layers.Concatenate(name="context_and_features")([x, projected])
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    recogniser = keras.Model(inputs, logits, name="crnn")
    if config.shortcut <= 0:
        return recogniser, recogniser
    shortcut = keras.layers.Conv1D(num_classes, 3, padding="same", name="shortcut")(features)
    return recogniser, keras.Model(inputs, {"logits": logits, "shortcut": shortcut}, name="crnn_trainer")


def build(config: ModelConfig, height: int, width: int, num_classes: int, windowed: bool = False) -> keras.Model:
    """The recogniser alone: float32 images [B, height, width, 1] in [0, 1] -> logits [B, time steps, num_classes]."""
    return build_for_training(config, height, width, num_classes, windowed)[0]


def is_windowed(model: keras.Model) -> bool:
    """Whether the model reads windows of any width (built windowed) rather than its canvas's width."""
    return model.input_shape[2] is None


def read_canvases(model: keras.Model, canvases: tf.Tensor) -> tf.Tensor:
    """uint8 canvases [B, H, W, 1] -> logits [B, time steps of W, C], as every reader of a trained model calls
    it (the exported model, calibration, plots).

    A windowed model reads each canvas alone in its own ink window, as training batched it with lines of
    the same window width, and its logits are padded with certain blanks to the canvas's time steps
    (which change no reading, score or loss). One call per image costs the batching, but a line's reading
    never depends on what it was batched with.
    """
    if not is_windowed(model):
        return model(imaging.to_model_input(canvases), training=False)
    full = tf.shape(canvases)[2]

    def one(canvas: tf.Tensor) -> tf.Tensor:
        window = imaging.crop_window(canvas[tf.newaxis])
        logits = model(imaging.to_model_input(window), training=False)[0]  # [t, C]
        steps = full // (tf.shape(window)[2] // tf.shape(logits)[0])  # the canvas's time steps
        before = (steps - tf.shape(logits)[0]) // 2
        blank = tf.one_hot(BLANK_INDEX, tf.shape(logits)[1], on_value=0.0, off_value=-1e4)[tf.newaxis]
        pad = lambda n: tf.tile(blank, [n, 1])  # noqa: E731
        return tf.concat([pad(before), logits, pad(steps - tf.shape(logits)[0] - before)], axis=0)

    return tf.map_fn(one, canvases, fn_output_signature=tf.TensorSpec([None, None], tf.float32))
