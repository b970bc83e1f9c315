"""Entry point `main`: download -> preprocess -> train -> evaluate -> register, as nested runs of one parent run.

    mlflow run . -e main --env-manager local                              # offline synthetic sample data
    mlflow run . -e main --env-manager local -P dataset=iam -P epochs=50  # any step parameter, routed to its steps
    mlflow run . -e main --env-manager local -P rerun_from=train          # redo train, evaluate and register
    mlflow run . -e main --env-manager local -P preprocess.seed=7         # <step>.<name>: that step only
    python pipeline.py --epochs 3                                         # the same without `mlflow run`
                                                                          # (python and mlflow from PATH)

Parameters: `-P name=value` goes to every step whose MLproject entry point declares `name` (seed reaches
download, preprocess and train; `-P preprocess.seed=7` reaches only preprocess); MLproject is the only
place defaults live.
The URIs that chain the steps (raw_data, data, model_uri) are set here, from the upstream runs.

Run cache: a step (not register, which is an action) is reused when the experiment holds a FINISHED run
of it whose params equal the ones it would run with now (the passed ones plus its MLproject defaults,
compared as the strings `mlflow run` logs) and whose hwr.code_digest equals the current code's; the
newest such run wins. Upstream run ids are part of the params (runs:/<id>/...), so a rerun upstream
changes every key downstream. The log says, per step, whether it ran or was reused and which run;
the parent run gets the chain as tags (hwr.<step>_run, hwr.model_uri, hwr.registered_model_uri, ...).
A failing step fails the parent with the step's name; nothing downstream runs.
"""
from __future__ import annotations

import sys

import mlflow
from mlflow.exceptions import MlflowException

from steps import config, tracking

STEPS = ("download", "preprocess", "train", "evaluate", "register")
CHAIN = {  # step -> {its parameter: (upstream step, artifact of that step's run)}
    "preprocess": {"raw_data": ("download", config.RAW_ARTIFACT)},
    "train": {"data": ("preprocess", config.DATASET_ARTIFACT)},
    "evaluate": {"model_uri": ("train", config.MODEL_ARTIFACT), "data": ("preprocess", config.DATASET_ARTIFACT)},
    "register": {"model_uri": ("train", config.MODEL_ARTIFACT)},
}
NEVER_REUSED = {"register"}  # registration is an action, not a result to cache


def reusable(step: str, rerun_from: str) -> bool:
    """May an earlier run of `step` be reused? Never for register, nor from `rerun_from` on."""
    return step not in NEVER_REUSED and not (rerun_from and STEPS.index(step) >= STEPS.index(rerun_from))


def parse(argv: list[str]) -> dict[str, str]:
    """`--name value` / `--name=value` pairs (what `mlflow run` passes) -> {name: value}, dashes read as _."""
    args, rest = {}, list(argv)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--") or len(flag) < 3:
            raise ValueError(f"expected --name value, got {flag!r}")
        name, eq, value = flag[2:].partition("=")
        if not eq:
            if not rest:
                raise ValueError(f"no value after {flag}")
            value = rest.pop(0)
        args[name.replace("-", "_")] = value
    return args


def route(user: dict[str, str]) -> dict[str, dict[str, str]]:
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
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}: no step of {', '.join(STEPS)} declares them "
                         "(see MLproject)")
    if chained:
        raise ValueError(f"{', '.join(chained)}: set by the pipeline from the upstream runs; to start from your own "
                         "artifact, run the steps alone (mlflow run . -e <step> ...)")
    return routed


def cached_run(step: str, params: dict[str, str], experiment_id: str):
    """Newest FINISHED run of `step` with these params (+ the step's defaults) and the current code digest."""
    wanted = {k: tracking.param_value(v) for k, v in {**config.defaults(step), **params}.items()}  # as mlflow run logs
    query = (f"tags.`{config.TAG_STEP}` = '{step}' and tags.`{config.TAG_CODE_DIGEST}` = '{config.code_digest()}' "
             "and attributes.status = 'FINISHED'")
    runs = mlflow.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], output_format="list")
    return next((r for r in runs if all(r.data.params.get(k) == v for k, v in wanted.items())), None)


def main(argv: list[str]) -> int:
    try:
        user = parse(argv)
        rerun_from = user.pop("rerun_from", "")
        env_manager = user.pop("step_env_manager", config.defaults("main")["step_env_manager"])
        if rerun_from and rerun_from not in STEPS:
            raise ValueError(f"rerun_from must be one of {', '.join(STEPS)} (or empty), got {rerun_from!r}")
        routed = route(user)
    except ValueError as e:
        tracking.log(f"error: {e}")
        return 2
    params = {"rerun_from": rerun_from, "step_env_manager": env_manager, **user}
    with tracking.start_step("main", params) as parent:  # resumes the run `mlflow run` made, if any
        experiment_id, ids = parent.info.experiment_id, {}
        for step in STEPS:
            inputs = {name: f"runs:/{ids[up]}/{artifact}" for name, (up, artifact) in CHAIN.get(step, {}).items()}
            step_params = {**routed[step], **inputs}
            hit = cached_run(step, step_params, experiment_id) if reusable(step, rerun_from) else None
            if hit:
                ids[step] = hit.info.run_id
                tracking.log(f"[pipeline] {step}: reused run {ids[step]} (same code, parameters and inputs)")
            else:
                shown = " ".join(f"{k}={v}" for k, v in step_params.items())
                tracking.log(f"[pipeline] {step}: running {shown}")
                try:
                    ids[step] = mlflow.projects.run(str(config.ROOT), step, parameters=step_params,
                                                    experiment_id=experiment_id, env_manager=env_manager,
                                                    synchronous=True).run_id
                except MlflowException as e:  # ExecutionException when the step's run fails
                    tracking.log(f"[pipeline] step {step} failed: {e} (its error is printed above); "
                                 f"not running {', '.join(STEPS[STEPS.index(step) + 1:]) or 'anything else'}")
                    mlflow.set_tag("hwr.failed_step", step)
                    raise SystemExit(1)  # ends the parent run as FAILED
                tracking.log(f"[pipeline] {step}: ran {ids[step]}")
            mlflow.set_tags({f"hwr.{step}_run": ids[step], f"hwr.{step}_reused": str(bool(hit)).lower(),
                             **{f"hwr.{name}": uri for name, uri in inputs.items()}})

        evaluation, registration = mlflow.get_run(ids["evaluate"]).data, mlflow.get_run(ids["register"]).data
        mlflow.log_metrics({k: v for k, v in evaluation.metrics.items() if k.startswith("test_")})
        mlflow.set_tags({k: registration.tags[k] for k in ("hwr.registered_model_uri", "hwr.registered_version",
                                                          "hwr.decision", "hwr.decision_reason") if k in registration.tags})
        tracking.log(f"[pipeline] done: model {inputs['model_uri']} -> {registration.tags.get('hwr.registered_model_uri')} "
                     f"({registration.tags.get('hwr.decision')}: {registration.tags.get('hwr.decision_reason')})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
