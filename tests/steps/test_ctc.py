"""steps.ctc: decoding against hand-computed paths, and error rates against hand-counted edits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from steps import ctc

CHARS = ["e", "h", "l", "o"]          # class i + 1; class 0 is the blank
CLS = {"-": 0, **{c: i + 1 for i, c in enumerate(CHARS)}}
CHARACTERS = tf.constant(CHARS)


def logits_for(paths: list[str], peak: float = 0.9) -> np.ndarray:
    """Log-probabilities [B, T, C] whose best path is `paths[b]` ('-' is blank); each step's best class has `peak`."""
    steps = max(len(p) for p in paths)
    rest = (1.0 - peak) / (len(CHARS))
    probs = np.full((len(paths), steps, len(CHARS) + 1), rest, np.float64)
    for b, path in enumerate(paths):
        path = path.ljust(steps, "-")
        for t, c in enumerate(path):
            probs[b, t, CLS[c]] = peak
    return np.log(probs).astype(np.float32)


def texts(tensor: tf.Tensor) -> list[str]:
    return [t.decode("utf-8") for t in tensor.numpy()]


@pytest.mark.parametrize("path, expected", [
    ("hhe-l-lo", "hello"),     # repeats collapse; a blank separates the doubled l
    ("hhellllo", "helo"),      # without a blank a doubled letter collapses to one
    ("--h--e--", "he"),
    ("hel-lo--", "hello"),
    ("--------", ""),          # all blank -> empty string
    ("l-l-l-l-", "llll"),
    ("o", "o"),
])
def test_greedy_decode_hand_computed(path, expected):
    out, confidence = ctc.decode(tf.constant(logits_for([path])), CHARACTERS)
    assert texts(out) == [expected]
    c = float(confidence.numpy()[0])
    assert 0.0 < c <= 1.0
    assert c == pytest.approx(0.9 ** len(path), rel=1e-4)  # probability of the best path


def test_greedy_decode_batch_of_different_lengths():
    paths = ["hhe-l-lo", "--------", "o-------", "he------"]
    out, confidence = ctc.decode(tf.constant(logits_for(paths)), CHARACTERS)
    assert texts(out) == ["hello", "", "o", "he"]
    assert confidence.shape == (4,) and confidence.dtype == tf.float32


def test_confidence_is_lower_for_a_less_certain_path():
    _, sure = ctc.decode(tf.constant(logits_for(["he-llo"], peak=0.99))[:, :6], CHARACTERS)
    _, unsure = ctc.decode(tf.constant(logits_for(["he-llo"], peak=0.6))[:, :6], CHARACTERS)
    assert 0.0 < float(unsure[0]) < float(sure[0]) <= 1.0


def test_decode_does_not_need_normalised_logits():
    raw = logits_for(["hhe-l-lo"]) * 3.0 + 17.0  # any scale/shift of logits: softmax is applied inside
    out, confidence = ctc.decode(tf.constant(raw), CHARACTERS)
    assert texts(out) == ["hello"] and 0.0 < float(confidence[0]) <= 1.0


@pytest.mark.parametrize("beam_width", [1, 5, 10])
def test_beam_search_agrees_with_greedy_on_a_peaked_distribution(beam_width):
    paths = ["hhe-l-lo", "--------", "o-h-e---", "lol-l---", "-e-e-e-e"]
    logits = tf.constant(logits_for(paths, peak=0.97))
    greedy, greedy_conf = ctc.decode(logits, CHARACTERS)
    beam, beam_conf = ctc.decode(logits, CHARACTERS, beam_width=beam_width)
    assert texts(greedy) == ["hello", "", "ohe", "loll", "eeee"]
    assert texts(beam) == texts(greedy)
    # Beam scores a label sequence over all its paths, so it is at least the best single path's probability.
    assert np.all(beam_conf.numpy() >= greedy_conf.numpy() - 1e-5)
    assert np.all((beam_conf.numpy() > 0) & (beam_conf.numpy() <= 1))


def test_beam_search_finds_the_label_that_greedy_misses():
    # Classic case: best single path is blank-blank, but "h" summed over its paths is more likely.
    # classes [blank, e, h, l, o]; 0.3 of the mass is spread over e/l/o so that no single one beats blank
    p = np.array([[[0.4, 0.1, 0.3, 0.1, 0.1], [0.4, 0.1, 0.3, 0.1, 0.1]]])
    logits = tf.constant(np.log(p / p.sum(-1, keepdims=True)).astype(np.float32))
    assert texts(ctc.decode(logits, CHARACTERS)[0]) == [""]
    # P("") = 0.16, P("h") = 0.3*0.3 + 0.3*0.4 + 0.4*0.3 = 0.33
    assert texts(ctc.decode(logits, CHARACTERS, beam_width=4)[0]) == ["h"]


