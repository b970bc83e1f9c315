"""Step `register`: register an evaluated model if it reads well enough, and move the alias only if it beats the holder.

Inputs:  `model_uri` (runs:/<train_run>/handwriting_recognition_model, models:/m-..., ...; "" = the model
         of the newest finished evaluate run), which must have a finished evaluate run in this experiment
         (tag hwr.model_uri = model_uri, metric test_cer); `model_name` (a line model, whose logged
         metadata says level lines, registers as `<model_name>-lines`); `alias`; `max_cer`.
Outputs: two gates, both logged with their reason (tags hwr.decision, hwr.decision_reason):
         1. the absolute bar: a model whose test CER is above `max_cer` is NOT registered (decision
            `rejected`, with what to do); the default bar keeps a model that reads nothing out of the registry;
         2. a model already registered (same model URI or train run) is not registered twice (decision
            `unchanged`: its version is reused); otherwise a new version of `model_name` is registered,
            tagged with its train run, evaluate run, the data it was evaluated on (hwr.data, hwr.dataset_digest),
            its test CER and, for a fine-tuned model, its parent (hwr.parent_model), with a description that
            `mlflow ui` shows (figures, dataset, training parameters).
         The alias (models:/<model_name>@<alias>) then moves to the version only when its test CER is
         strictly lower than the current holder's, or when no version holds the alias (`promoted`; else
         `kept`). The holder is read right before the move and again a moment after it, so registers running
         at once against one server leave the alias on the best of them (registry/versions.claim_alias). Metrics new_test_cer, champion_test_cer. Uses aliases, never stages. Prints the
         version's URI on stdout (nothing when rejected).

    mlflow run . -e register --env-manager local -P model_uri=runs:/<train_run>/handwriting_recognition_model
"""

from __future__ import annotations

import math

import click
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.registry.gate import METRIC, admissible
from steps.registry.versions import TAG_CER, AliasContention, claim_alias, description, evaluation_of, version_of
from steps.workflow import cli, config, runs

D = config.defaults("register")


class RegistrationError(RuntimeError):
    """The registry refused the model or the model cannot be read."""


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--model-uri", default=D["model_uri"], help="'' = the model of the newest finished evaluate run")
@click.option("--model-name", default=D["model_name"], show_default=True)
@click.option("--alias", default=D["alias"], show_default=True)
@click.option(
    "--max-cer",
    type=click.FloatRange(0),
    default=D["max_cer"],
    show_default=True,
    help="a model whose test CER is above this is not registered",
)
@cli.user_errors(runs.UpstreamNotFound, RegistrationError, AliasContention)
def main(model_uri: str, model_name: str, alias: str, max_cer: float) -> None:
    if not model_name.strip() or not alias.strip():
        raise click.BadParameter("model_name and alias must not be empty")
    params = {"model_uri": model_uri, "model_name": model_name, "alias": alias, "max_cer": max_cer}
    with runs.start_step("register", params) as run:
        evaluation = evaluation_of(model_uri, run.info.experiment_id)
        if not model_uri:
            model_uri = evaluation.data.tags["hwr.model_uri"]
            runs.log(f"registering {model_uri} (model of the newest finished evaluate run {evaluation.info.run_id})")
        try:
            logged = mlflow.models.get_model_info(model_uri)
        except (MlflowException, OSError) as e:
            raise RegistrationError(f"cannot read model {model_uri!r}: {e}") from None
        train_run = evaluation.data.tags.get("hwr.train_run") or logged.run_id or ""
        # Word and line models never share a registered model: a line model goes to <model_name>-lines.
        level = (logged.metadata or {}).get("level", "words")
        model_name = config.registered_name(model_name, level)
        new_cer = evaluation.data.metrics[METRIC]
        mlflow.set_tags({"hwr.model_uri": model_uri, "hwr.evaluate_run": evaluation.info.run_id})
        mlflow.log_metric("new_test_cer", new_cer)
        admit, why = admissible(new_cer, max_cer)
        if not admit:
            mlflow.set_tags({"hwr.decision": "rejected", "hwr.decision_reason": why})
            runs.log(f"not registered: {why}")
            return
        client = MlflowClient()
        version = version_of(client, model_name, model_uri, train_run)
        unchanged = version is not None
        if unchanged:
            runs.log(
                f"{model_uri} is already registered as models:/{model_name}/{version.version}: not registering it again"
            )
        else:
            version = _register(client, model_uri, model_name, evaluation, train_run, new_cer, run.info.run_id)
        version_uri = f"models:/{model_name}/{version.version}"
        # The holder is read only now, right before the move (two registers may run at once: see claim_alias).
        claim = claim_alias(client, model_name, alias, version.version, new_cer)
        promote, reason, holder, champion_cer = claim.promoted, claim.reason, claim.previous, claim.previous_cer
        decision = "promoted" if promote else ("unchanged" if unchanged else "kept")
        mlflow.set_tags(
            {
                "hwr.decision": decision,
                "hwr.decision_reason": reason,
                "hwr.registered_version": version.version,
                "hwr.registered_model_uri": version_uri,
                "hwr.champion_version": claim.champion,
                "hwr.previous_champion_version": holder.version if holder else "",
            }
        )
        mlflow.log_metrics(
            {
                "promoted": float(promote),
                **({"champion_test_cer": champion_cer} if holder is not None and not math.isnan(champion_cer) else {}),
            }
        )
        champion = (
            f"now version {version.version}"
            if promote
            else (f"version {claim.champion} holds it" if claim.champion else "unset")
        )
        runs.log(f"{version_uri}; {model_name}@{alias}: {decision} ({champion}): {reason}")
        click.echo(version_uri)


def _register(client: MlflowClient, model_uri: str, name: str, evaluation, train_run: str, cer: float, run_id: str):
    tags = {
        "hwr.model_uri": model_uri,
        "hwr.train_run": train_run,
        "hwr.evaluate_run": evaluation.info.run_id,
        "hwr.dataset_digest": evaluation.data.tags.get("hwr.dataset_digest", ""),
        "hwr.data": evaluation.data.tags.get("hwr.data", ""),  # the data the gate's CER was measured on
        TAG_CER: repr(cer),
        "hwr.register_run": run_id,
    }
    try:
        version = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as e:
        raise RegistrationError(f"cannot register {model_uri!r} as {name}: {e.message}") from None
    try:
        train = client.get_run(train_run) if train_run else None
    except MlflowException:
        train = None
    if train is not None and train.data.tags.get(config.TAG_PARENT_MODEL):  # lineage: the model it was fine-tuned from
        client.set_model_version_tag(
            name, version.version, config.TAG_PARENT_MODEL, train.data.tags[config.TAG_PARENT_MODEL]
        )
    client.update_model_version(name, version.version, description=description(evaluation, train))
    return version


if __name__ == "__main__":
    main()
