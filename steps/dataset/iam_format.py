"""IAM formats: words.txt, lines.txt (and optional forms.txt) parsing, and reading images from an archive in place.

words.txt data lines have 9 fields: `a01-000u-00-00 ok 154 408 768 27 51 AT A`
(id, ok/err segmentation flag, grey level, x y w h, grammatical tag, transcription).
lines.txt data lines have 9 fields too: `a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell`
(id, ok/err, grey level, number of components, x y w h, the words of the line joined by `|`).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Word:
    id: str
    ok: bool
    grey: int
    bbox: tuple[int, int, int, int]
    tag: str
    text: str

    @property
    def form(self) -> str:
        """Form id (`a01-000u`): the page a word was written on."""
        return self.id.rsplit("-", 2)[0]


def parse_words(lines: Iterable[str]) -> tuple[list[Word], list[tuple[int, str]]]:
    """Parse words.txt lines -> (words, malformed) where malformed lists (line number, line).

    Comments (`#`) and blank lines are skipped. A line is malformed unless it has at least 9 fields,
    an ok/err flag, integer grey level and box, and an id of the form `<form>-LL-WW`.
    """
    words, malformed = [], []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(" ")
        try:
            if len(fields) < 9 or fields[1] not in ("ok", "err") or fields[0].count("-") < 3:
                raise ValueError
            grey, x, y, w, h = (int(f) for f in fields[2:7])
        except ValueError:
            malformed.append((number, line))
            continue
        # IAM transcriptions contain no spaces, but be lenient and keep any extra fields as text.
        words.append(Word(fields[0], fields[1] == "ok", grey, (x, y, w, h), fields[7], " ".join(fields[8:])))
    return words, malformed


@dataclass(frozen=True)
class Line:
    id: str
    ok: bool
    grey: int
    components: int
    bbox: tuple[int, int, int, int]
    text: str  # the line's words joined by single spaces (lines.txt's `|`)

    @property
    def form(self) -> str:
        """Form id (`a01-000u`): the page the line was written on."""
        return self.id.rsplit("-", 1)[0]


def parse_lines(lines: Iterable[str]) -> tuple[list[Line], list[tuple[int, str]]]:
    """Parse lines.txt lines -> (lines, malformed) where malformed lists (line number, line).

    Comments (`#`) and blank lines are skipped. A line is malformed unless it has at least 9 fields, an
    ok/err flag, integer grey level, component count and box, and an id of the form `<form>-LL`.
    `|` separates words; the text keeps IAM's tokens (`Gaitskell|.` reads `Gaitskell .`).
    """
    parsed, malformed = [], []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(" ")
        try:
            if len(fields) < 9 or fields[1] not in ("ok", "err") or fields[0].count("-") != 2:
                raise ValueError
            grey, components, x, y, w, h = (int(f) for f in fields[2:8])
        except ValueError:
            malformed.append((number, line))
            continue
        words = [t for t in " ".join(fields[8:]).replace("|", " ").split(" ") if t]
        parsed.append(Line(fields[0], fields[1] == "ok", grey, components, (x, y, w, h), " ".join(words)))
    return parsed, malformed


# How each level's transcription list is read (config.LEVELS names the files).
PARSERS = {"words": parse_words, "lines": parse_lines}


def parse_forms(lines: Iterable[str]) -> dict[str, str]:
    """Parse IAM forms.txt (`a01-000u 000 2 prt 7 5 52 36 ...`) -> {form id: writer id}."""
    writers = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#"):
            writers[fields[0]] = fields[1]
    return writers


def member_id(name: str) -> str | None:
    """Archive member name -> sample id (`a01/a01-000u/a01-000u-00-00.png` -> `a01-000u-00-00`), None if not an image."""
    base = name.rsplit("/", 1)[-1]
    if not base.lower().endswith((".png", ".tif", ".tiff", ".jpg", ".jpeg")):
        return None
    return base.rsplit(".", 1)[0]


def iter_images(archive: Path, wanted: set[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Stream (sample id, encoded bytes) from a words or lines archive without extracting it; skips unwanted ids.

    Streaming mode reads the gzip once, front to back, which is what a 1 GB archive needs.
    """
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            word_id = member_id(member.name)
            if word_id is None or (wanted is not None and word_id not in wanted):
                continue
            f = tar.extractfile(member)
            yield word_id, f.read() if f is not None else b""
