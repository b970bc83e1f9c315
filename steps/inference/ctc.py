"""CTC: the loss that trains the model, the decoding (logits -> text, confidence) that the exported model runs,
and lexicon-constrained decoding (an option: the best beam path that is a word of the lexicon)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from steps.inference import wordbeam
from steps.inference.charset import BLANK_INDEX

# A lexicon word is taken over the free reading unless it is less probable than this fraction of it: measured
# on held-out hands (README), a near miss of the right word is usually within 1e-3, a real out-of-lexicon word
# is not.
FALLBACK_LOG_RATIO = float(np.log(1e-3))


def decode(logits: tf.Tensor, characters: tf.Tensor, beam_width: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Model logits [B, T, C] -> (texts [B] string, raw score [B] float32 in [0, 1]).

    beam_width 0 is greedy (best path); > 0 is beam search. `characters` is a string tensor of the
    charset's characters, index i holding class i + 1 (class 0 is the blank). The score is frame_score
    (the weakest frame), which steps/inference/calibration.py maps to a probability that the word is right.
    Works eagerly and inside tf.function (beam_width must then be static).
    """
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    batch, steps = tf.shape(log_probs)[0], tf.shape(log_probs)[1]
    lengths = tf.fill([batch], steps)
    if beam_width > 0:
        decoded, _ = keras.ops.ctc_decode(
            log_probs, lengths, strategy="beam_search", beam_width=beam_width, top_paths=1, mask_index=BLANK_INDEX
        )
    else:
        decoded, _ = keras.ops.ctc_decode(log_probs, lengths, strategy="greedy", mask_index=BLANK_INDEX)
    ids = tf.cast(decoded[0], tf.int32)  # [B, T'], padded with -1
    valid = ids > BLANK_INDEX
    chars = tf.gather(tf.concat([[""], characters], 0), tf.where(valid, ids, 0))
    texts = tf.strings.reduce_join(tf.where(valid, chars, ""), axis=-1)
    return texts, frame_score(log_probs)


def frame_score(log_probs: tf.Tensor) -> tf.Tensor:
    """Log-probabilities [B, T, C] -> [B]: over the frames, the least probability that a frame leaves the
    greedy reading unchanged.

    A frame keeps the reading if it emits its best class, and also if it emits a class that merges with a
    neighbour: at a blank frame, the character of the frame before or after (repeats collapse); at a
    character frame, the blank when a neighbouring frame emits the same character. One uncertain frame is
    enough to misread a word, so the weakest frame decides; the probability of the whole path instead
    shrinks with every frame of a long, perfectly read word and counts boundary hesitations as doubt.
    """
    probs = tf.exp(log_probs)
    best = tf.argmax(probs, axis=-1, output_type=tf.int32)  # [B, T]
    before = tf.pad(best[:, :-1], [[0, 0], [1, 0]])  # the blank beyond either end
    after = tf.pad(best[:, 1:], [[0, 0], [0, 1]])
    at = lambda classes: tf.gather(probs, classes, batch_dims=2)  # noqa: E731  [B, T] probability of classes
    blank = probs[..., BLANK_INDEX]
    is_char = lambda c: tf.cast(c != BLANK_INDEX, probs.dtype)  # noqa: E731
    at_blank = blank + is_char(before) * at(before) + is_char(after) * tf.cast(after != before, probs.dtype) * at(after)
    at_char = at(best) + blank * tf.cast((before == best) | (after == best), probs.dtype)
    keeps = tf.where(best == BLANK_INDEX, at_blank, at_char)
    return tf.clip_by_value(tf.reduce_min(keeps, axis=-1), 0.0, 1.0)


