"""Step `register`: register an evaluated model and move the alias only if it beats the current holder.

Inputs:  `model_uri` (runs:/<train_run>/handwriting_recognition_model, models:/m-..., ...; "" = the model
         of the newest finished evaluate run), which must have a finished evaluate run in this experiment
         (tag hwr.model_uri = model_uri, metric test_cer); `model_name`; `alias`.
Outputs: a new version of the registered model (models:/<model_name>/<n>) tagged with its train run,
         evaluate run, dataset digest and test CER. Quality gate: the alias (models:/<model_name>@<alias>)
         moves to it only when its test CER is strictly lower than the current holder's (read from the
         holder's hwr.test_cer tag), or when no version holds the alias yet. The register run records
         the decision and why (tags hwr.decision = promoted | kept, hwr.decision_reason, hwr.registered_version,
         hwr.registered_model_uri; metrics new_test_cer, champion_test_cer). Uses aliases, never stages.
         Prints the registered version's URI on stdout.

    mlflow run . -e register --env-manager local -P model_uri=runs:/<train_run>/handwriting_recognition_model
"""
from __future__ import annotations

import math

import click
import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import config, tracking

D = config.defaults("register")
METRIC = "test_cer"           # the figure the gate compares (logged by evaluate on the test split)
TAG_CER = "hwr.test_cer"      # version tag holding that figure, read back when the version holds the alias


def decide(new_cer: float, champion_cer: float | None) -> tuple[bool, str]:
    """Quality gate: (promote?, why). `champion_cer` is None when no version holds the alias; a NaN
    figure (unknown or not measured) never wins, and a tie keeps the current holder."""
    if math.isnan(new_cer):
        return False, "the new version's test CER is unknown (NaN)"
    if champion_cer is None:
        return True, f"no version holds the alias yet (new test CER {new_cer:.4f})"
    if math.isnan(champion_cer):
        return False, "the current holder's test CER is unknown, so the two cannot be compared: move the alias by hand"
    if new_cer < champion_cer:
        return True, f"new test CER {new_cer:.4f} < champion's {champion_cer:.4f}"
    return False, f"new test CER {new_cer:.4f} does not beat the champion's {champion_cer:.4f}"


def evaluation_of(model_uri: str, experiment_id: str) -> Run:
    """The newest finished evaluate run of `model_uri` (on the test split) in the experiment."""
    runs = mlflow.search_runs([experiment_id], f"tags.`{config.TAG_STEP}` = 'evaluate' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], output_format="list")
    for run in runs:
        if (not model_uri or run.data.tags.get("hwr.model_uri") == model_uri) and METRIC in run.data.metrics:
            return run
    which = f"of {model_uri}" if model_uri else "of any model"
    raise click.ClickException(
        f"no finished evaluate run {which} with a {METRIC} metric in this experiment: run evaluate first "
        f"(mlflow run . -e evaluate --env-manager local -P model_uri={model_uri or '<model URI>'})")


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


@click.command()
@click.option("--model-uri", default=D["model_uri"], help="'' = the model of the newest finished evaluate run")
@click.option("--model-name", default=D["model_name"], show_default=True)
@click.option("--alias", default=D["alias"], show_default=True)
def main(model_uri: str, model_name: str, alias: str) -> None:
    if not model_name.strip() or not alias.strip():
        raise click.BadParameter("model_name and alias must not be empty")
    with tracking.start_step("register", {"model_uri": model_uri, "model_name": model_name, "alias": alias}) as run:
        evaluation = evaluation_of(model_uri, run.info.experiment_id)
        if not model_uri:
            model_uri = evaluation.data.tags["hwr.model_uri"]
            tracking.log(f"registering {model_uri} (model of the newest finished evaluate run {evaluation.info.run_id})")
        try:
            train_run = evaluation.data.tags.get("hwr.train_run") or mlflow.models.get_model_info(model_uri).run_id or ""
        except (MlflowException, OSError) as e:
            raise click.ClickException(f"cannot read model {model_uri!r}: {e}") from None
        new_cer = evaluation.data.metrics[METRIC]
        client = MlflowClient()
        holder, champion_cer = current_holder(client, model_name, alias)

        tags = {"hwr.model_uri": model_uri, "hwr.train_run": train_run, "hwr.evaluate_run": evaluation.info.run_id,
                "hwr.dataset_digest": evaluation.data.tags.get("hwr.dataset_digest", ""), TAG_CER: repr(new_cer),
                "hwr.register_run": run.info.run_id}
        try:
            version = mlflow.register_model(model_uri, model_name, tags=tags)
        except MlflowException as e:
            raise click.ClickException(f"cannot register {model_uri!r} as {model_name}: {e.message}") from None
        version_uri = f"models:/{model_name}/{version.version}"

        promote, reason = decide(new_cer, champion_cer)
        if promote:
            client.set_registered_model_alias(model_name, alias, version.version)
        decision = "promoted" if promote else "kept"
        mlflow.set_tags({"hwr.decision": decision, "hwr.decision_reason": reason, "hwr.model_uri": model_uri,
                         "hwr.evaluate_run": evaluation.info.run_id, "hwr.registered_version": version.version,
                         "hwr.registered_model_uri": version_uri,
                         "hwr.champion_version": version.version if promote else (holder.version if holder else ""),
                         "hwr.previous_champion_version": holder.version if holder else ""})
        mlflow.log_metrics({"new_test_cer": new_cer, "promoted": float(promote),
                            **({"champion_test_cer": champion_cer} if holder and not math.isnan(champion_cer) else {})})
        champion = f"now version {version.version}" if promote else (f"version {holder.version} stays" if holder else "unset")
        tracking.log(f"registered {version_uri}; {model_name}@{alias}: {decision} ({champion}): {reason}")
        click.echo(version_uri)


if __name__ == "__main__":
    main()
