"""Building a dataset directory from a canonical raw/ folder: plan, convert, then the files beside the shards.

`build` writes everything of dataset/: the shards, charset.json, manifest.parquet, stats.json and a sample
grid per split, and returns the stats. Pure of MLflow (steps/preprocess.py does the wiring).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import zlib
from pathlib import Path

from steps.dataset import convert, iam_format
from steps.dataset.info import DatasetError
from steps.dataset.plan import PreprocessConfig, Sample, plan, unseen_characters
from steps.reports import plots
from steps.workflow import config


class RawDataError(DatasetError):
    """A raw/ folder that is missing files, holds no usable lines, or whose archive cannot be read."""


def build(raw_dir: Path, out_dir: Path, cfg: PreprocessConfig, progress: bool = True) -> dict:
    """Build the complete dataset directory `out_dir` from `raw_dir`; returns the stats written to stats.json."""
    level = config.LEVELS[cfg.level]
    words_txt, archive = raw_dir / level.text_file, raw_dir / level.archive
    for f in (words_txt, archive):
        if not f.is_file():
            raise RawDataError(
                f"{f.name} not found in {raw_dir}: raw_data must be the raw/ folder of a download run "
                f"with -P level={cfg.level}"
            )
    parse = iam_format.PARSERS[cfg.level]
    words, malformed = parse(words_txt.read_text(encoding="utf-8", errors="replace").splitlines())
    if not words:
        raise RawDataError(f"{words_txt} holds no valid {cfg.level[:-1]} entries ({len(malformed)} malformed)")
    forms_txt = raw_dir / config.FORMS_TXT
    writers = iam_format.parse_forms(forms_txt.read_text(encoding="utf-8").splitlines()) if forms_txt.is_file() else {}
    print(
        f"{len(words)} {cfg.level}, {len(malformed)} malformed lines"
        + "".join(f"\n  line {n}: {line[:80]!r}" for n, line in malformed[:5]),
        file=sys.stderr,
        flush=True,
    )
    samples, charset, dropped, shard_counts = plan(words, writers, cfg)
    unseen = unseen_characters((w.text for w in words if w.ok or cfg.keep_err), charset)
    if unseen:
        print(
            f"characters seen only outside the training split (their words are dropped): {_shown(unseen)}",
            file=sys.stderr,
            flush=True,
        )
    try:
        result = convert.convert(
            archive, samples, shard_counts, cfg.image_height, cfg.image_width, out_dir, cfg.workers, progress
        )
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise RawDataError(
            f"{archive.name} in {raw_dir} is not a readable tar archive ({e}): "
            f"download it again (mlflow run . -e download)"
        ) from None
    dropped.update(result.dropped)
    dropped["malformed_line"] = len(malformed)

    kept = [s for s in samples if s.id in result.written]
    charset.save(out_dir / config.CHARSET_FILE)
    _write_manifest(out_dir / config.MANIFEST_FILE, kept, result)
    for name, items in result.previews.items():
        plots.image_grid([(c, t) for t, c in items], out_dir / f"samples_{name}.png", f"{name}: preprocessed samples")
    stats = {
        "level": cfg.level,
        "image_height": cfg.image_height,
        "image_width": cfg.image_width,
        "max_label_length": cfg.max_label_length,
        "split_method": cfg.split,
        "train_ratio": cfg.train_ratio,
        "val_ratio": cfg.val_ratio,
        "seed": cfg.seed,
        "keep_err": cfg.keep_err,
        "charset_size": len(charset.characters),
        "samples": {n: sum(s.split == n for s in kept) for n in config.SPLITS},
        "writers": {n: len({s.writer for s in kept if s.split == n}) for n in config.SPLITS},
        "shards": shard_counts,
        "dropped": {k: v for k, v in sorted(dropped.items()) if v},
        "unseen_characters": unseen,
        "seconds": round(result.seconds, 2),
        "images_per_second": round(len(kept) / max(result.seconds, 1e-9), 1),
        "digest": digest(out_dir),
    }
    (out_dir / config.STATS_FILE).write_text(json.dumps(stats, indent=1))
    return stats


def _shown(counts: dict[str, int], limit: int = 30) -> str:
    """ "'é' ×3, 'ß' ×1" for the first `limit` characters."""
    more = f" and {len(counts) - limit} more" if len(counts) > limit else ""
    return ", ".join(f"{c!r} ×{n}" for c, n in list(counts.items())[:limit]) + more


def _write_manifest(path: Path, kept: list[Sample], result: convert.ConversionResult) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": [s.id for s in kept],
            "writer": [s.writer for s in kept],
            "split": [s.split for s in kept],
            "text": [s.text for s in kept],
            "original_height": [result.sizes[s.id][0] for s in kept],
            "original_width": [result.sizes[s.id][1] for s in kept],
            "shard": [result.written[s.id] for s in kept],
        }
    )
    pq.write_table(table, path)


def digest(out_dir: Path) -> str:
    """Content digest of the shards and charset: equal digests mean the same training data."""
    h = hashlib.sha256()
    for f in sorted(out_dir.glob("*.tfrecord")) + [out_dir / config.CHARSET_FILE]:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
