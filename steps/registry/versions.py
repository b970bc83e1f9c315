"""Registry calls around the gate: which evaluation a model has, who holds the alias and with what figure."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps.registry.gate import METRIC, decide
from steps.workflow import runs

TAG_CER = "hwr.test_cer"  # version tag holding the gate's figure, read back when the version holds the alias
# The registry has no compare-and-set on aliases. A register that read the old holder just before another moved
# the alias can still move it after; waiting this long after our own move and reading again catches that
# (a read-then-set takes one request, far less than this), and the better version then takes it back.
SETTLE_SECONDS = 1.0
MAX_MOVES = 10


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
        model = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # no such model yet
            return None, None
        raise
    # Read from the model's alias map: a missing alias is RESOURCE_DOES_NOT_EXIST from a local store but
    # INVALID_PARAMETER_VALUE from a tracking server, so get_model_version_by_alias's error cannot tell.
    if alias not in model.aliases:
        return None, None
    holder = client.get_model_version(name, model.aliases[alias])
    try:
        return holder, float(holder.tags[TAG_CER])
    except (KeyError, ValueError):
        return holder, math.nan


def version_of(client: MlflowClient, name: str, model_uri: str, train_run: str) -> ModelVersion | None:
    """The version of `name` already registered for this model (same model URI, or same train run), if any."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for v in sorted(versions, key=lambda v: int(v.version)):
        if v.tags.get("hwr.model_uri") == model_uri or (train_run and v.tags.get("hwr.train_run") == train_run):
            return v
    return None


def description(evaluation: Run, train: Run | None) -> str:
    """What `mlflow ui` shows for a version: its figures, data and the parameters that made it."""
    m, t = evaluation.data.metrics, evaluation.data.tags
    lines = [
        f"Test CER {m.get('test_cer', math.nan):.4f} (beam {m.get('test_cer_beam', math.nan):.4f}), "
        f"WER {m.get('test_wer', math.nan):.4f} on {int(m.get('test_samples', 0))} test samples.",
        f"Dataset {t.get('hwr.data', '?')} (digest {t.get('hwr.dataset_digest', '?')}).",
    ]
    if train is not None:
        p = train.data.params
        keys = (
            "image_height",
            "image_width",
            "conv_filters",
            "width_pools",
            "column_pool",
            "rnn_units",
            "dense_units",
            "dropout",
            "shortcut",
            "epochs",
            "batch_size",
            "learning_rate",
            "seed",
        )
        lines.append("Trained with " + ", ".join(f"{k}={p[k]}" for k in keys if k in p) + ".")
        if "best_val_cer" in train.data.metrics:
            lines.append(
                f"Best validation CER {train.data.metrics['best_val_cer']:.4f} after "
                f"{int(train.data.metrics.get('epochs_run', 0))} epochs (train run {train.info.run_id})."
            )
    return "\n".join(lines)


class AliasContention(RuntimeError):
    """The alias kept moving away from a better version (registers racing without end)."""


@dataclass(frozen=True)
class Claim:
    promoted: bool  # the alias held the version when claim_alias returned
    reason: str
    previous: ModelVersion | None  # the holder when the claim began, and its test CER (NaN: unknown)
    previous_cer: float | None
    champion: str  # the version holding the alias when the claim ended ("" = none)


def claim_alias(client: MlflowClient, name: str, alias: str, version: str, cer: float) -> Claim:
    """Move `alias` to `version` if its test CER beats the holder's, as a compare-and-set in spirit: the holder
    is re-read right before each move, and after a move, once more a settle interval later; a concurrent
    register that moved the alias meanwhile is compared again (a better one keeps it, a worse one loses it)."""
    previous, previous_cer = holder, champion_cer = current_holder(client, name, alias)

    def claim(promoted: bool, reason: str) -> Claim:
        return Claim(promoted, reason, previous, previous_cer, str(holder.version) if holder else "")

    if holder is not None and str(holder.version) == str(version):
        return claim(False, "it already holds the alias")
    promoted, reason = decide(cer, champion_cer)
    if not promoted:
        return claim(False, reason)
    for _ in range(MAX_MOVES):
        client.set_registered_model_alias(name, alias, version)
        time.sleep(SETTLE_SECONDS)
        holder, champion_cer = current_holder(client, name, alias)
        if holder is not None and str(holder.version) == str(version):
            return claim(True, reason)
        runs.log(f"{name}@{alias} moved to version {holder.version if holder else '(none)'} meanwhile: comparing again")
        again, why = decide(cer, champion_cer)
        if not again:
            return claim(False, f"{why} (version {holder.version} took the alias meanwhile)")
    raise AliasContention(f"{name}@{alias} kept moving away from version {version}: {MAX_MOVES} moves, none stuck")
