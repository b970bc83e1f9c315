"""The gate every raw/ folder passes, whatever made it (IAM, the synthetic sample, your own data): a level's
transcription list and image archive exist, parse, and belong together. Counts what they hold for download.json.
"""

from __future__ import annotations

from pathlib import Path

from steps.dataset import iam_format
from steps.sources import archives, http
from steps.sources.errors import DownloadError
from steps.workflow import config

# What a data line of each level's list holds, for the error that says a file is not that list.
FIELDS = {"words": "id ok|err grey x y w h tag text", "lines": "id ok|err grey components x y w h text"}


def describe_raw(out_dir: Path, level: str = "words", origin: str = "") -> dict:
    """Validate the `level` files of a canonical raw dir (words.txt + words.tgz, or lines.*) -> their counts.

    `origin` names where the files came from, for error messages. DownloadError when the list is missing or
    holds no entries, or no entry has an image in the archive.
    """
    spec = config.LEVELS[level]
    text, archive = out_dir / spec.text_file, out_dir / spec.archive
    if not text.exists():
        if level == "words":
            raise archives.missing_words_txt(str(out_dir))
        raise DownloadError(f"{origin or out_dir} has no {spec.text_file}: {level} need it beside {spec.archive}.")
    with open(text, encoding="utf-8", errors="replace") as f:
        entries, malformed = iam_format.PARSERS[level](f)
    if not entries:
        raise DownloadError(
            f"{spec.text_file} has no {spec.unit} entries ({FIELDS[level]}): it is not IAM's {spec.text_file}."
        )
    images = archives.scan_words_archive(archive, f"{spec.archive} from {origin}" if origin else spec.archive)
    ids = {iam_format.member_id(n) for n in images}
    matched = sum(e.id in ids for e in entries)
    if matched == 0:
        raise DownloadError(
            f"no {spec.unit} of {spec.text_file} has an image in {spec.archive} (first image: {images[0]}): "
            "the two files do not belong together."
        )
    ok = sum(e.ok for e in entries)
    present = [p for p in (text, archive, out_dir / config.FORMS_TXT) if p.exists()]
    return {
        level: len(entries),
        f"{level}_ok": ok,
        f"{level}_err": len(entries) - ok,
        "malformed_lines": len(malformed),
        "images": len(images),
        f"{level}_without_image": len(entries) - matched,
        "raw_files": {p.name: {"sha256": http.sha256_file(p), "bytes": p.stat().st_size} for p in present},
    }
