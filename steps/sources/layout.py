"""Your own data in the canonical raw layout: the one writer behind the folder, PAGE XML and ALTO sources.

Sources hand over `Item`s (a crop or an image, its text, its group); this module normalises the text to
Unicode NFC (the one place it is normalised), gives every item an IAM-style id and writes what
preprocess reads, so preprocess never knows where the data came from:

- words:  `words.txt` (IAM's 9 fields: `g0001-000-00-00003 ok 0 0 0 118 40 UNK Αθήνα`) + `words.tgz`
          (members `words/g0001/g0001-000/g0001-000-00-00003.png`)
- lines:  `lines.txt` (IAM lines.txt: `g0001-000-04 ok 0 3 0 0 812 60 A|MOVE|to`) + `lines.tgz`
          (members `lines/g0001/g0001-000/g0001-000-04.png`)
- `forms.txt`: form id -> group (the writer, or the page), so preprocess splits by it;
- `origin.tsv`: id, group, where the item came from (file, line number, element id), text.

A group becomes form `g<NNNN>-000`; an item's id adds its line number (reading order) and word number.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from steps.sources.errors import DownloadError
from steps.workflow import config

LINES_TXT = "lines.txt"  # the lines layout, as agreed with level=lines
LINES_ARCHIVE = "lines.tgz"
ORIGIN_TSV = "origin.tsv"
PROBLEMS_SHOWN = 20  # problems listed in download.json and the log; all are counted


@dataclass(frozen=True)
class Item:
    group: str  # the unit of the writer-independent split: a writer, or a page
    text: str
    image: bytes  # encoded (png, jpeg, tiff)
    suffix: str  # ".png", ".jpg", ...
    size: tuple[int, int]  # width, height in pixels
    origin: str  # where it came from, for origin.tsv and messages
    line: int = 0  # reading-order line number within its group (0 for a folder's images)


@dataclass
class Collected:
    """What a source read: usable items per level, and what it skipped (counted by reason, described)."""

    words: list[Item] = field(default_factory=list)
    lines: list[Item] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    adjusted: Counter = field(default_factory=Counter)  # kept, but changed (e.g. coordinates clipped to the page)

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        self.problems.append(message)


def as_lines(collected: Collected) -> Collected:
    """The same items as lines instead of words (a folder of line images): numbered per group in the order
    they were listed, which is the reading order a lines.txt id records."""
    numbers: Counter = Counter()
    lines = []
    for item in collected.words:
        lines.append(replace(item, line=numbers[item.group]))
        numbers[item.group] += 1
    return replace(collected, words=[], lines=collected.lines + lines)


def normalise(text: str) -> str:
    """NFC, with any run of whitespace (tabs, newlines) made one space and the ends stripped."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def safe_group(name: str) -> str:
    """A group name usable as a forms.txt field (no whitespace)."""
    return re.sub(r"\s+", "_", name.strip()) or "_"


def write(collected: Collected, out_dir: Path) -> dict:
    """Write the words and/or lines layouts of `collected` into `out_dir` -> counts for download.json.

    Items whose text is empty after normalisation, or (lines) holds a `|` (lines.txt's word
    separator), are skipped and counted. DownloadError when nothing usable is left.
    """
    groups = sorted({i.group for i in collected.words + collected.lines})
    form = {g: f"g{n:04d}-000" for n, g in enumerate(groups, start=1)}
    origins: list[str] = []
    written = {}
    for level, items in (("words", collected.words), ("lines", collected.lines)):
        rows, members, counters = [], [], Counter()
        for item in items:
            text = normalise(item.text)
            if not text:
                collected.skip("empty_text", f"{item.origin}: empty transcription")
                continue
            if level == "lines" and "|" in text:
                collected.skip("pipe_in_text", f"{item.origin}: '|' separates words in {LINES_TXT}, cannot keep it")
                continue
            f = form[item.group]
            if level == "words":
                counters[(f, item.line)] += 1
                item_id = f"{f}-{item.line:02d}-{counters[(f, item.line)]:05d}"
                rows.append(f"{item_id} ok 0 0 0 {item.size[0]} {item.size[1]} UNK {text}")
            else:
                item_id = f"{f}-{item.line:02d}"
                parts = text.split(" ")
                rows.append(f"{item_id} ok 0 {len(parts)} 0 0 {item.size[0]} {item.size[1]} {'|'.join(parts)}")
            members.append((f"{level}/{f.split('-')[0]}/{f}/{item_id}{item.suffix}", item.image))
            origins.append(f"{item_id}\t{item.group}\t{item.origin}\t{text}")
        if rows:
            txt, archive = (config.WORDS_TXT, config.WORDS_ARCHIVE) if level == "words" else (LINES_TXT, LINES_ARCHIVE)
            (out_dir / txt).write_text(_HEADER + "\n".join(rows) + "\n", encoding="utf-8")
            _write_tgz(out_dir / archive, members)
        written[level] = len(rows)
    if not written["words"] and not written["lines"]:
        raise DownloadError(
            f"nothing usable was found ({_counts(collected.skipped) or 'no images with transcriptions'})"
            + (f"; first problems: {'; '.join(collected.problems[:5])}" if collected.problems else "")
        )
    (out_dir / config.FORMS_TXT).write_text("".join(f"{form[g]} {safe_group(g)}\n" for g in groups), encoding="utf-8")
    (out_dir / ORIGIN_TSV).write_text("id\tgroup\torigin\ttext\n" + "\n".join(origins) + "\n", encoding="utf-8")
    return {
        "groups": len(groups),
        "items": written,
        "skipped": dict(sorted(collected.skipped.items())),
        "adjusted": dict(sorted(collected.adjusted.items())),
        "problems": collected.problems[:PROBLEMS_SHOWN],
    }


_HEADER = "# written by steps/sources/layout.py in IAM's format; origin.tsv says where each id came from\n"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counter.items()))


def _write_tgz(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A deterministic gzip tar (fixed mtimes, sorted members): the same data gives the same bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))


def summary_line(info: dict) -> str:
    """One line for the log: what was written and what was skipped."""
    items = info["items"]
    skipped = info["skipped"]
    return f"{items['words']} words and {items['lines']} lines from {info['groups']} groups" + (
        f"; skipped {_counts(Counter(skipped))}" if skipped else ""
    )
