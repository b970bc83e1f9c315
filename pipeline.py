"""Entry point `main`: download -> preprocess -> train -> evaluate -> register, as nested runs of one parent run.

    mlflow run . -e main --env-manager local                              # offline synthetic sample data
    mlflow run . -e main --env-manager local -P dataset=iam -P epochs=50  # any step parameter, routed to its steps
    mlflow run . -e main --env-manager local -P rerun_from=train          # redo train, evaluate and register
    mlflow run . -e main --env-manager local -P preprocess.seed=7         # <step>.<name>: that step only
    python pipeline.py --epochs 3                                         # the same without `mlflow run`
                                                                          # (python and mlflow from PATH)

Parameters: `-P name=value` goes to every step whose MLproject entry point declares `name` (seed reaches
download, preprocess and train; `-P preprocess.seed=7` reaches only preprocess); MLproject is the only
place defaults live. The URIs that chain the steps (raw_data, data, model_uri) are set from the upstream runs.
Every value is checked (type, range, combinations: steps/workflow/params.py) before the first step starts.

The graph and the run cache are in steps/workflow/chain.py. The log says, per step, whether it ran or was
reused and which run; the parent run gets the chain as tags (hwr.<step>_run, hwr.model_uri,
hwr.registered_model_uri, ...). A failing step fails the parent with the step's name; nothing downstream runs.
"""

from __future__ import annotations

import os
import sys

import mlflow

from steps.workflow import chain, config, params, redaction, runs


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


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        user = parse(argv)
        rerun_from = user.pop("rerun_from", "")
        env_manager = user.pop("step_env_manager", config.defaults("main")["step_env_manager"])
        if rerun_from and rerun_from not in chain.STEPS:
            raise ValueError(f"rerun_from must be one of {', '.join(chain.STEPS)} (or empty), got {rerun_from!r}")
        routed = chain.route(user)
        # every value of every step, before download starts: epochs=-1 must not cost a download and a preprocess
        params.check({step: params.effective(step, routed[step]) for step in chain.STEPS})
    except ValueError as e:
        runs.log(f"error: {e}")
        return 2
    # A source URL may carry user:password@: never store or show it (the download step gets IAM_USER/IAM_PASSWORD).
    for name, value in user.items():
        if redaction.split_credentials(value)[1] and os.environ.get("MLFLOW_RUN_ID"):
            runs.log(redaction.STORED_WARNING.format(name=name, run=os.environ["MLFLOW_RUN_ID"]))
    stored = {"rerun_from": rerun_from, "step_env_manager": env_manager, **redaction.redact_params(user)}
    with runs.start_step("main", stored) as parent:  # resumes the run `mlflow run` made, if any

        def record(step: str, run_id: str, reused: bool, inputs: dict[str, str]) -> None:
            # The effective parameters of every step (defaults included), as <step>.<name>, for comparing runs.
            mlflow.log_params({f"{step}.{k}": v for k, v in mlflow.get_run(run_id).data.params.items()})
            mlflow.set_tags(
                {
                    f"hwr.{step}_run": run_id,
                    f"hwr.{step}_reused": str(reused).lower(),
                    **{f"hwr.{name}": uri for name, uri in inputs.items()},
                }
            )

        try:
            ids = chain.run_steps(chain.STEPS, routed, parent.info.experiment_id, env_manager, rerun_from, record)
        except chain.StepFailed as e:
            runs.log(f"[pipeline] {e}")
            mlflow.set_tag("hwr.failed_step", e.step)
            raise SystemExit(1) from None  # ends the parent run as FAILED

        evaluation, registration = mlflow.get_run(ids["evaluate"]).data, mlflow.get_run(ids["register"]).data
        mlflow.log_metrics({k: v for k, v in evaluation.metrics.items() if k.startswith("test_")})
        mlflow.set_tags(
            {
                k: registration.tags[k]
                for k in ("hwr.registered_model_uri", "hwr.registered_version", "hwr.decision", "hwr.decision_reason")
                if k in registration.tags
            }
        )
        model_uri = f"runs:/{ids['train']}/{config.MODEL_ARTIFACT}"
        registered = registration.tags.get("hwr.registered_model_uri", "not registered")
        runs.log(
            f"[pipeline] done: model {model_uri} -> {registered} "
            f"({registration.tags.get('hwr.decision')}: {registration.tags.get('hwr.decision_reason')})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