def greedy_numpy(logits: np.ndarray, characters: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """decode(logits, characters, 0) in NumPy: logits [B, T, C] -> (texts, raw scores [B] float32).

    The same best path and frame_score, without a TensorFlow call: for one word that call costs 0.6 ms of
    the 5 a served request may take, this a tenth of it. `characters` as Charset.characters (class i + 1).
    """
    x = np.asarray(logits, np.float32)
    exp = np.exp(x - x.max(axis=-1, keepdims=True))
    probs = exp / exp.sum(axis=-1, keepdims=True)
    best = x.argmax(axis=-1)  # [B, T]; the first of equal classes, as tf.argmax
    texts = []
    for path in best.tolist():
        kept = [c for t, c in enumerate(path) if c != BLANK_INDEX and (t == 0 or c != path[t - 1])]
        texts.append("".join(characters[c - 1] for c in kept))
    if best.shape[1] == 0:
        return texts, np.ones(len(texts), np.float32)
    blank_beyond = np.full((len(best), 1), BLANK_INDEX)
    before = np.concatenate([blank_beyond, best[:, :-1]], 1)
    after = np.concatenate([best[:, 1:], blank_beyond], 1)
    at = lambda classes: np.take_along_axis(probs, classes[..., None], -1)[..., 0]  # noqa: E731  [B, T]
    blank = probs[..., BLANK_INDEX]
    at_blank = (
        blank
        + np.where(before != BLANK_INDEX, at(before), 0)
        + np.where((after != BLANK_INDEX) & (after != before), at(after), 0)
    )
    at_char = at(best) + np.where((before == best) | (after == best), blank, 0)
    keeps = np.where(best == BLANK_INDEX, at_blank, at_char)
    return texts, np.clip(keeps.min(axis=-1), 0.0, 1.0).astype(np.float32)


def loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Keras loss: labels [B, L] int padded with the blank index 0 -> [B] negative log-likelihoods.

    Computed by TensorFlow's CTC kernel on sparse labels, not keras.ops.ctc_loss: with dense labels that
    runs a forward-backward of TF ops stepping through time, which on a CPU cost 10x the kernel for a word
    and 35x for a line (README, "Performance"), the same loss and gradients to float rounding. True lengths
    are the non-blank entries (keras issue 21876: passing the padded width trains on padding). A label that
    needs more time steps than the model has (repeats need a blank between them) contributes zero instead
    of stopping training; train refuses a training set with such labels beforehand (fit.check_feasible).
    """
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    # The kernel's blank is the last class; ours is class 0: rotate the classes and shift the labels.
    logits = tf.concat([logits[..., BLANK_INDEX + 1 :], logits[..., : BLANK_INDEX + 1]], axis=-1)
    sparse = tf.sparse.from_dense(labels)  # drops the blank padding
    sparse = tf.SparseTensor(sparse.indices, sparse.values - 1, sparse.dense_shape)
    logit_length = tf.fill([tf.shape(logits)[0]], tf.shape(logits)[1])
    return tf.compat.v1.nn.ctc_loss(
        sparse, logits, logit_length, time_major=False, ignore_longer_outputs_than_inputs=True
    )


class Lexicon:
    """A word list for constrained decoding; matching ignores case, so a sentence-initial capital still matches."""

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(w.strip().lower() for w in words if w.strip())
        if not self.words:
            raise ValueError("the lexicon is empty")
        self.prefixes = wordbeam.PrefixSet(self.words)

    @classmethod
    def load(cls, path: str | Path) -> "Lexicon":
        """One word per line, UTF-8 (blank lines ignored)."""
        try:
            return cls(Path(path).read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read lexicon {path}: {e}") from None

    def __contains__(self, text: str) -> bool:
        return text.lower() in self.words

    def __len__(self) -> int:
        return len(self.words)


def decode_lexicon(
    logits: tf.Tensor, characters: tf.Tensor, lexicon: Lexicon, beam_width: int = 10
) -> tuple[list[str], list[float]]:
    """Like decode (raw scores), with a word beam search: the most probable lexicon word that a beam of
    `beam_width` paths constrained to the lexicon's prefixes reaches. When that word is far less probable than
    the free beam's best reading (below FALLBACK_RATIO of it), or no word is reached, the free reading wins,
    so an out-of-lexicon word is still read. Eager only."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1).numpy()
    chars = [c.decode("utf-8") for c in characters.numpy()]
    weakest = frame_score(tf.constant(log_probs)).numpy()
    out, confidence = [], []
    for sample, frames in zip(log_probs, weakest):
        text, free = wordbeam.beam_search(sample, chars, beam_width, None)[0]
        score = free
        word = wordbeam.best_word(sample, chars, beam_width, lexicon.prefixes)
        if word is not None and word[1] >= free + FALLBACK_LOG_RATIO:
            text, score = word
        out.append(text)
        # A lexicon word less probable than the free reading is scored down by how much less probable it is.
        confidence.append(float(min(1.0, max(0.0, frames * np.exp(min(0.0, score - free))))))
    return out, confidence
