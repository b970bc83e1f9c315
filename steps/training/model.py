"""The recogniser: a CNN + BiLSTM emitting per-column character logits, trained with CTC.

Default shape follows the Keras IAM example (2 conv blocks, dense, 2 BiLSTMs), configurable in
depth and width. The model outputs logits over blank (class 0) + the charset's characters; labels
are padded with 0, which CTC never sees because each label's true length is passed (keras issue
21876: passing the padded width as label_length trains on padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape; no defaults here (they are train's MLproject parameters)."""

    conv_filters: tuple[int, ...]  # one conv block (conv, batch norm, relu, 2x2 max pool) per entry
    dense_units: int
    rnn_units: tuple[int, ...]  # one BiLSTM per entry
    dropout: float


def build(config: ModelConfig, height: int, width: int, num_classes: int) -> keras.Model:
    """float32 images [B, height, width, 1] in [0, 1] -> logits [B, width / 2**len(conv_filters), num_classes]."""
    conv_filters, rnn_units, dropout = config.conv_filters, config.rnn_units, config.dropout
    if width % 2 ** len(conv_filters) or height % 2 ** len(conv_filters):
        raise ValueError(
            f"image size {height}x{width} must be divisible by 2**{len(conv_filters)} (one pooling per conv block)"
        )
    inputs = keras.Input((height, width, 1), name="image")
    # Columns become time steps: put width first so each step sees one vertical slice.
    x = keras.layers.Permute((2, 1, 3))(inputs)
    for i, filters in enumerate(conv_filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"conv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    steps, features = width // 2 ** len(conv_filters), (height // 2 ** len(conv_filters)) * conv_filters[-1]
    x = keras.layers.Reshape((steps, features))(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout)(x)
    for i, units in enumerate(rnn_units):
        x = keras.layers.Bidirectional(
            keras.layers.LSTM(units, return_sequences=True, dropout=dropout), name=f"bilstm{i + 1}"
        )(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="crnn")
