"""steps.evaluation.metrics: error rates against hand-counted edits, and the alignment of edits."""

from __future__ import annotations

import math

import pytest

from steps.evaluation import metrics

# --- edit distance, error rates, alignment ----------------------------------------------------


@pytest.mark.parametrize(
    "a, b, d",
    [
        ("kitten", "sitting", 3),
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("cat", "cut", 1),
        ("cat", "cart", 1),
        ("cat", "ct", 1),
        ("abc", "cba", 2),
        ("flaw", "lawn", 2),
        (["the", "cat"], ["the", "hat"], 1),
        (["a", "b", "c"], ["c"], 2),
    ],
)
def test_edit_distance(a, b, d):
    assert metrics.edit_distance(a, b) == d
    assert metrics.edit_distance(b, a) == d


@pytest.mark.parametrize(
    "ref, hyp, char_errors",
    [
        ("cat", "cut", 1),  # substitution
        ("cat", "cart", 1),  # insertion
        ("cat", "ct", 1),  # deletion
        ("cat", "", 3),  # empty hypothesis: every character deleted
        ("cat", "cat", 0),
    ],
)
def test_error_rates_single_word(ref, hyp, char_errors):
    r = metrics.error_rates([ref], [hyp])
    assert r["char_errors"] == char_errors and r["chars"] == 3
    assert r["cer"] == pytest.approx(char_errors / 3)
    assert r["words"] == 1 and r["word_errors"] == (0 if ref == hyp else 1)
    assert r["wer"] == r["word_errors"]


def test_error_rates_empty_hypothesis_is_cer_and_wer_one():
    r = metrics.error_rates(["hello", "world"], ["", ""])
    assert r["cer"] == 1.0 and r["wer"] == 1.0


def test_error_rates_empty_reference_counts_insertions():
    r = metrics.error_rates(["abc", ""], ["abc", "xy"])
    assert r["char_errors"] == 2 and r["chars"] == 3
    assert r["cer"] == pytest.approx(2 / 3)
    assert r["word_errors"] == 1 and r["words"] == 1 and r["wer"] == 1.0


def test_error_rates_all_empty_references_do_not_divide_by_zero():
    r = metrics.error_rates([""], ["ab"])
    assert r["chars"] == 0 and r["char_errors"] == 2 and math.isfinite(r["cer"])
    assert metrics.error_rates([""], [""])["cer"] == 0.0


def test_wer_over_words():
    r = metrics.error_rates(["the quick brown fox"], ["the quack brown"])
    assert r["word_errors"] == 2 and r["words"] == 4 and r["wer"] == 0.5  # quack (sub), fox (del)
    assert r["char_errors"] == 5 and r["chars"] == 19  # i->a, " fox" deleted
    assert r["cer"] == pytest.approx(5 / 19)


def test_error_rates_are_summed_over_the_split_not_averaged_per_sample():
    r = metrics.error_rates(["a", "abcdefghij"], ["b", "abcdefghij"])
    assert r["cer"] == pytest.approx(1 / 11)  # a per-sample mean would say 0.5
    assert r["wer"] == pytest.approx(1 / 2)


def test_error_rates_need_pairs():
    with pytest.raises(AssertionError):
        metrics.error_rates(["a", "b"], ["a"])


@pytest.mark.parametrize(
    "ref, hyp, pairs",
    [
        ("cat", "cut", [("c", "c"), ("a", "u"), ("t", "t")]),
        ("cat", "ct", [("c", "c"), ("a", ""), ("t", "t")]),
        ("cat", "cart", [("c", "c"), ("a", "a"), ("", "r"), ("t", "t")]),
        ("", "ab", [("", "a"), ("", "b")]),
        ("ab", "", [("a", ""), ("b", "")]),
        ("", "", []),
    ],
)
def test_alignment_hand_computed(ref, hyp, pairs):
    assert metrics.alignment(ref, hyp) == pairs


@pytest.mark.parametrize(
    "ref, hyp",
    [("kitten", "sitting"), ("handwriting", "hndwritting"), ("abc", "xyz"), ("the quick", "th quick!"), ("a", "bbbb")],
)
def test_alignment_is_a_minimal_edit_path(ref, hyp):
    pairs = metrics.alignment(ref, hyp)
    assert "".join(r for r, _ in pairs) == ref
    assert "".join(h for _, h in pairs) == hyp
    assert all(r or h for r, h in pairs)
    assert sum(r != h for r, h in pairs) == metrics.edit_distance(ref, hyp)
