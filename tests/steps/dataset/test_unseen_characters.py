"""steps.dataset.plan.unseen_characters: what preprocess reports about characters only seen outside train."""

from __future__ import annotations

from steps.dataset.iam_format import Word
from steps.dataset.plan import PreprocessConfig, plan, unseen_characters
from steps.inference.charset import Charset


def test_characters_outside_the_training_charset_are_counted_most_frequent_first():
    charset = Charset(tuple("абв"))
    assert unseen_characters(["аб", "вгд", "гг", "ё"], charset) == {"г": 3, "д": 1, "ё": 1}
    assert unseen_characters(["ба"], charset) == {}


def test_a_greek_split_drops_what_train_never_saw_and_the_report_names_it():
    words = [Word(f"w{n:02d}-000-00-{i:02d}", True, 0, (0, 0, 1, 1), "UNK", t) for n in range(6) for i, t in
             enumerate(["αβγ", "γάμμα"] if n != 5 else ["ωμέγα", "αβγ"])]  # fmt: skip
    cfg = PreprocessConfig("words", "writer", 0.6, 0.2, 0, 32, 128, 24, False, 100, 1)
    samples, charset, dropped, _ = plan(words, {}, cfg)
    unseen = unseen_characters([w.text for w in words], charset)
    assert set(unseen) == {c for w in words for c in w.text} - set(charset.characters)
    assert dropped["out_of_charset"] == sum(not charset.covers(w.text) for w in words)
