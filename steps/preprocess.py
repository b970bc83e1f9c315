"""Step `preprocess`: IAM-layout raw data -> sharded TFRecords with writer-independent splits.

Inputs:  `raw_data`, the URI of a download run's raw/ (words.txt + words.tgz, optional forms.txt);
         when empty, the newest finished download run of the experiment (the log names it).
Outputs: artifact dataset/ of the run: {split}-%05d-of-%05d.tfrecord shards, manifest.parquet,
         charset.json, stats.json and samples_{split}.png; split sizes, drop reasons and images/s
         as metrics; the dataset's digest as a run input (mlflow.log_input) for lineage.

    mlflow run . -e preprocess --env-manager local -P raw_data=runs:/<download_run>/raw
"""
from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import zlib
from pathlib import Path

import click
import mlflow

from steps import config, convert, iam, plots, splits, tracking

D = config.defaults("preprocess")


def build(raw_dir: Path, out_dir: Path, split: str, train_ratio: float, val_ratio: float, seed: int,
          image_height: int, image_width: int, max_label_length: int, keep_err: bool, shard_size: int,
          workers: int, progress: bool = True) -> dict:
    """Build the complete dataset directory `out_dir` from `raw_dir`; returns the stats written to stats.json."""
    words_txt, archive = raw_dir / config.WORDS_TXT, raw_dir / config.WORDS_ARCHIVE
    for f in (words_txt, archive):
        if not f.is_file():
            raise click.ClickException(f"{f.name} not found in {raw_dir}: raw_data must be a download run's raw/ folder")
    words, malformed = iam.parse_words(words_txt.read_text(encoding="utf-8", errors="replace").splitlines())
    if not words:
        raise click.ClickException(f"{words_txt} holds no valid word lines ({len(malformed)} malformed)")
    forms_txt = raw_dir / config.FORMS_TXT
    writers = iam.parse_forms(forms_txt.read_text().splitlines()) if forms_txt.is_file() else {}
    tracking.log(f"{len(words)} words, {len(malformed)} malformed lines"
                 + "".join(f"\n  line {n}: {line[:80]!r}" for n, line in malformed[:5]))
    samples, charset, dropped, shard_counts = convert.plan(
        words, writers, split, train_ratio, val_ratio, seed, max_label_length, keep_err, shard_size)
    try:
        result = convert.convert(archive, samples, shard_counts, image_height, image_width, out_dir, workers, progress)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise click.ClickException(f"{archive.name} in {raw_dir} is not a readable tar archive ({e}): "
                                   f"download it again (mlflow run . -e download)") from None
    dropped.update(result.dropped)
    dropped["malformed_line"] = len(malformed)

    kept = [s for s in samples if s.id in result.written]
    charset.save(out_dir / config.CHARSET_FILE)
    _write_manifest(out_dir / config.MANIFEST_FILE, kept, result)
    for name, items in result.previews.items():
        plots.image_grid([(c, t) for t, c in items], out_dir / f"samples_{name}.png", f"{name}: preprocessed samples")
    stats = {
        "image_height": image_height, "image_width": image_width, "max_label_length": max_label_length,
        "split_method": split, "train_ratio": train_ratio, "val_ratio": val_ratio, "seed": seed,
        "keep_err": keep_err, "charset_size": len(charset.characters),
        "samples": {n: sum(s.split == n for s in kept) for n in config.SPLITS},
        "writers": {n: len({s.writer for s in kept if s.split == n}) for n in config.SPLITS},
        "shards": shard_counts, "dropped": {k: v for k, v in sorted(dropped.items()) if v},
        "seconds": round(result.seconds, 2), "images_per_second": round(len(kept) / max(result.seconds, 1e-9), 1),
        "digest": _digest(out_dir),
    }
    (out_dir / config.STATS_FILE).write_text(json.dumps(stats, indent=1))
    return stats


def _write_manifest(path: Path, kept: list[convert.Sample], result: convert.ConversionResult) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": [s.id for s in kept], "writer": [s.writer for s in kept], "split": [s.split for s in kept],
        "text": [s.text for s in kept],
        "original_height": [result.sizes[s.id][0] for s in kept], "original_width": [result.sizes[s.id][1] for s in kept],
        "shard": [result.written[s.id] for s in kept],
    })
    pq.write_table(table, path)


def _digest(out_dir: Path) -> str:
    """Content digest of the shards and charset: equal digests mean the same training data."""
    h = hashlib.sha256()
    for f in sorted(out_dir.glob("*.tfrecord")) + [out_dir / config.CHARSET_FILE]:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _log_lineage(stats: dict, raw_uri: str) -> None:
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.types.schema import ColSpec, Schema

    # MLflow schemas cannot mix column and tensor specs: the image is its raw uint8 canvas bytes.
    schema = Schema([ColSpec("string", "id"), ColSpec("string", "writer"), ColSpec("string", "text"),
                     ColSpec("binary", "image")])
    run = mlflow.active_run()
    source = LocalArtifactDatasetSource(f"{run.info.artifact_uri}/{config.DATASET_ARTIFACT}")
    mlflow.log_input(MetaDataset(source, name=f"iam-words-{stats['digest']}", digest=stats["digest"], schema=schema),
                     context="preprocess")
    mlflow.set_tag("hwr.raw_data", raw_uri)


@click.command()
@click.option("--raw-data", default=D["raw_data"], help="URI of a download run's raw/ ('' = newest download run)")
@click.option("--split", type=click.Choice(splits.SPLIT_METHODS), default=D["split"])
@click.option("--train-ratio", type=float, default=D["train_ratio"])
@click.option("--val-ratio", type=float, default=D["val_ratio"])
@click.option("--seed", type=int, default=D["seed"])
@click.option("--image-height", type=click.IntRange(8, 512), default=D["image_height"])
@click.option("--image-width", type=click.IntRange(8, 4096), default=D["image_width"])
@click.option("--max-label-length", type=click.IntRange(1), default=D["max_label_length"])
@click.option("--keep-err", type=click.BOOL, default=D["keep_err"])
@click.option("--shard-size", type=click.IntRange(1), default=D["shard_size"])
@click.option("--workers", type=click.IntRange(0), default=D["workers"], help="0 = all cores")
def main(raw_data: str, **params) -> None:
    try:
        splits.check_ratios(params["train_ratio"], params["val_ratio"])
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    with tracking.start_step("preprocess", {"raw_data": raw_data, **params}):
        raw_uri = tracking.upstream_uri(raw_data, "download", config.RAW_ARTIFACT)
        raw_dir = Path(tracking.local_dir(raw_uri))
        with tempfile.TemporaryDirectory(prefix="dataset-") as tmp:
            try:
                stats = build(raw_dir, Path(tmp), **params)
            except ValueError as e:
                raise click.ClickException(str(e)) from None
            # Logged only once complete: a killed run never leaves a partial dataset behind a FINISHED run.
            mlflow.log_artifacts(tmp, config.DATASET_ARTIFACT)
        mlflow.log_metrics({f"samples_{k}": v for k, v in stats["samples"].items()}
                           | {f"writers_{k}": v for k, v in stats["writers"].items()}
                           | {f"dropped_{k}": v for k, v in stats["dropped"].items()}
                           | {"images_per_second": stats["images_per_second"], "charset_size": stats["charset_size"]})
        _log_lineage(stats, raw_uri)
        tracking.log(f"dataset {stats['digest']}: {stats['samples']} samples, dropped {stats['dropped']}, "
                     f"{stats['images_per_second']} images/s")


if __name__ == "__main__":
    main()
