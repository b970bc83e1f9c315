"""The character set: built from the training split by preprocess, carried into the model, read by serve.

Index 0 is the CTC blank (Keras' ctc_loss/ctc_decode use mask_index=0); characters are 1..n in
sorted order. The file, not a re-derivation, is the truth: re-sorting a vocabulary after reload is
what broke the Keras example (keras-io PR 915), so a mismatch is an error, never a fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

BLANK_INDEX = 0


class CharsetError(ValueError):
    """A charset file that is missing, malformed or does not match the model."""


@dataclass(frozen=True)
class Charset:
    characters: tuple[str, ...]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Charset":
        return cls(tuple(sorted({c for t in texts for c in t})))

    @property
    def size(self) -> int:
        """Number of model output classes: the characters plus the blank."""
        return len(self.characters) + 1

    def covers(self, text: str) -> bool:
        return set(text) <= set(self.characters)

    def encode(self, text: str) -> list[int]:
        index = {c: i + 1 for i, c in enumerate(self.characters)}
        try:
            return [index[c] for c in text]
        except KeyError as e:
            raise CharsetError(f"character {e.args[0]!r} of {text!r} is not in the charset") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Class ids (blank and padding -1 ignored) -> text; CTC collapsing is the decoder's job."""
        return "".join(self.characters[i - 1] for i in ids if 0 < i <= len(self.characters))

    def to_json(self) -> str:
        return json.dumps(
            {"characters": list(self.characters), "blank_index": BLANK_INDEX}, ensure_ascii=False, indent=1
        )

    @classmethod
    def from_json(cls, text: str) -> "Charset":
        try:
            doc = json.loads(text)
            chars = doc["characters"]
            blank = doc.get("blank_index", BLANK_INDEX)
        except (ValueError, KeyError, TypeError) as e:
            raise CharsetError(f"malformed charset file: {e}") from None
        if (
            blank != BLANK_INDEX
            or not isinstance(chars, list)
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)
            or len(set(chars)) != len(chars)
        ):
            raise CharsetError("charset file must list distinct single characters with blank_index 0")
        return cls(tuple(chars))

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Charset":
        path = Path(path)
        if not path.is_file():
            raise CharsetError(f"charset file {path} not found: a dataset and a model must carry their charset.json")
        return cls.from_json(path.read_text(encoding="utf-8"))
