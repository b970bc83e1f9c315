"""CTC: the loss that trains the model and the decoding (logits -> text, confidence) that the exported model runs."""

from __future__ import annotations

import keras
import tensorflow as tf

from steps.inference.charset import BLANK_INDEX


def decode(logits: tf.Tensor, characters: tf.Tensor, beam_width: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Model logits [B, T, C] -> (texts [B] string, confidence [B] float32 in [0, 1]).

    beam_width 0 is greedy (best path); > 0 is beam search. `characters` is a string tensor of the
    charset's characters, index i holding class i + 1 (class 0 is the blank). The confidence is the
    probability of the decoded path. Works eagerly and inside tf.function (beam_width must then be static).
    """
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    batch, steps = tf.shape(log_probs)[0], tf.shape(log_probs)[1]
    lengths = tf.fill([batch], steps)
    if beam_width > 0:
        decoded, scores = keras.ops.ctc_decode(
            log_probs, lengths, strategy="beam_search", beam_width=beam_width, top_paths=1, mask_index=BLANK_INDEX
        )
        path_log_prob = scores[:, 0]
    else:
        decoded, scores = keras.ops.ctc_decode(log_probs, lengths, strategy="greedy", mask_index=BLANK_INDEX)
        path_log_prob = scores[:, 0]
    ids = tf.cast(decoded[0], tf.int32)  # [B, T'], padded with -1
    valid = ids > BLANK_INDEX
    chars = tf.gather(tf.concat([[""], characters], 0), tf.where(valid, ids, 0))
    texts = tf.strings.reduce_join(tf.where(valid, chars, ""), axis=-1)
    # Keras returns the greedy score as a log-probability-like sum; clip guards float rounding above 1.
    confidence = tf.clip_by_value(tf.exp(-tf.abs(path_log_prob)), 0.0, 1.0)
    return texts, confidence


def loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Keras loss: labels [B, L] int padded with the blank index 0; true lengths are counted, not assumed."""
    labels = tf.cast(labels, tf.int32)
    label_length = tf.reduce_sum(tf.cast(labels != BLANK_INDEX, tf.int32), axis=-1)
    logit_length = tf.fill([tf.shape(logits)[0]], tf.shape(logits)[1])
    return keras.ops.ctc_loss(labels, logits, label_length, logit_length, mask_index=BLANK_INDEX)
