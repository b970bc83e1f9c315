"""The roles of a multi-worker TF cluster (TF_CONFIG): how many workers, and which one is the chief.

Every worker runs the same `train`; MultiWorkerMirroredStrategy (training/fit.py) all-reduces the gradients,
so all of them end with the same model. Only the chief logs: the others keep their MLflow calls in a
throwaway local store (as TF's own guide has non-chief workers save to temporary paths), so the shared
store gets one run and one model. The chief is the task of type `chief`, else worker 0.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

from steps.workflow import config, runs


def tf_config() -> dict:
    """TF_CONFIG as a dict ({} when unset); a malformed one is TF's own error later, so it is not judged here."""
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return {}


def workers() -> int:
    """Processes taking part in training (the chief, if named, counts as one)."""
    cluster = tf_config().get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def task() -> tuple[str, int]:
    t = tf_config().get("task", {})
    return str(t.get("type", "worker")), int(t.get("index", 0))


def is_chief() -> bool:
    """The one process whose run and model go to the tracking store."""
    if workers() == 1:
        return True
    kind, index = task()
    has_chief = bool(tf_config().get("cluster", {}).get("chief"))
    return kind == "chief" or (not has_chief and kind == "worker" and index == 0)


def log_nothing_shared() -> None:
    """On a non-chief worker, for the rest of the process: MLflow logs into a throwaway sqlite store (removed at
    exit), and resumable state goes under a cache folder of this worker's own (two workers on one host must not
    share it)."""
    import mlflow

    kind, index = task()
    tmp = tempfile.mkdtemp(prefix=f"hwr-{kind}{index}-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    uri = f"sqlite:///{tmp}/mlflow.db"
    # its artifacts under tmp too (a sqlite store's default experiment would put them in ./mlruns)
    experiment = mlflow.MlflowClient(uri).create_experiment("worker", artifact_location=Path(tmp).as_uri())
    os.environ.pop("MLFLOW_RUN_ID", None)
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_ID=experiment)
    os.environ["HWR_CACHE_DIR"] = str(config.cache_dir() / f"{kind}-{index}")
    mlflow.set_tracking_uri(uri)
    runs.log(f"{kind} {index} of {workers()}: training with the chief, which alone logs the run and the model")
