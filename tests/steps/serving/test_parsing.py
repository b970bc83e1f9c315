"""decode_base64 over the text forms clients send: each decodes to the same bytes, or is a 400 naming the field."""

from __future__ import annotations

import base64

import pytest

from steps.serving.parsing import ClientError, decode_base64

# Bytes whose base64 holds '+' and '/' (and '-' and '_' in the URL-safe alphabet) and needs padding.
DATA = bytes(range(256)) + b"\xfb\xff"
PLAIN = base64.b64encode(DATA).decode()


@pytest.mark.parametrize(
    "text",
    [
        PLAIN,
        base64.encodebytes(DATA).decode(),  # line-wrapped, as MIME tools write it
        "  " + PLAIN + "\r\n",
        "data:image/png;base64," + PLAIN,  # a browser's FileReader
        base64.urlsafe_b64encode(DATA).decode(),
        PLAIN.replace("+", " "),  # a urlencoded form decoded '+' as a space
    ],
    ids=["plain", "wrapped", "padded-with-whitespace", "data-url", "url-safe", "plus-as-space"],
)
def test_every_form_decodes_to_the_same_bytes(text):
    assert decode_base64(text, "image") == DATA


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "image is empty"),
        (" \n", "image is empty"),
        ("not base64!", "not valid base64"),
        ("QUJ", "not valid base64"),
    ],
)
def test_what_is_not_base64_is_a_400_naming_the_field(text, words):
    with pytest.raises(ClientError) as e:
        decode_base64(text, "image")
    assert e.value.status == 400 and words in e.value.message


def test_a_value_that_is_not_text_is_a_400():
    with pytest.raises(ClientError, match="must be a base64 string, got int"):
        decode_base64(12, "images[0]")
