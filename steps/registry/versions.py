"""Registry calls around the gate: which evaluation a model has, who holds the alias and with what figure."""

from __future__ import annotations

import math

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.registry.gate import METRIC
from steps.workflow import runs

TAG_CER = "hwr.test_cer"  # version tag holding the gate's figure, read back when the version holds the alias


def evaluation_of(model_uri: str, experiment_id: str) -> Run:
    """The newest finished evaluate run of `model_uri` ("" = of any model) with a test CER, in the experiment."""
    run = runs.find_run(
        "evaluate",
        tags={"hwr.model_uri": model_uri} if model_uri else None,
        require=lambda r: METRIC in r.data.metrics,
        experiment_id=experiment_id,
    )
    if run is None:
        which = f"of {model_uri}" if model_uri else "of any model"
        raise runs.UpstreamNotFound(
            f"no finished evaluate run {which} with a {METRIC} metric in this experiment: run evaluate first "
            f"(mlflow run . -e evaluate --env-manager local -P model_uri={model_uri or '<model URI>'})"
        )
    return run


def current_holder(client: MlflowClient, name: str, alias: str) -> tuple[ModelVersion | None, float | None]:
    """(version holding the alias, its test CER; NaN if it has no hwr.test_cer tag), or (None, None)."""
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # no such model yet, or no version with this alias
            return None, None
        raise
    try:
        return holder, float(holder.tags[TAG_CER])
    except (KeyError, ValueError):
        return holder, math.nan
