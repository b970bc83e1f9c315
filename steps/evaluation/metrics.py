"""Error rates: CER is sum(edit distance) / sum(reference characters) over a split, WER the same over words.

Per-sample averages and padded comparisons (the Keras example's metric) overstate or understate errors
depending on word length, so every figure of the project is this aggregate over a named split.
"""

from __future__ import annotations

from typing import Sequence


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
    return {
        "cer": char_errors / max(chars, 1),
        "wer": word_errors / max(words, 1),
        "char_errors": char_errors,
        "chars": chars,
        "word_errors": word_errors,
        "words": words,
    }


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
            cost[i][j] = min(
                cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1])
            )
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
