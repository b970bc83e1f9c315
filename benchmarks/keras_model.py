"""The baseline model: the Keras IAM example's, its loss, its training set-up and its greedy decoding.

Source: keras-io, examples/vision/handwriting_recognition.py (A_K_Nain and Sayak Paul), the Keras 3
version; its input pipeline is in keras_baseline.py. Kept as published:

- build_model: image [W=128, H=32, 1] (read width-first) -> Conv2D 32 3x3 relu he_normal + MaxPool 2x2 ->
  Conv2D 64 + MaxPool 2x2 -> reshape to [W/4, (H/4) * 64] -> Dense 64 relu -> Dropout 0.2 ->
  BiLSTM 128 (dropout 0.25) -> BiLSTM 64 (dropout 0.25) -> Dense(len(vocabulary) + 2, softmax) -> CTCLayer;
  Adam with its default learning rate 1e-3; batch 64;
- CTCLayer / ctc_batch_cost: tf.compat.v1.nn.ctc_loss over log(softmax + epsilon), the blank being the last
  class, with label_length = the *padded* label length. That is the example's bug and it is kept: the target
  of every word is its characters followed by padding tokens 99, an index outside the softmax (TF's CPU CTC
  kernel does not range-check it, and does not refuse a target longer than the 32 time steps either);
- decode_batch_predictions: greedy CTC decoding (blank = last class, as keras.backend.ctc_decode, which the
  example was written for), truncated to max_len, mapped back through StringLookup(invert=True).

Where the benchmark deviates, each time in the example's favour or for a like-for-like figure:
- early stopping: the IAM example trains a fixed 10 epochs ("at least 50" for good results) and has none;
  the brief's patience 10 on val_loss with restore_best_weights is the one of its sibling, the captcha OCR
  example. It is used here, and the best val_loss weights are also restored when the time budget (not the
  patience) ends training, since ours keeps its best-val-CER weights too;
- decoded indices with no character (the OOV index 0 and the spare class) become "" rather than "[UNK]",
  so that an unknown prediction costs one edit, not five;
- validation words longer than the longest training word (the example's `vectorize_label` would fail on
  them) are left out of its validation set; the test CER covers every test word.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

EARLY_STOPPING_PATIENCE = 10  # the captcha OCR example's (see the module docstring)
BATCH_SIZE = 64  # the example's


def ctc_batch_cost(y_true, y_pred, input_length, label_length):
    """The example's ctc_batch_cost: per-sample CTC loss [B, 1] of softmax outputs, the blank the last class."""
    label_length = ops.cast(ops.squeeze(label_length, axis=-1), dtype="int32")
    input_length = ops.cast(ops.squeeze(input_length, axis=-1), dtype="int32")
    # = the example's ctc_label_dense_to_sparse: every position below label_length, in row-major order.
    indices = tf.where(tf.sequence_mask(label_length, tf.shape(y_true)[1]))
    sparse_labels = tf.SparseTensor(
        indices, ops.cast(tf.gather_nd(y_true, indices), "int32"), ops.cast(ops.shape(y_true), "int64")
    )
    y_pred = ops.log(ops.transpose(y_pred, axes=[1, 0, 2]) + keras.backend.epsilon())
    return ops.expand_dims(
        tf.compat.v1.nn.ctc_loss(inputs=y_pred, labels=sparse_labels, sequence_length=input_length), 1
    )


class CTCLayer(keras.layers.Layer):
    """The example's endpoint layer: adds the CTC loss of (labels, softmax) and passes the softmax on."""

    def call(self, y_true, y_pred):
        batch_len = ops.cast(ops.shape(y_true)[0], dtype="int64")
        input_length = ops.cast(ops.shape(y_pred)[1], dtype="int64")
        label_length = ops.cast(ops.shape(y_true)[1], dtype="int64")  # the padded length: the example's bug
        input_length = input_length * ops.ones(shape=(batch_len, 1), dtype="int64")
        label_length = label_length * ops.ones(shape=(batch_len, 1), dtype="int64")
        # Unreduced, as published: Keras sums it over the batch (the example's log starts near 7,900 per batch).
        self.add_loss(ctc_batch_cost(y_true, y_pred, input_length, label_length))
        return y_pred


def build_model(image_width: int, image_height: int, vocabulary_size: int) -> keras.Model:
    """The example's build_model, compiled; vocabulary_size = len(char_to_num.get_vocabulary())."""
    input_img = keras.Input(shape=(image_width, image_height, 1), name="image")
    labels = keras.layers.Input(name="label", shape=(None,))
    x = keras.layers.Conv2D(
        32, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same", name="Conv1"
    )(input_img)
    x = keras.layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = keras.layers.Conv2D(
        64, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same", name="Conv2"
    )(x)
    x = keras.layers.MaxPooling2D((2, 2), name="pool2")(x)
    x = keras.layers.Reshape(target_shape=((image_width // 4), (image_height // 4) * 64), name="reshape")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense1")(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(128, return_sequences=True, dropout=0.25))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True, dropout=0.25))(x)
    # +2: the example's "two special tokens introduced by the CTC loss" (the blank is the last class).
    x = keras.layers.Dense(vocabulary_size + 2, activation="softmax", name="dense2")(x)
    output = CTCLayer(name="ctc_loss")(labels, x)
    model = keras.models.Model(inputs=[input_img, labels], outputs=output, name="handwriting_recognizer")
    model.compile(optimizer=keras.optimizers.Adam())
    return model


def prediction_model(model: keras.Model) -> keras.Model:
    """The example's inference model: image -> the softmax of dense2."""
    return keras.models.Model(model.get_layer(name="image").output, model.get_layer(name="dense2").output)


def decode_batch_predictions(pred: np.ndarray, vocabulary: list[str], max_len: int) -> list[str]:
    """Greedy CTC decoding of softmax outputs [B, T, C] (blank = C - 1) -> texts; index i names vocabulary[i]."""
    input_len = np.ones(pred.shape[0]) * pred.shape[1]
    decoded, _ = ops.ctc_decode(pred, input_len, strategy="greedy", mask_index=pred.shape[-1] - 1)
    results = ops.convert_to_numpy(decoded[0])[:, :max_len]
    # vocabulary[0] is StringLookup's OOV token: it, and the spare class past the vocabulary, read as nothing.
    chars = [""] + list(vocabulary[1:])
    return ["".join(chars[i] if 0 <= i < len(chars) else "" for i in res if i != -1) for res in results]


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `deadline` (time.perf_counter()) has passed, checked after every batch; at the end
    restores the best weights `early_stopping` kept, if it kept any."""

    def __init__(self, deadline: float, early_stopping: keras.callbacks.EarlyStopping):
        super().__init__()
        self.deadline, self.early_stopping = deadline, early_stopping
        self.stopped_by_budget = False

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() >= self.deadline:
            self.stopped_by_budget = True
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        best = self.early_stopping.best_weights
        if best is not None and self.early_stopping.restore_best_weights:
            self.model.set_weights(best)


def early_stopping() -> keras.callbacks.EarlyStopping:
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=EARLY_STOPPING_PATIENCE, restore_best_weights=True
    )
