"""Step `preprocess`: IAM-layout raw data -> sharded TFRecords with writer-independent splits.

Inputs:  `raw_data`, the URI of a download run's raw/ (words.txt + words.tgz, or lines.txt + lines.tgz,
         optional forms.txt); when empty, the newest finished download run of the same `level` in the
         experiment (the log names it). `level` (words | lines) picks the raw files and the canvas:
         image_height/image_width/max_label_length for words, line_height/line_width/max_line_length for lines.
Outputs: artifact dataset/ of the run: {split}-%05d-of-%05d.tfrecord shards, manifest.parquet,
         charset.json (from the training split), stats.json (with `unseen_characters`: characters seen
         only outside train, and how often) and samples_{split}.png; split sizes, drop reasons and images/s
         as metrics; the dataset's digest as a run input (mlflow.log_input) for lineage.

    mlflow run . -e preprocess --env-manager local -P raw_data=runs:/<download_run>/raw
    mlflow run . -e preprocess --env-manager local -P level=lines
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow

from steps.dataset import splits
from steps.dataset.info import DatasetError
from steps.workflow import artifacts, cli, config, runs

D = config.defaults("preprocess")


def _log_lineage(stats: dict, raw_uri: str) -> None:
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.types.schema import ColSpec, Schema

    # MLflow schemas cannot mix column and tensor specs: the image is its raw uint8 canvas bytes.
    schema = Schema(
        [ColSpec("string", "id"), ColSpec("string", "writer"), ColSpec("string", "text"), ColSpec("binary", "image")]
    )
    run = mlflow.active_run()
    source = LocalArtifactDatasetSource(f"{run.info.artifact_uri}/{config.DATASET_ARTIFACT}")
    mlflow.log_input(
        MetaDataset(source, name=f"iam-{stats['level']}-{stats['digest']}", digest=stats["digest"], schema=schema),
        context="preprocess",
    )
    mlflow.set_tag("hwr.raw_data", raw_uri)


@click.command(help=__doc__.split("\n\n")[0])
@click.option(
    "--raw-data",
    default=D["raw_data"],
    show_default=True,
    help="URI of a download run's raw/ ('' = newest download run)",
)
@click.option(
    "--split",
    type=click.Choice(splits.SPLIT_METHODS),
    default=D["split"],
    show_default=True,
    help="writer: no writer in two splits; random: words at random",
)
@click.option("--train-ratio", type=float, default=D["train_ratio"], show_default=True)
@click.option("--val-ratio", type=float, default=D["val_ratio"], show_default=True, help="the rest is the test split")
@click.option("--seed", type=int, default=D["seed"], show_default=True)
@click.option("--image-height", type=click.IntRange(8, 512), default=D["image_height"], show_default=True)
@click.option("--image-width", type=click.IntRange(8, 4096), default=D["image_width"], show_default=True)
@click.option(
    "--max-label-length",
    type=click.IntRange(1),
    default=D["max_label_length"],
    show_default=True,
    help="longer words are dropped (and counted)",
)
@click.option(
    "--level",
    type=click.Choice(sorted(config.LEVELS)),
    default=D["level"],
    show_default=True,
    help="words or lines: which raw files to read, and which canvas parameters apply",
)
@click.option("--line-height", type=click.IntRange(8, 512), default=D["line_height"], show_default=True)
@click.option("--line-width", type=click.IntRange(8, 4096), default=D["line_width"], show_default=True)
@click.option(
    "--max-line-length",
    type=click.IntRange(1),
    default=D["max_line_length"],
    show_default=True,
    help="level=lines: longer lines are dropped (and counted)",
)
@click.option("--keep-err", type=click.BOOL, default=D["keep_err"], show_default=True, help="keep lines flagged err")
@click.option(
    "--shard-size",
    type=click.IntRange(1),
    default=D["shard_size"],
    show_default=True,
    help="samples per TFRecord shard",
)
@click.option(
    "--workers", type=click.IntRange(0), default=D["workers"], show_default=True, help="decoding threads; 0 = all cores"
)
@cli.user_errors(artifacts.ArtifactError, runs.UpstreamNotFound, DatasetError)
def main(raw_data: str, **params) -> None:
    from steps.dataset.build import build
    from steps.dataset.plan import PreprocessConfig

    try:
        splits.check_ratios(params["train_ratio"], params["val_ratio"])
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    cfg = PreprocessConfig.from_params(params)
    with (
        runs.start_step("preprocess", {"raw_data": raw_data, **params}),
        tempfile.TemporaryDirectory(prefix="hwr-preprocess-") as tmp,
    ):
        raw_uri = runs.upstream_uri(raw_data, "download", config.RAW_ARTIFACT, {"level": cfg.level})
        raw_dir = Path(artifacts.local_dir(raw_uri, dst_path=str(Path(tmp) / "raw")))
        out = Path(tmp) / config.DATASET_ARTIFACT
        out.mkdir()
        stats = build(raw_dir, out, cfg)
        # Logged only once complete: a killed run never leaves a partial dataset behind a FINISHED run.
        mlflow.log_artifacts(str(out), config.DATASET_ARTIFACT)
        mlflow.log_metrics(
            {f"samples_{k}": v for k, v in stats["samples"].items()}
            | {f"writers_{k}": v for k, v in stats["writers"].items()}
            | {f"dropped_{k}": v for k, v in stats["dropped"].items()}
            | {"images_per_second": stats["images_per_second"], "charset_size": stats["charset_size"]}
            | {"unseen_characters": len(stats["unseen_characters"])}
        )
        _log_lineage(stats, raw_uri)
        runs.log(
            f"{cfg.level} dataset {stats['digest']}: {stats['samples']} samples, dropped {stats['dropped']}, "
            f"{stats['images_per_second']} images/s"
        )


if __name__ == "__main__":
    main()
