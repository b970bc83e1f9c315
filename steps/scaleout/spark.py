"""Batch transcription on Apache Spark: images in, one Parquet row per image out (path, text, confidence, error).

The images are a directory (searched recursively for image files), a glob, or any path/URI Spark reads
(hdfs://, s3a://, ...), or a Parquet/CSV table with a `path` column. The model is downloaded once on the
driver and shipped to every executor with the job (SparkContext.addFile), so executors need the Python
packages of requirements.txt but not the tracking server. Each executor loads it once and runs
HandwritingModel.recognize (the exported SavedModel: the training preprocessing and decoding) on batches
through Spark's predict_batch_udf; a bad image gets its error in its own row and never fails the others,
as in `infer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")  # those `infer` takes from a directory
TABLE_SUFFIXES = (".parquet", ".csv")
RESULT_COLUMNS = ("path", "text", "confidence", "error")
_GLOB_CHARS = set("*?[{")


class BatchError(ValueError):
    """Bad batch input: nothing to transcribe, a table without a path column, an output that exists."""


@dataclass(frozen=True)
class BatchConfig:
    images: str
    output: str
    master: str
    partitions: int  # 0 = Spark's default parallelism
    batch_size: int  # images per model call


def session(master: str):
    """A SparkSession on `master` (local[*], spark://host:7077, yarn, k8s://...)."""
    import os

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName("handwriting-batch")
    if master.startswith("local"):  # nothing to reach from outside: driver, block manager and UI on loopback only
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    return builder.config("spark.ui.showConsoleProgress", "false").getOrCreate()


def image_frame(spark, images: str):
    """DataFrame (path, content, error): bytes of every image `images` names, or why a listed path is unreadable."""
    from pyspark.sql import functions as F

    if images.lower().endswith(TABLE_SUFFIXES):
        table = (
            spark.read.parquet(images) if images.lower().endswith(".parquet") else spark.read.csv(images, header=True)
        )
        if "path" not in table.columns:
            raise BatchError(f"{images} has no `path` column (it has {', '.join(table.columns)})")
        return (
            table.select(F.col("path").cast("string"))
            .withColumn("read", _read_file("path"))
            .select("path", "read.content", "read.error")
        )
    reader = spark.read.format("binaryFile")
    if not (_GLOB_CHARS & set(images)):  # a directory: every image file under it, like infer
        reader = reader.option("recursiveFileLookup", "true")
    frame = reader.load(images)
    if not (_GLOB_CHARS & set(images)):
        lower = F.lower(F.col("path"))
        frame = frame.where(F.greatest(*[lower.endswith(s) for s in IMAGE_SUFFIXES]))
    return frame.select("path", "content", F.lit(None).cast("string").alias("error"))


def _read_file(column: str):
    """A column UDF: path -> (content, error), for the paths of a table (a file the executor cannot read: error)."""
    from pyspark.sql import functions as F

    @F.udf("struct<content: binary, error: string>")
    def read(path):
        try:
            with open(path[len("file:") :] if path.startswith("file:") else path, "rb") as f:
                return (f.read(), None)
        except OSError as e:
            return (b"", f"cannot read: {e.strerror or e}")

    return read(column)


def transcriber(model_dir: str, batch_size: int):
    """predict_batch_udf over the model shipped as `model_dir` (a SparkFiles name): content -> text, confidence, error."""
    from pyspark.ml.functions import predict_batch_udf

    def make_predict_fn():
        import mlflow
        import numpy as np
        from pyspark import SparkFiles

        model = mlflow.pyfunc.load_model(SparkFiles.get(model_dir)).unwrap_python_model()

        def predict(content):
            results = model.recognize([bytes(c) if c is not None else b"" for c in content])
            return {
                "text": np.array([r.get("text") for r in results], dtype=object),
                "confidence": np.array([r.get("confidence", np.nan) for r in results], dtype=np.float64),
                "error": np.array([r.get("error") for r in results], dtype=object),
            }

        return predict

    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    # a StructType, not a DDL string: predict_batch_udf checks the type to accept a dict of columns
    fields = [
        StructField("text", StringType()),
        StructField("confidence", DoubleType()),
        StructField("error", StringType()),
    ]
    return predict_batch_udf(make_predict_fn, return_type=StructType(fields), batch_size=batch_size)


def transcribe(spark, model_dir: Path, cfg: BatchConfig) -> dict[str, int]:
    """Transcribe cfg.images with the model in `model_dir` and write cfg.output (Parquet); returns the counts."""
    from pyspark.sql import functions as F

    spark.sparkContext.addFile(str(model_dir), recursive=True)
    frame = image_frame(spark, cfg.images)
    if not frame.limit(1).count():
        raise BatchError(f"no image files in {cfg.images!r} (a directory, a glob, or a table with a path column)")
    frame = frame.repartition(cfg.partitions or spark.sparkContext.defaultParallelism)
    read = transcriber(model_dir.name, cfg.batch_size)("content")
    result = frame.withColumn("r", read).select(
        "path",
        F.when(F.col("error").isNull(), F.col("r.text")).alias("text"),
        F.when(F.col("error").isNull() & F.col("r.error").isNull(), F.col("r.confidence")).alias("confidence"),
        F.coalesce(F.col("error"), F.col("r.error")).alias("error"),
    )
    result.write.parquet(cfg.output)  # fails if it exists: a batch never overwrites earlier results
    written = spark.read.parquet(cfg.output)
    total = written.count()
    return {"images": total, "failed": written.where(F.col("error").isNotNull()).count()}
