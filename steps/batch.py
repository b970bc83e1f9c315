"""Step `batch`: transcribe a large set of images with the registered model on Apache Spark, into Parquet.

Run:
    mlflow run . -e batch --env-manager local -P images=scans/ -P output=transcripts.parquet
    python -m steps.batch --images 'hdfs:///scans/**/*.png' --output hdfs:///out/transcripts.parquet \\
        --master spark://head:7077

Inputs:
- `images`: a directory (every .png .jpg .jpeg .bmp .gif .tif .tiff file under it, any case), a glob, any
  path or URI Spark reads (hdfs://, s3a://), or a .parquet/.csv table with a `path` column;
- `output`: where the Parquet dataset goes (must not exist);
- `model_uri`: '' = models:/<registered model>@champion, or any URI steps.inference.loading takes;
- `master`: local[*] (every core of this machine), spark://host:7077, yarn, k8s://...;
- `partitions` (0 = Spark's default parallelism) and `batch_size` (images per model call).

Outputs: Parquet with one row per image (order not kept): path (as Spark names it, file:/... for local
files), text, confidence, error (null when read; else why, as `infer` says it, and text/confidence null).
Counts go to stderr and the output path to stdout. Exit code 1 if any image failed (the others are
still transcribed). The model is downloaded once here and shipped to the executors with the job.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from steps.workflow import cli, config, runs

D = config.defaults("batch")


class ModelNotFound(LookupError):
    """The model URI names no model in the tracking store."""


def fetch_model(model_uri: str, dst: Path) -> Path:
    """The model's directory, downloaded from the tracking store (the executors get this copy)."""
    import mlflow

    try:
        mlflow.models.get_model_info(model_uri)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except mlflow.exceptions.MlflowException as e:
        raise ModelNotFound(
            f"cannot load model {model_uri!r}: {e.message} (tracking store {mlflow.get_tracking_uri()})"
        ) from None


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--images", required=True, help="a directory, a glob, a URI Spark reads, or a table with a path column")
@click.option("--output", required=True, help="Parquet output path or URI (must not exist)")
@cli.model_uri_option(D["model_uri"])
@click.option(
    "--master", default=D["master"], show_default=True, help="Spark master: local[*], spark://host:7077, yarn"
)
@click.option("--partitions", type=click.IntRange(0), default=D["partitions"], show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=D["batch_size"], show_default=True)
@cli.user_errors(LookupError, ValueError)
def main(images: str, output: str, model_uri: str, master: str, partitions: int, batch_size: int) -> None:
    from steps.scaleout import spark as batch

    if "://" not in output and Path(output).exists():
        raise batch.BatchError(f"{output} exists: batch never overwrites results; choose another --output")
    cfg = batch.BatchConfig(images, output, master, partitions, batch_size)
    model_uri = model_uri or config.CHAMPION_URI
    with tempfile.TemporaryDirectory(prefix="hwr-batch-") as tmp:
        model_dir = fetch_model(model_uri, Path(tmp))
        runs.log(f"transcribing {images!r} with {model_uri} on Spark {master}")
        spark = batch.session(master)
        try:
            counts = batch.transcribe(spark, model_dir, cfg)
        finally:
            spark.stop()
    runs.log(f"{counts['images']} image(s) transcribed into {output}; {counts['failed']} failed")
    click.echo(output)
    if counts["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
