"""Lexicon-constrained CTC beam search for single words: the prefix beam search of CTCWordBeamSearch's
"Words" mode, with the lexicon as a prefix set, so that only paths spelling a prefix of some word survive.

A top-k list of the free beam (what `ctc.decode_lexicon` did before) finds the right word only when it is
already among the k best free readings; constraining the search finds it wherever it is in the beam's
reach, which is what turns a near miss ("handuriting") into the word ("handwriting"). Pure numpy, one
sample at a time: T x beam x candidates steps, a few milliseconds for a word image.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

BLANK = 0
NEG_INF = -np.inf
# Classes considered at a step: the `CANDIDATES` most probable, and of those only the ones above this
# probability. A character the model gives less than 1e-4 at every step it could occupy cannot be read.
CANDIDATES = 12
MIN_LOG_PROB = np.log(1e-4)


class PrefixSet:
    """The lexicon as the set of its lowercased words and of all their prefixes."""

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(w.lower() for w in words)
        self.prefixes = frozenset(w[:i] for w in self.words for i in range(len(w) + 1))

    def allows(self, prefix: str) -> bool:
        return prefix in self.prefixes

    def is_word(self, text: str) -> bool:
        return text in self.words


def _logaddexp(a: float, b: float) -> float:
    return float(np.logaddexp(a, b))


def beam_search(
    log_probs: np.ndarray, characters: list[str], beam_width: int, prefixes: PrefixSet | None
) -> list[tuple[str, float]]:
    """CTC prefix beam search over log-probabilities [T, C] (class 0 the blank, class i the character
    characters[i - 1]) -> the final beam as (text, log-probability) pairs, best first. With `prefixes`, a
    path survives only while its lowercased text is a prefix of a lexicon word (matching ignores case)."""
    lowered = [""] + [c.lower() for c in characters]
    # beam: class-id tuple -> [log p(ending in blank), log p(ending in a character)], plus its text
    beam: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
    texts: dict[tuple[int, ...], str] = {(): ""}
    for step in log_probs:
        order = np.argsort(step)[::-1][:CANDIDATES]
        candidates = [int(c) for c in order if c != BLANK and step[c] >= MIN_LOG_PROB]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for path, (p_blank, p_char) in beam.items():
            total = _logaddexp(p_blank, p_char)
            entry = nxt.setdefault(path, [NEG_INF, NEG_INF])
            entry[0] = _logaddexp(entry[0], total + float(step[BLANK]))
            last = path[-1] if path else None
            if last is not None:  # the last character held for one more step: still the same path
                entry[1] = _logaddexp(entry[1], p_char + float(step[last]))
            for c in candidates:
                text = texts[path] + lowered[c]
                if prefixes is not None and not prefixes.allows(text):
                    continue
                longer = path + (c,)
                texts[longer] = texts[path] + characters[c - 1]
                # a repeated character needs a blank between the two, so only paths ending in blank extend
                gain = (p_blank if c == last else total) + float(step[c])
                e = nxt.setdefault(longer, [NEG_INF, NEG_INF])
                e[1] = _logaddexp(e[1], gain)
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam_width]
        beam = dict(ranked)
    return [
        (texts[p], _logaddexp(*s)) for p, s in sorted(beam.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
    ]


def best_word(
    log_probs: np.ndarray, characters: list[str], beam_width: int, prefixes: PrefixSet
) -> tuple[str, float] | None:
    """The most probable lexicon word the constrained beam reaches, with its log-probability, or None."""
    for text, score in beam_search(log_probs, characters, beam_width, prefixes):
        if prefixes.is_word(text.lower()):
            return text, score
    return None