def test_decode_works_inside_tf_function():
    logits = tf.constant(logits_for(["hhe-l-lo", "o-------"]))
    fn = tf.function(lambda x: ctc.decode(x, CHARACTERS), input_signature=[tf.TensorSpec([None, None, 5])])
    out, _ = fn(logits)
    assert texts(out) == ["hello", "o"]


def test_decode_of_multibyte_characters():
    chars = tf.constant(["é", "ß"])
    probs = np.full((1, 4, 3), 0.05)
    for t, c in enumerate([1, 0, 1, 2]):
        probs[0, t, c] = 0.9
    out, _ = ctc.decode(tf.constant(np.log(probs).astype(np.float32)), chars)
    assert texts(out) == ["ééß"]


# --- edit distance, error rates, alignment ----------------------------------------------------

@pytest.mark.parametrize("a, b, d", [
    ("kitten", "sitting", 3), ("", "", 0), ("", "abc", 3), ("abc", "", 3), ("abc", "abc", 0),
    ("cat", "cut", 1), ("cat", "cart", 1), ("cat", "ct", 1), ("abc", "cba", 2), ("flaw", "lawn", 2),
    (["the", "cat"], ["the", "hat"], 1), (["a", "b", "c"], ["c"], 2),
])
def test_edit_distance(a, b, d):
    assert ctc.edit_distance(a, b) == d
    assert ctc.edit_distance(b, a) == d


@pytest.mark.parametrize("ref, hyp, char_errors", [
    ("cat", "cut", 1),   # substitution
    ("cat", "cart", 1),  # insertion
    ("cat", "ct", 1),    # deletion
    ("cat", "", 3),      # empty hypothesis: every character deleted
    ("cat", "cat", 0),
])
def test_error_rates_single_word(ref, hyp, char_errors):
    r = ctc.error_rates([ref], [hyp])
    assert r["char_errors"] == char_errors and r["chars"] == 3
    assert r["cer"] == pytest.approx(char_errors / 3)
    assert r["words"] == 1 and r["word_errors"] == (0 if ref == hyp else 1)
    assert r["wer"] == r["word_errors"]


def test_error_rates_empty_hypothesis_is_cer_and_wer_one():
    r = ctc.error_rates(["hello", "world"], ["", ""])
    assert r["cer"] == 1.0 and r["wer"] == 1.0


def test_error_rates_empty_reference_counts_insertions():
    r = ctc.error_rates(["abc", ""], ["abc", "xy"])
    assert r["char_errors"] == 2 and r["chars"] == 3
    assert r["cer"] == pytest.approx(2 / 3)
    assert r["word_errors"] == 1 and r["words"] == 1 and r["wer"] == 1.0


def test_error_rates_all_empty_references_do_not_divide_by_zero():
    r = ctc.error_rates([""], ["ab"])
    assert r["chars"] == 0 and r["char_errors"] == 2 and math.isfinite(r["cer"])
    assert ctc.error_rates([""], [""])["cer"] == 0.0


def test_wer_over_words():
    r = ctc.error_rates(["the quick brown fox"], ["the quack brown"])
    assert r["word_errors"] == 2 and r["words"] == 4 and r["wer"] == 0.5  # quack (sub), fox (del)
    assert r["char_errors"] == 5 and r["chars"] == 19                      # i->a, " fox" deleted
    assert r["cer"] == pytest.approx(5 / 19)


def test_error_rates_are_summed_over_the_split_not_averaged_per_sample():
    r = ctc.error_rates(["a", "abcdefghij"], ["b", "abcdefghij"])
    assert r["cer"] == pytest.approx(1 / 11)  # a per-sample mean would say 0.5
    assert r["wer"] == pytest.approx(1 / 2)


def test_error_rates_need_pairs():
    with pytest.raises(AssertionError):
        ctc.error_rates(["a", "b"], ["a"])


@pytest.mark.parametrize("ref, hyp, pairs", [
    ("cat", "cut", [("c", "c"), ("a", "u"), ("t", "t")]),
    ("cat", "ct", [("c", "c"), ("a", ""), ("t", "t")]),
    ("cat", "cart", [("c", "c"), ("a", "a"), ("", "r"), ("t", "t")]),
    ("", "ab", [("", "a"), ("", "b")]),
    ("ab", "", [("a", ""), ("b", "")]),
    ("", "", []),
])
def test_alignment_hand_computed(ref, hyp, pairs):
    assert ctc.alignment(ref, hyp) == pairs


@pytest.mark.parametrize("ref, hyp", [("kitten", "sitting"), ("handwriting", "hndwritting"), ("abc", "xyz"),
                                      ("the quick", "th quick!"), ("a", "bbbb")])
def test_alignment_is_a_minimal_edit_path(ref, hyp):
    pairs = ctc.alignment(ref, hyp)
    assert "".join(r for r, _ in pairs) == ref
    assert "".join(h for _, h in pairs) == hyp
    assert all(r or h for r, h in pairs)
    assert sum(r != h for r, h in pairs) == ctc.edit_distance(ref, hyp)
