"""CTC decoding and the error rates, shared by train (validation CER), evaluate and the exported model.

CER is sum(edit distance) / sum(reference characters) over a split, and WER the same over
whitespace-separated words: per-sample averages and padded comparisons (the Keras example's
metric) overstate or understate errors depending on word length.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from steps.charset import BLANK_INDEX


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
        decoded, scores = keras.ops.ctc_decode(log_probs, lengths, strategy="beam_search", beam_width=beam_width,
                                               top_paths=1, mask_index=BLANK_INDEX)
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


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (characters or words)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """{cer, wer, char_errors, chars, word_errors, words} aggregated over the pairs."""
    assert len(references) == len(hypotheses)
    char_errors = sum(edit_distance(r, h) for r, h in zip(references, hypotheses))
    chars = sum(len(r) for r in references)
    word_errors = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    words = sum(len(r.split()) for r in references)
    return {"cer": char_errors / max(chars, 1), "wer": word_errors / max(words, 1),
            "char_errors": char_errors, "chars": chars, "word_errors": word_errors, "words": words}


def alignment(reference: str, hypothesis: str) -> list[tuple[str, str]]:
    """Character pairs of a minimal edit path: (r, h) substitutions/matches, (r, "") deletions, ("", h) insertions."""
    n, m = len(reference), len(hypothesis)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1,
                             cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]))
    pairs, i, j = [], n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            pairs.append((reference[i - 1], hypothesis[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((reference[i - 1], ""))
            i -= 1
        else:
            pairs.append(("", hypothesis[j - 1]))
            j -= 1
    return pairs[::-1]
