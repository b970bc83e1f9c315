"""`dataset=folder`: images with their transcriptions, in one of two common layouts.

1. A table: the one `.tsv` or `.csv` file at the top of the folder, with a header naming the columns
   `path` and `text` and optionally `writer` (any order; without a header: path, text[, writer]). Paths are
   relative to the table. TSV fields are taken literally (quotes are text); CSV follows the usual quoting.
2. No table: a `.txt` beside each image (`page1/line3.png` + `page1/line3.txt`) holding its text.

The writer (the unit of the writer-independent split) is the `writer` column, else the image's folder
relative to the source, else (all images in one folder) each image itself. Rows whose image is missing
or is not an image, duplicates, empty texts and undecodable bytes are skipped and counted, each with its
line number; only an empty result is fatal.
"""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from steps.sources.errors import DownloadError
from steps.sources.layout import Collected, Item
from steps.sources.tree import IMAGE_SUFFIXES

COLUMNS = ("path", "text", "writer")


def collect(root: Path) -> Collected:
    """Read a folder (already unpacked) into items; see the module docstring for the layouts."""
    tables = sorted(p for p in root.iterdir() if p.suffix.lower() in (".tsv", ".csv") and p.is_file())
    if len(tables) > 1:
        raise DownloadError(
            f"{root} holds several tables ({', '.join(p.name for p in tables)}): keep the one with path and text"
        )
    out = Collected()
    rows = _table_rows(tables[0], out) if tables else _sidecar_rows(root, out)
    seen: dict[Path, str] = {}
    for where, path, text, writer in rows:
        image = (root / path).resolve() if path else None
        if image is None or not image.is_relative_to(root.resolve()):
            out.skip("bad_path", f"{where}: image path {path!r} is empty or outside the folder")
            continue
        if image in seen:
            out.skip("duplicate", f"{where}: {path} is listed again (first at {seen[image]})")
            continue
        seen[image] = where
        if not image.is_file():
            out.skip("missing_image", f"{where}: image {path} not found")
            continue
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            out.skip("unsupported_format", f"{where}: {path} is not {', '.join(IMAGE_SUFFIXES)}: convert it")
            continue
        try:
            with Image.open(image) as im:
                size = im.size
        except (UnidentifiedImageError, OSError) as e:
            out.skip("not_an_image", f"{where}: {path} is not a readable image ({type(e).__name__})")
            continue
        if not text.strip():
            out.skip("empty_text", f"{where}: empty transcription for {path}")
            continue
        group = writer or image.parent.relative_to(root.resolve()).as_posix()
        out.words.append(Item(group, text, image.read_bytes(), image.suffix.lower(), size, where))
    if out.words and len({i.group for i in out.words}) == 1 and not any(r[3] for r in rows):
        # one folder, no writers: every image is its own unit, i.e. a random split
        out.words = [Item(i.origin, i.text, i.image, i.suffix, i.size, i.origin) for i in out.words]
    return out


def _decode(data: bytes, where: str, out: Collected) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        out.skip("undecodable_text", f"{where}: not UTF-8 ({e.reason} at byte {e.start}): save the file as UTF-8")
        return None


def _table_rows(table: Path, out: Collected) -> list[tuple[str, str, str, str]]:
    """(where, path, text, writer) per data row of a TSV/CSV; undecodable and short rows are skipped."""
    data = table.read_bytes().removeprefix(b"\xef\xbb\xbf")
    physical = data.splitlines()
    lines = [(n, _decode(raw, f"{table.name} line {n}", out)) for n, raw in enumerate(physical, start=1)]
    lines = [(n, text) for n, text in lines if text is not None and text.strip()]
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if table.suffix.lower() == ".tsv" else {}
    parsed = [(n, fields) for n, (fields,) in ((n, list(csv.reader([text], **dialect))) for n, text in lines)]
    if not parsed:
        raise DownloadError(f"{table} has no rows: it needs the columns path and text")
    names = [f.strip().lower() for f in parsed[0][1]]
    if "path" in names and "text" in names:
        index = {c: names.index(c) for c in COLUMNS if c in names}
        parsed = parsed[1:]
    else:
        index = {"path": 0, "text": 1, "writer": 2}
    rows = []
    for n, fields in parsed:
        where = f"{table.name} line {n}"
        if len(fields) <= max(index["path"], index["text"]):
            out.skip("short_row", f"{where}: {len(fields)} field(s), the path and text columns need {len(index)}")
            continue
        writer = fields[index["writer"]].strip() if "writer" in index and index["writer"] < len(fields) else ""
        rows.append((where, fields[index["path"]].strip(), fields[index["text"]], writer))
    return rows


def _sidecar_rows(root: Path, out: Collected) -> list[tuple[str, str, str, str]]:
    """(where, path, text, "") per image that has a .txt beside it; images without one are counted."""
    rows = []
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        rel = image.relative_to(root).as_posix()
        txt = image.with_suffix(".txt")
        if not txt.is_file():
            out.skip("no_transcription", f"{rel}: no {txt.name} beside it")
            continue
        text = _decode(txt.read_bytes().removeprefix(b"\xef\xbb\xbf"), txt.relative_to(root).as_posix(), out)
        if text is not None:
            rows.append((txt.relative_to(root).as_posix(), rel, text, ""))
    if not rows and not out.skipped:
        raise DownloadError(
            f"{root} holds neither a .tsv/.csv table (columns path, text[, writer]) nor images with a .txt "
            "beside each: see the README's 'Train on your own data'"
        )
    return rows
