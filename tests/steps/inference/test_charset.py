"""steps.charset: blank 0, characters 1..n sorted, the file is the truth and a bad file is an error."""

from __future__ import annotations

import json

import pytest

from steps.inference.charset import BLANK_INDEX, Charset, CharsetError


def test_from_texts_is_sorted_and_unique():
    cs = Charset.from_texts(["hello", "World", "l'a", "42"])
    assert cs.characters == ("'", "2", "4", "W", "a", "d", "e", "h", "l", "o", "r")
    assert len(set(cs.characters)) == len(cs.characters)


def test_from_texts_does_not_depend_on_text_order():
    texts = ["the", "quick", "brown", "fox"]
    assert Charset.from_texts(texts) == Charset.from_texts(reversed(texts))


def test_from_texts_of_nothing_is_empty():
    assert Charset.from_texts([]).characters == ()
    assert Charset.from_texts(["", ""]).size == 1


def test_blank_is_index_zero_and_characters_start_at_one():
    cs = Charset.from_texts(["cab"])
    assert BLANK_INDEX == 0
    assert cs.size == 4  # a, b, c + blank
    assert cs.encode("abc") == [1, 2, 3]
    assert BLANK_INDEX not in cs.encode("cabbage"[:4])


@pytest.mark.parametrize("text", ["", "a", "abba", "the Quick, brown fox's 42", "été ça"])
def test_encode_decode_round_trip(text):
    cs = Charset.from_texts(["the Quick, brown fox's 42 abba", "été ça"])
    ids = cs.encode(text)
    assert len(ids) == len(text) and all(1 <= i < cs.size for i in ids)
    assert cs.decode(ids) == text


def test_decode_ignores_blank_and_padding():
    cs = Charset.from_texts(["ab"])
    assert cs.decode([0, 1, 0, 2, -1, -1]) == "ab"
    assert cs.decode([0, 0]) == ""
    assert cs.decode([1, 1]) == "aa"  # collapsing repeats is the CTC decoder's job, not the charset's


def test_decode_ignores_ids_beyond_the_charset():
    cs = Charset.from_texts(["ab"])
    assert cs.decode([1, 3, 2, 99]) == "ab"


def test_unknown_character_raises_charset_error_naming_it():
    cs = Charset.from_texts(["abc"])
    with pytest.raises(CharsetError, match="'z'"):
        cs.encode("abz")


def test_covers():
    cs = Charset.from_texts(["abc"])
    assert cs.covers("cab") and cs.covers("")
    assert not cs.covers("cabz")


def test_json_round_trip_keeps_the_order_even_if_not_sorted(tmp_path):
    # The file is the truth: a charset read back is used as stored, never re-sorted.
    cs = Charset(("b", "a", "ü", " ", '"'))
    assert Charset.from_json(cs.to_json()) == cs
    cs.save(tmp_path / "charset.json")
    loaded = Charset.load(tmp_path / "charset.json")
    assert loaded == cs and loaded.encode("a") == [2]
    doc = json.loads((tmp_path / "charset.json").read_text(encoding="utf-8"))
    assert doc == {"characters": ["b", "a", "ü", " ", '"'], "blank_index": 0}


def test_missing_file_raises_charset_error(tmp_path):
    with pytest.raises(CharsetError, match="not found"):
        Charset.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "content",
    [
        "",  # empty file
        "{not json",  # broken JSON
        '["a", "b"]',  # not an object
        '{"chars": ["a"]}',  # wrong key
        '{"characters": ["a", "a"]}',  # duplicate
        '{"characters": ["ab"]}',  # not single characters
        '{"characters": [1, 2]}',  # not strings
        '{"characters": ["a"], "blank_index": 1}',  # another blank index
        '{"characters": "abc"}',  # a string, not a list
        '{"characters": null}',  # null
    ],
)
def test_malformed_file_raises_charset_error(tmp_path, content):
    path = tmp_path / "charset.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CharsetError):
        Charset.load(path)
