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
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.registry.gate import METRIC, decide
from steps.registry.versions import TAG_CER, current_holder, evaluation_of
from steps.workflow import cli, config, runs

D = config.defaults("register")


class RegistrationError(RuntimeError):
    """The registry refused the model or the model cannot be read."""


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--model-uri", default=D["model_uri"], help="'' = the model of the newest finished evaluate run")
@click.option("--model-name", default=D["model_name"], show_default=True)
@click.option("--alias", default=D["alias"], show_default=True)
@cli.user_errors(runs.UpstreamNotFound, RegistrationError)
def main(model_uri: str, model_name: str, alias: str) -> None:
    if not model_name.strip() or not alias.strip():
        raise click.BadParameter("model_name and alias must not be empty")
    with runs.start_step("register", {"model_uri": model_uri, "model_name": model_name, "alias": alias}) as run:
        evaluation = evaluation_of(model_uri, run.info.experiment_id)
        if not model_uri:
            model_uri = evaluation.data.tags["hwr.model_uri"]
            runs.log(f"registering {model_uri} (model of the newest finished evaluate run {evaluation.info.run_id})")
        try:
            train_run = (
                evaluation.data.tags.get("hwr.train_run") or mlflow.models.get_model_info(model_uri).run_id or ""
            )
        except (MlflowException, OSError) as e:
            raise RegistrationError(f"cannot read model {model_uri!r}: {e}") from None
        new_cer = evaluation.data.metrics[METRIC]
        client = MlflowClient()
        holder, champion_cer = current_holder(client, model_name, alias)

        tags = {
            "hwr.model_uri": model_uri,
            "hwr.train_run": train_run,
            "hwr.evaluate_run": evaluation.info.run_id,
            "hwr.dataset_digest": evaluation.data.tags.get("hwr.dataset_digest", ""),
            TAG_CER: repr(new_cer),
            "hwr.register_run": run.info.run_id,
        }
        try:
            version = mlflow.register_model(model_uri, model_name, tags=tags)
        except MlflowException as e:
            raise RegistrationError(f"cannot register {model_uri!r} as {model_name}: {e.message}") from None
        version_uri = f"models:/{model_name}/{version.version}"

        promote, reason = decide(new_cer, champion_cer)
        if promote:
            client.set_registered_model_alias(model_name, alias, version.version)
        decision = "promoted" if promote else "kept"
        mlflow.set_tags(
            {
                "hwr.decision": decision,
                "hwr.decision_reason": reason,
                "hwr.model_uri": model_uri,
                "hwr.evaluate_run": evaluation.info.run_id,
                "hwr.registered_version": version.version,
                "hwr.registered_model_uri": version_uri,
                "hwr.champion_version": version.version if promote else (holder.version if holder else ""),
                "hwr.previous_champion_version": holder.version if holder else "",
            }
        )
        mlflow.log_metrics(
            {
                "new_test_cer": new_cer,
                "promoted": float(promote),
                **({"champion_test_cer": champion_cer} if holder and not math.isnan(champion_cer) else {}),
            }
        )
        champion = (
            f"now version {version.version}" if promote else (f"version {holder.version} stays" if holder else "unset")
        )
        runs.log(f"registered {version_uri}; {model_name}@{alias}: {decision} ({champion}): {reason}")
        click.echo(version_uri)


if __name__ == "__main__":
    main()
