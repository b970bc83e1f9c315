"""Artifact URIs -> directories the steps can read: in place where tf.io.gfile can, downloaded otherwise."""

from __future__ import annotations

from pathlib import Path

import mlflow

# Filesystems tf.io.gfile reads directly (TF's own and tensorflow-io's plugins): no copy needed.
STREAMED_SCHEMES = ("s3", "gs", "hdfs", "az", "http", "https")


class ArtifactError(OSError):
    """An artifact URI that cannot be resolved or read."""


def readable_dir(uri: str) -> str:
    """A directory that tf.io.gfile can read for `uri`, without copying when it can be read in place.

    runs:/ URIs resolve to the run's artifact location (a local path or s3://, gs://, ... that
    tf.data reads directly); models:/ and other MLflow URIs are downloaded; plain paths and
    remote filesystem URIs are returned unchanged.
    """
    if uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        try:
            uri = RunsArtifactRepository.get_underlying_uri(uri)
        except Exception as e:  # unknown run id, bad URI: one clear message
            raise ArtifactError(f"cannot resolve {uri}: {e}") from None
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" not in uri:
        if not Path(uri).exists():
            raise ArtifactError(f"{uri} does not exist")
        return str(Path(uri).resolve())
    if uri.split("://", 1)[0] in STREAMED_SCHEMES:
        return uri
    return local_dir(uri)


def local_dir(uri: str, dst_path: str | None = None) -> str:
    """The local path itself of a local artifact directory URI, else a copy in `dst_path` (which the caller
    owns and removes; without it MLflow picks a temporary directory that nobody removes)."""
    if "://" not in uri and Path(uri).exists():
        return str(Path(uri).resolve())
    if uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        try:  # a run's local artifact folder is read in place, not copied
            underlying = RunsArtifactRepository.get_underlying_uri(uri)
        except Exception as e:
            raise ArtifactError(f"cannot resolve {uri}: {e}") from None
        if underlying.startswith("file://") and Path(underlying[len("file://") :]).is_dir():
            return str(Path(underlying[len("file://") :]).resolve())
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path)
    except Exception as e:
        raise ArtifactError(f"cannot read artifacts at {uri}: {e}") from None
