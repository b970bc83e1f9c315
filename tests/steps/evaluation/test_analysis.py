"""steps.evaluation.analysis: the figures behind the error plots."""

from __future__ import annotations

from steps.evaluation.analysis import cer_by_length


def _row(truth: str, prediction: str) -> dict:
    return {"truth": truth, "prediction": prediction}


def test_word_lengths_get_a_bar_each_with_errors_over_characters():
    labels, rates = cer_by_length([_row("ab", "ab"), _row("cd", "c"), _row("hello", "help")])
    assert labels == ["2", "5"]
    assert rates == [1 / 4, 2 / 5]  # the two 2-letter words: 1 error in 4 characters


def test_line_lengths_are_grouped_into_ranges_that_stay_legible():
    rows = [_row("x" * n, "x" * n) for n in range(10, 70)] + [_row("y" * 31, "z" * 31)]
    labels, rates = cer_by_length(rows, bars=20)
    assert len(labels) == 20 and labels[0] == "10-12" and labels[-1] == "67-69"
    assert rates[labels.index("31-33")] == 31 / (31 + 32 + 33 + 31)  # every character of the one wrong line
    assert cer_by_length([]) == ([], [])
