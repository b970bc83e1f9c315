"""Artifact URIs -> directories the steps can read: in place where tf.io.gfile can, copied otherwise (and said so).

A shared tracking server with a proxied artifact store (`mlflow server --artifacts-destination ...`) gives
runs mlflow-artifacts:/ locations, which only MLflow's client reads: those are copied once into the cache
(an artifact of a finished run never changes, so the copy stays valid and a resumed train finds the same
path), and the step logs that it copied.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import mlflow

from steps.workflow import config, runs

# Filesystems tf.io.gfile reads directly (TF's own and tensorflow-io's plugins): no copy needed.
STREAMED_SCHEMES = ("s3", "gs", "hdfs", "az", "http", "https")
# Locations of run artifacts that never change once the run has logged them: safe to keep a copy of.
RUN_ARTIFACT_SCHEMES = ("runs", "mlflow-artifacts")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: C:\ is a path


class ArtifactError(OSError):
    """An artifact URI that cannot be resolved or read."""


def scheme(uri: str) -> str:
    """The URI's scheme in lower case (mlflow-artifacts:/x -> mlflow-artifacts), or "" for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def _underlying(uri: str) -> str:
    """Where a runs:/ URI's artifacts live (a local path, s3://, mlflow-artifacts:/, ...)."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    try:
        return RunsArtifactRepository.get_underlying_uri(uri)
    except Exception as e:  # unknown run id, bad URI: one clear message
        raise ArtifactError(f"cannot resolve {uri}: {e}") from None


def readable_dir(uri: str) -> str:
    """A directory that tf.io.gfile can read for `uri`, without copying when it can be read in place.

    runs:/ URIs resolve to the run's artifact location: a local path or s3://, gs://, ... is read in
    place; an mlflow-artifacts:/ location (a tracking server's proxied store) is copied once into the
    cache. models:/ and other MLflow URIs are downloaded; plain paths and remote filesystem URIs are
    returned unchanged.
    """
    original = uri
    if scheme(uri) == "runs":
        uri = _underlying(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if not scheme(uri):
        if not Path(uri).exists():
            raise ArtifactError(f"{uri} does not exist")
        return str(Path(uri).resolve())
    if scheme(uri) in STREAMED_SCHEMES:
        return uri
    if scheme(original) in RUN_ARTIFACT_SCHEMES or scheme(uri) in RUN_ARTIFACT_SCHEMES:
        return cached_copy(uri)
    return local_dir(uri)


def cached_copy(uri: str) -> str:
    """A local copy of a run's artifact directory under the cache, downloaded once (atomically)."""
    target = config.cache_dir() / "artifacts" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if target.is_dir():
        runs.log(f"reading {uri} from its local copy {target} (copied earlier; tf.data cannot read {scheme(uri)}:)")
        return str(target)
    runs.log(f"copying {uri} to {target}: tf.data cannot read {scheme(uri)}: URIs in place")
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        got = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(partial))
        os.replace(got, target)
    except OSError as e:
        if not target.is_dir():  # else another process made the same copy first: keep theirs
            raise ArtifactError(f"cannot copy {uri}: {e}") from None
    except Exception as e:  # MlflowException, HTTP errors from the server
        raise ArtifactError(f"cannot read artifacts at {uri}: {e}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return str(target)


def local_dir(uri: str, dst_path: str | None = None) -> str:
    """The local path itself of a local artifact directory URI, else a copy in `dst_path` (which the caller
    owns and removes; without it MLflow picks a temporary directory that nobody removes)."""
    if not scheme(uri) and Path(uri).exists():
        return str(Path(uri).resolve())
    if scheme(uri) == "runs":
        underlying = _underlying(uri)  # a run's local artifact folder is read in place, not copied
        if underlying.startswith("file://") and Path(underlying[len("file://") :]).is_dir():
            return str(Path(underlying[len("file://") :]).resolve())
        if not scheme(underlying) and Path(underlying).is_dir():
            return str(Path(underlying).resolve())
    runs.log(f"copying {uri} to {dst_path or 'a temporary directory'} (not a local folder)")
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path)
    except Exception as e:
        raise ArtifactError(f"cannot read artifacts at {uri}: {e}") from None
