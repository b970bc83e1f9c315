"""steps.inference.ctc: decoding against hand-computed paths."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from steps.inference import ctc, wordbeam

CHARS = ["e", "h", "l", "o"]  # class i + 1; class 0 is the blank
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


@pytest.mark.parametrize(
    "path, expected",
    [
        ("hhe-l-lo", "hello"),  # repeats collapse; a blank separates the doubled l
        ("hhellllo", "helo"),  # without a blank a doubled letter collapses to one
        ("--h--e--", "he"),
        ("hel-lo--", "hello"),
        ("--------", ""),  # all blank -> empty string
        ("l-l-l-l-", "llll"),
        ("o", "o"),
    ],
)
def test_greedy_decode_hand_computed(path, expected):
    out, confidence = ctc.decode(tf.constant(logits_for([path])), CHARACTERS)
    assert texts(out) == [expected]
    c = float(confidence.numpy()[0])
    assert c == pytest.approx(0.9, rel=1e-4)  # every frame's best class has 0.9: so has the weakest


def test_greedy_decode_batch_of_different_lengths():
    paths = ["hhe-l-lo", "--------", "o-------", "he------"]
    out, confidence = ctc.decode(tf.constant(logits_for(paths)), CHARACTERS)
    assert texts(out) == ["hello", "", "o", "he"]
    assert confidence.shape == (4,) and confidence.dtype == tf.float32


def test_confidence_is_lower_for_a_less_certain_path():
    _, sure = ctc.decode(tf.constant(logits_for(["he-llo"], peak=0.99))[:, :6], CHARACTERS)
    _, unsure = ctc.decode(tf.constant(logits_for(["he-llo"], peak=0.6))[:, :6], CHARACTERS)
    assert 0.0 < float(unsure[0]) < float(sure[0]) <= 1.0


def test_the_score_is_the_weakest_frame_not_the_length_of_the_word():
    logits = logits_for(["hhe-l-lo", "o-------"], peak=0.95)
    probs = np.exp(logits)
    probs[1, 3] = [0.4, 0.15, 0.15, 0.15, 0.15]  # one unsure frame (blank at 0.4) in the short word
    _, score = ctc.decode(tf.constant(np.log(probs)), CHARACTERS)
    assert float(score[0]) == pytest.approx(0.95, rel=1e-4)  # a long word read surely scores high
    assert float(score[1]) == pytest.approx(0.4, rel=1e-4)


def test_a_frame_torn_between_a_character_and_the_blank_beside_it_is_no_doubt():
    logits = logits_for(["hhe-l-lo", "hhe-l-lo"], peak=0.95)
    probs = np.exp(logits)
    probs[0, 1] = [0.45, 0.0125, 0.5, 0.0125, 0.025]  # the second 'h' or a blank: "hello" either way
    probs[1, 2] = [0.45, 0.5, 0.0125, 0.0125, 0.025]  # the only 'e' or a blank: "hllo" or "hello"
    out, score = ctc.decode(tf.constant(np.log(probs)), CHARACTERS)
    assert texts(out) == ["hello", "hello"]
    assert float(score[0]) == pytest.approx(0.95, rel=1e-4)  # the other frames decide
    assert float(score[1]) == pytest.approx(0.5, rel=1e-4)
    # a blank frame between two letters also keeps the reading if it emits either neighbour
    probs = np.exp(logits_for(["he-l"], peak=0.9))
    probs[0, 2] = [0.5, 0.3, 0.0, 0.2, 0.0]  # blank 0.5, 'e' (before) 0.3, 'l' (after) 0.2: nothing changes
    _, score = ctc.decode(tf.constant(np.log(probs + 1e-12)), CHARACTERS)
    assert float(score[0]) == pytest.approx(0.9, rel=1e-3)


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


# --- lexicon-constrained decoding ----------------------------------------------------------------------


def two_readings() -> np.ndarray:
    """One step whose best reading is 'h' (0.6) and second best 'e' (0.35)."""
    probs = np.array([[[0.01, 0.35, 0.6, 0.02, 0.02]]], np.float64)
    return np.log(probs).astype(np.float32)


def test_lexicon_prefers_the_best_path_that_is_a_word():
    assert ctc.decode_lexicon(two_readings(), CHARACTERS, ctc.Lexicon(["e"]), beam_width=5)[0] == ["e"]
    assert ctc.decode_lexicon(two_readings(), CHARACTERS, ctc.Lexicon(["H", "e"]), beam_width=5)[0] == ["h"]


def test_an_out_of_lexicon_word_is_still_read_by_the_free_beam():
    text, confidence = ctc.decode_lexicon(two_readings(), CHARACTERS, ctc.Lexicon(["zebra"]), beam_width=5)
    assert text == [texts(ctc.decode(two_readings(), CHARACTERS, beam_width=5)[0])[0]] == ["h"]
    assert 0.0 < confidence[0] <= 1.0


def test_a_lexicon_file_is_read_one_word_per_line(tmp_path):
    (tmp_path / "words.txt").write_text("Hello\n\nworld\n", encoding="utf-8")
    lexicon = ctc.Lexicon.load(tmp_path / "words.txt")
    assert len(lexicon) == 2 and "hello" in lexicon and "WORLD" in lexicon and "other" not in lexicon
    with pytest.raises(ValueError, match="cannot read lexicon"):
        ctc.Lexicon.load(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="empty"):
        ctc.Lexicon([" ", ""])


def near_miss() -> np.ndarray:
    """Two steps whose free readings are 'hl' (0.225), 'he' (0.21), 'el' (0.18), 'e' (0.176), ..."""
    probs = np.array([[[0.05, 0.4, 0.5, 0.03, 0.02], [0.02, 0.42, 0.01, 0.45, 0.1]]], np.float64)
    return np.log(probs / probs.sum(-1, keepdims=True)).astype(np.float32)


def test_the_word_beam_reaches_a_word_outside_the_free_beam():
    # the free beam's two best readings are 'hl' and 'he'; constrained to the lexicon's prefixes, a beam of
    # two paths keeps 'he' (a prefix of 'hello') and 'el', and 'el' is the word
    free = wordbeam.beam_search(near_miss()[0], CHARS, 2, None)
    assert [text for text, _ in free] == ["hl", "he"]
    lexicon = ctc.Lexicon(["el", "hello"])
    text, confidence = ctc.decode_lexicon(near_miss(), CHARACTERS, lexicon, beam_width=2)
    assert text == ["el"]
    # the raw score: the weakest frame (the 'l' at 0.45) scaled by how much less probable 'el' is than 'hl'
    _, word = wordbeam.best_word(near_miss()[0], CHARS, 2, lexicon.prefixes)
    assert confidence[0] == pytest.approx(0.45 * np.exp(word - free[0][1]), rel=1e-4)


def test_the_word_beam_keeps_the_free_reading_when_every_word_is_far_less_probable():
    # 'oh' (0.02 x 0.01) is below FALLBACK_LOG_RATIO (1e-3) of the free 'hl' (0.225); 'oo' cannot be
    # spelled in two steps at all (a repeat needs a blank between)
    for word in ("oh", "oo"):
        assert ctc.decode_lexicon(near_miss(), CHARACTERS, ctc.Lexicon([word]), beam_width=4)[0] == ["hl"]


def test_word_beam_search_sums_the_paths_of_a_reading():
    # 'e' is read from 'e-', '-e' and 'ee': the beam's probability of "e" is their sum, as CTC defines it
    probs = np.array([[0.5, 0.5, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0, 0.0]]) + 1e-9
    (text, log_p), *_ = wordbeam.beam_search(np.log(probs), CHARS, 4, None)
    assert text == "e" and np.isclose(np.exp(log_p), 0.75, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_numpy_reads_and_scores_as_decode(seed):
    rng = np.random.default_rng(seed)
    chars = tuple("abcdefgh")
    logits = rng.normal(size=(6, 12, len(chars) + 1)).astype(np.float32) * (1 + 4 * seed)
    ids = rng.integers(0, 3, size=(6, 12))  # peaked paths of few classes: repeats and blanks between them
    logits[np.arange(6)[:, None], np.arange(12)[None], ids] += 6 * (seed % 2)
    texts_tf, scores_tf = ctc.decode(tf.constant(logits), tf.constant(list(chars)))
    got, scores = ctc.greedy_numpy(logits, chars)
    assert got == texts(texts_tf)
    np.testing.assert_allclose(scores, scores_tf.numpy(), atol=1e-6)


def test_greedy_numpy_of_multibyte_characters_and_no_frames():
    probs = np.full((1, 4, 3), 0.01, np.float32)
    probs[0, [0, 1, 2, 3], [1, 1, 0, 2]] = 0.98
    assert ctc.greedy_numpy(np.log(probs), ("é", "✓"))[0] == ["é✓"]
    texts_, scores = ctc.greedy_numpy(np.zeros((2, 0, 3), np.float32), ("a", "b"))
    assert texts_ == ["", ""] and scores.tolist() == [1.0, 1.0]
