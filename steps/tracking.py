"""MLflow wiring shared by the step CLIs: start a step's run, find upstream runs, resolve artifact URIs.

Pure logic stays in the other modules; this is the only place (besides the CLIs) that talks to MLflow.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import mlflow
from mlflow.entities import Run

from steps import config


def start_step(step: str, params: dict[str, object]) -> mlflow.ActiveRun:
    """Start (or, under `mlflow run`, resume via MLFLOW_RUN_ID) the run of a step and tag it.

    `mlflow run` has already logged the declared parameters; a direct `python -m steps.x` has not,
    so only the missing ones are logged (re-logging a param with another string value is an error).
    """
    run = mlflow.start_run()
    mlflow.set_tags({config.TAG_STEP: step, config.TAG_CODE_DIGEST: config.code_digest()})
    logged = mlflow.get_run(run.info.run_id).data.params
    missing = {k: param_value(v) for k, v in params.items() if k not in logged}
    if missing:
        mlflow.log_params(missing)
    return run


def param_value(value: object) -> str:
    """A parameter as `mlflow run` stores it (shell-quoted: "" becomes "''"), so direct and
    `mlflow run` launches of a step log, and are matched by, the same strings."""
    from mlflow.utils.string_utils import quote

    return quote(str(value))


def log(message: str) -> None:
    """Progress and decisions go to stderr, so stdout stays clean for results (infer)."""
    print(message, file=sys.stderr, flush=True)


def find_run(step: str, params: dict[str, object] | None = None, experiment_id: str | None = None) -> Run | None:
    """Newest FINISHED run of `step` in the experiment whose params equal `params` (compared as strings)."""
    if experiment_id is None:
        active = mlflow.active_run()
        experiment_id = active.info.experiment_id if active else os.environ.get("MLFLOW_EXPERIMENT_ID", "0")
    clauses = [f"tags.`{config.TAG_STEP}` = '{step}'", "attributes.status = 'FINISHED'"]
    # Double-quoted literals: stored values are shell-quoted and so may hold single quotes.
    clauses += [f'params.`{k}` = "{param_value(v)}"' for k, v in (params or {}).items()]
    runs = mlflow.search_runs([experiment_id], " and ".join(clauses), order_by=["attributes.start_time DESC"],
                              max_results=1, output_format="list")
    return runs[0] if runs else None


def upstream_uri(uri: str, step: str, artifact: str, params: dict[str, object] | None = None) -> str:
    """`uri` if given, else `runs:/<id>/<artifact>` of the newest matching finished run of `step`."""
    if uri:
        return uri
    run = find_run(step, params)
    if run is None:
        wanted = ", ".join(f"{k}={v}" for k, v in (params or {}).items()) or "any parameters"
        raise click.ClickException(
            f"no finished '{step}' run ({wanted}) in this experiment: run `mlflow run . -e {step}` first "
            f"or pass the artifact URI explicitly")
    found = f"runs:/{run.info.run_id}/{artifact}"
    log(f"using {found} (newest finished '{step}' run, started {run.info.start_time})")
    return found


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
            raise click.ClickException(f"cannot resolve {uri}: {e}") from None
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" not in uri:
        if not Path(uri).exists():
            raise click.ClickException(f"{uri} does not exist")
        return str(Path(uri).resolve())
    if uri.split("://", 1)[0] in ("s3", "gs", "hdfs", "az", "http", "https"):
        return uri
    return local_dir(uri)


def local_dir(uri: str) -> str:
    """A local copy (or the local path itself) of an artifact directory URI."""
    if "://" not in uri and Path(uri).exists():
        return str(Path(uri).resolve())
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as e:
        raise click.ClickException(f"cannot read artifacts at {uri}: {e}") from None
