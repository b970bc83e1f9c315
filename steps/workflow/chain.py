"""The pipeline's graph, written as data, and the one orchestrator that runs it with a run cache.

`pipeline.py` (entry point `main`) runs the whole chain; `train` run alone without `data` asks it for
the steps before it. Nothing else launches steps.

Run cache: a step (not register, which is an action) is reused when the experiment holds a FINISHED run
of it whose params equal the ones it would run with now (the passed ones plus its MLproject defaults,
compared as the strings `mlflow run` logs) and whose hwr.code_digest equals the current code's; the
newest such run wins. Upstream run ids are part of the params (runs:/<id>/...), so a rerun upstream
changes every key downstream.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Mapping

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from steps.workflow import config, redaction, runs

STEPS = ("download", "preprocess", "train", "evaluate", "register")
CHAIN = {  # step -> {its parameter: (upstream step, artifact of that step's run)}
    "preprocess": {"raw_data": ("download", config.RAW_ARTIFACT)},
    "train": {"data": ("preprocess", config.DATASET_ARTIFACT)},
    "evaluate": {"model_uri": ("train", config.MODEL_ARTIFACT), "data": ("preprocess", config.DATASET_ARTIFACT)},
    "register": {"model_uri": ("train", config.MODEL_ARTIFACT)},
}
NEVER_REUSED = {"register"}  # registration is an action, not a result to cache


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `extra` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class StepFailed(RuntimeError):
    """A step of the chain failed; `step` names it (its own error was printed by the step)."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


def reusable(step: str, rerun_from: str) -> bool:
    """May an earlier run of `step` be reused? Never for register, nor from `rerun_from` on."""
    return step not in NEVER_REUSED and not (rerun_from and STEPS.index(step) >= STEPS.index(rerun_from))


def route(user: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """{name: value} -> {step: params}: each name to every step declaring it; `step.name` to that step only."""
    routed: dict[str, dict[str, str]] = {step: {} for step in STEPS}
    unknown, chained = [], []
    for key, value in user.items():
        step, _, name = key.rpartition(".")
        targets = [s for s in ([step] if step else STEPS) if s in STEPS and name in config.parameters(s)]
        if not targets:
            unknown.append(key)
        elif any(name in CHAIN.get(s, {}) for s in targets):
            chained.append(key)
        for s in targets:
            routed[s][name] = value
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)}: no step of {', '.join(STEPS)} declares them (see MLproject)"
        )
    if chained:
        raise ValueError(
            f"{', '.join(chained)}: set by the pipeline from the upstream runs; to start from your own "
            "artifact, run the steps alone (mlflow run . -e <step> ...)"
        )
    return routed


def cached_run(step: str, params: Mapping[str, str], experiment_id: str) -> Run | None:
    """Newest FINISHED run of `step` with these params (+ the step's defaults) and the current code digest."""
    return runs.find_run(
        step,
        {**config.defaults(step), **params},
        tags={config.TAG_CODE_DIGEST: config.code_digest()},
        experiment_id=experiment_id,
    )


def run_steps(
    steps: tuple[str, ...],
    routed: Mapping[str, Mapping[str, str]],
    experiment_id: str,
    env_manager: str,
    rerun_from: str = "",
    on_step=None,
) -> dict[str, str]:
    """Run (or reuse) `steps` in chain order as runs of the experiment; returns {step: run id}.

    Each step's chained inputs are the URIs of the runs before it. `on_step(step, run_id, reused, inputs)`
    reports each one. A failing step raises StepFailed and nothing after it runs. Stale RUNNING runs of
    `steps` (their process gone) are marked FAILED first.
    """
    # A step killed with SIGKILL (or a lost machine) leaves its run RUNNING forever: end those first, so the
    # tracking store tells the truth (none of them is FINISHED, so none would be reused anyway).
    for run_id in runs.fail_stale_runs(experiment_id, steps):
        runs.log(f"[pipeline] run {run_id} was RUNNING but its process is gone: marked FAILED")
    ids: dict[str, str] = {}
    for step in steps:
        inputs = {name: f"runs:/{ids[up]}/{artifact}" for name, (up, artifact) in CHAIN.get(step, {}).items()}
        # user:password@ in a URL goes to the step as IAM_USER/IAM_PASSWORD, never as a stored parameter
        params, secrets = redaction.move_credentials({**routed.get(step, {}), **inputs})
        hit = cached_run(step, params, experiment_id) if reusable(step, rerun_from) else None
        if hit:
            ids[step] = hit.info.run_id
            runs.log(f"[pipeline] {step}: reused run {ids[step]} (same code, parameters and inputs)")
        else:
            shown = redaction.redact_params(params)  # a source URL may carry user:password@
            runs.log(f"[pipeline] {step}: running " + " ".join(f"{k}={v}" for k, v in shown.items()))
            if secrets:
                runs.log(f"[pipeline] {step}: credentials from the URL passed as IAM_USER/IAM_PASSWORD, not stored")
            try:
                # storage_dir: MLflow's (empty) directory for 'path' parameters, removed with the step
                with _environ(secrets), tempfile.TemporaryDirectory(prefix="hwr-storage-") as storage:
                    ids[step] = mlflow.projects.run(
                        str(config.ROOT),
                        step,
                        parameters=params,
                        experiment_id=experiment_id,
                        env_manager=env_manager,
                        storage_dir=storage,
                        synchronous=True,
                    ).run_id
            except MlflowException as e:  # ExecutionException when the step's run fails
                rest = ", ".join(steps[steps.index(step) + 1 :]) or "anything else"
                raise StepFailed(
                    step, f"step {step} failed: {e} (its error is printed above); not running {rest}"
                ) from None
            runs.log(f"[pipeline] {step}: ran {ids[step]}")
        if on_step:
            on_step(step, ids[step], bool(hit), inputs)
    return ids
