"""The `main` entry point (pipeline.py): argument routing and the run cache in process, then the whole
pipeline end to end through real `mlflow run` subprocesses on a tiny synthetic configuration.

The end-to-end runs share one tracking store and happen in order (each fixture depends on the one
before): a first run from a clean store, an identical second run, then a direct `python pipeline.py`
launch with another preprocess parameter. A failing step runs in a store of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import pipeline
from steps.workflow import chain, config

REPO = Path(__file__).resolve().parent.parent
# max_cer=2: a 1-epoch model reads nothing, and these tests are about the chain, not about the bar
TINY = {
    "num_words": "160",
    "num_writers": "6",
    "epochs": "1",
    "batch_size": "16",
    "workers": "1",
    "max_cer": "2",
    "min_epoch_steps": "1",
}
CHAINED_STEPS = ("download", "preprocess", "train", "evaluate")  # the reusable ones


# ---------------------------------------------------------------- in process: routing and the cache


def test_parse_accepts_what_mlflow_run_and_users_pass():
    assert pipeline.parse(
        ["--rerun-from", "", "--step-env-manager", "local", "--num_words", "160", "--num-writers=6"]
    ) == {"rerun_from": "", "step_env_manager": "local", "num_words": "160", "num_writers": "6"}
    with pytest.raises(ValueError, match="no value after --epochs"):
        pipeline.parse(["--epochs"])
    with pytest.raises(ValueError, match="expected --name value"):
        pipeline.parse(["epochs", "3"])


def test_route_sends_each_parameter_to_every_step_declaring_it():
    routed = chain.route({"seed": "7", "epochs": "3", "dataset": "iam", "evaluate.eval_split": "val", "alias": "best"})
    assert routed == {
        "download": {"seed": "7", "dataset": "iam"},
        "preprocess": {"seed": "7"},
        "train": {"seed": "7", "epochs": "3"},
        "evaluate": {"eval_split": "val"},
        "register": {"alias": "best"},
    }
    with pytest.raises(ValueError, match="unknown parameter.*epoch, train.dataset"):
        chain.route({"epoch": "3", "train.dataset": "iam"})
    with pytest.raises(ValueError, match="model_uri: set by the pipeline"):
        chain.route({"model_uri": "models:/x/1"})


def test_reusable_never_register_nor_from_rerun_from_on():
    assert [s for s in chain.STEPS if chain.reusable(s, "")] == ["download", "preprocess", "train", "evaluate"]
    assert [s for s in chain.STEPS if chain.reusable(s, "train")] == ["download", "preprocess"]
    assert not any(chain.reusable(s, "download") for s in chain.STEPS)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rerun-from", "training"], "rerun_from must be one of download, preprocess"),
        (["--epochs", "1", "--nosuch", "2"], "unknown parameter(s) nosuch"),
    ],
)
def test_bad_arguments_exit_2_before_any_run(argv, message, capsys):
    assert pipeline.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cache_takes_the_newest_finished_run_with_equal_params_and_code(mlflow_store):
    client, experiment_id = mlflow_store, os.environ["MLFLOW_EXPERIMENT_ID"]

    def step_run(status="FINISHED", digest=None, **params):
        run = client.create_run(
            experiment_id, tags={config.TAG_STEP: "preprocess", config.TAG_CODE_DIGEST: digest or config.code_digest()}
        )
        # what `mlflow run` logs: every declared parameter, shell-quoted ('' -> "''")
        logged = {k: str(v) for k, v in config.defaults("preprocess").items()} | {"raw_data": "''"} | params
        for k, v in logged.items():
            client.log_param(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    old = step_run(raw_data="runs:/abc/raw")
    new = step_run(raw_data="runs:/abc/raw")
    step_run(raw_data="runs:/abc/raw", status="FAILED")
    step_run(raw_data="runs:/abc/raw", digest="0ther")
    step_run(raw_data="runs:/abc/raw", shard_size="50")
    default_raw = step_run()
    assert old != new
    assert chain.cached_run("preprocess", {"raw_data": "runs:/abc/raw"}, experiment_id).info.run_id == new
    assert chain.cached_run("preprocess", {"raw_data": "runs:/abc/raw", "shard_size": "50"}, experiment_id)
    assert chain.cached_run("preprocess", {"raw_data": "runs:/other/raw"}, experiment_id) is None
    assert chain.cached_run("preprocess", {}, experiment_id).info.run_id == default_raw  # '' logged as ''
    assert chain.cached_run("train", {"data": "runs:/abc/dataset"}, experiment_id) is None


# ---------------------------------------------------------------- end to end through `mlflow run`


@dataclass
class Store:
    uri: str
    experiment_id: str
    client: MlflowClient
    env: dict[str, str]

    def runs(self, query: str = "") -> list:
        return self.client.search_runs([self.experiment_id], query, max_results=1000)

    def by_step(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for run in self.runs():
            step = run.data.tags.get("mlflow.project.entryPoint") or run.data.tags.get(config.TAG_STEP, "?")
            out.setdefault(step, set()).add(run.info.run_id)  # a direct `python pipeline.py` parent: hwr.step=main
        return out


@dataclass
class Launch:
    proc: subprocess.CompletedProcess
    parent: object  # the main run (mlflow.entities.Run)
    new: dict[str, set[str]]  # entry point -> ids of runs this launch created
    log: str


@pytest.fixture(scope="module")
def store(tmp_path_factory, _empty_mlflow_db) -> Store:
    tmp = tmp_path_factory.mktemp("pipeline")
    shutil.copyfile(_empty_mlflow_db, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("pipeline", artifact_location=(tmp / "artifacts").as_uri())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_EXPERIMENT_ID=experiment_id,
        HWR_CACHE_DIR=str(tmp / "cache"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    return Store(uri, experiment_id, client, env)


def launch(store: Store, *command: str, **params: str) -> Launch:
    """`mlflow run . -e main --env-manager local -P k=v ...` (or `command` as given) in the store."""
    before = store.by_step()
    if not command:
        command = (
            str(Path(sys.executable).parent / "mlflow"),
            "run",
            ".",
            "-e",
            "main",
            "--env-manager",
            "local",
            *[a for k, v in params.items() for a in ("-P", f"{k}={v}")],
        )
    proc = subprocess.run(command, cwd=REPO, env=store.env, capture_output=True, text=True, timeout=600)
    after = store.by_step()
    new = {step: ids - before.get(step, set()) for step, ids in after.items() if ids - before.get(step, set())}
    (parent,) = [store.client.get_run(i) for i in new.get("main", set())]
    return Launch(proc, parent, new, proc.stderr)


def children(store: Store, parent) -> dict[str, object]:
    runs = store.runs(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {r.data.tags["mlflow.project.entryPoint"]: r for r in runs}


def artifact_paths(client: MlflowClient, run_id: str, path: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, path)}


@pytest.fixture(scope="module")
def first(store) -> Launch:
    return launch(store, **TINY)


@pytest.fixture(scope="module")
def second(store, first) -> Launch:
    return launch(store, **TINY)


@pytest.fixture(scope="module")
def changed(store, second) -> Launch:
    """Another preprocess parameter, launched as `python pipeline.py` (no `mlflow run`), names with dashes."""
    args = [a for k, v in {**TINY, "shard_size": "50"}.items() for a in (f"--{k.replace('_', '-')}", v)]
    return launch(store, sys.executable, "pipeline.py", *args)


@pytest.mark.slow
def test_first_run_makes_five_nested_runs_chained_by_uris(store, first):
    assert first.proc.returncode == 0, first.log[-3000:]
    parent = first.parent
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow.project.entryPoint"] == "main"
    steps = children(store, parent)
    assert set(steps) == set(chain.STEPS)
    assert all(
        r.info.status == "FINISHED"
        and r.data.tags[config.TAG_STEP] == s
        and r.data.tags[config.TAG_CODE_DIGEST] == config.code_digest()
        for s, r in steps.items()
    )
    ids = {s: r.info.run_id for s, r in steps.items()}
    model_uri = f"runs:/{ids['train']}/{config.MODEL_ARTIFACT}"
    dataset_uri = f"runs:/{ids['preprocess']}/{config.DATASET_ARTIFACT}"
    p = {s: r.data.params for s, r in steps.items()}
    # the chain of artifact URIs
    assert p["preprocess"]["raw_data"] == f"runs:/{ids['download']}/{config.RAW_ARTIFACT}"
    assert p["train"]["data"] == dataset_uri
    assert p["evaluate"]["model_uri"] == model_uri and p["evaluate"]["data"] == dataset_uri
    assert p["register"]["model_uri"] == model_uri
    # user parameters reach the steps declaring them; MLproject defaults apply to the rest
    assert (p["download"]["num_words"], p["download"]["num_writers"]) == ("160", "6")
    assert (p["train"]["epochs"], p["train"]["batch_size"]) == ("1", "16")
    assert p["preprocess"]["shard_size"] == str(config.defaults("preprocess")["shard_size"])
    assert p["evaluate"]["eval_split"] == config.defaults("evaluate")["eval_split"]
    # artifacts of each step
    assert {config.WORDS_TXT, config.WORDS_ARCHIVE} <= artifact_paths(
        store.client, ids["download"], config.RAW_ARTIFACT
    )
    assert {config.CHARSET_FILE, config.STATS_FILE, config.MANIFEST_FILE} <= artifact_paths(
        store.client, ids["preprocess"], config.DATASET_ARTIFACT
    )
    mlflow.set_tracking_uri(store.uri)
    try:
        assert mlflow.models.get_model_info(model_uri).run_id == ids["train"]
    finally:
        mlflow.set_tracking_uri(None)
    assert steps["train"].data.tags["hwr.onednn"] == "on"  # config.TRAINING_ENV, whatever the CPU
    assert "test_cer" in steps["evaluate"].data.metrics
    assert steps["evaluate"].data.tags["hwr.model_uri"] == model_uri
    # the registry: version 1, champion
    champion = store.client.get_model_version_by_alias(config.REGISTERED_MODEL, "champion")
    assert str(champion.version) == "1" and champion.tags["hwr.train_run"] == ids["train"]
    assert champion.tags["hwr.evaluate_run"] == ids["evaluate"]
    assert float(champion.tags["hwr.test_cer"]) == steps["evaluate"].data.metrics["test_cer"]
    # the parent holds the chain and the outcome
    tags = parent.data.tags
    assert all(tags[f"hwr.{s}_run"] == ids[s] and tags[f"hwr.{s}_reused"] == "false" for s in chain.STEPS)
    assert tags["hwr.model_uri"] == model_uri and tags["hwr.data"] == dataset_uri
    assert (
        tags["hwr.registered_model_uri"] == f"models:/{config.REGISTERED_MODEL}/1"
        and tags["hwr.decision"] == "promoted"
    )
    assert parent.data.metrics["test_cer"] == steps["evaluate"].data.metrics["test_cer"]
    assert parent.data.params["epochs"] == "1"
    # and every step's effective parameters, defaults included, as <step>.<name>
    assert parent.data.params["train.epochs"] == "1" and parent.data.params["download.num_words"] == "160"
    assert parent.data.params["train.conv_filters"] == str(config.defaults("train")["conv_filters"])
    for s in chain.STEPS:
        assert f"[pipeline] {s}: ran {ids[s]}" in first.log


@pytest.mark.slow
def test_identical_second_run_reuses_every_step_but_register(store, first, second):
    assert second.proc.returncode == 0, second.log[-3000:]
    assert set(second.new) == {"main", "register"} and len(second.new["register"]) == 1
    assert set(children(store, second.parent)) == {"register"}
    for s in CHAINED_STEPS:
        reused = first.parent.data.tags[f"hwr.{s}_run"]
        assert f"[pipeline] {s}: reused run {reused}" in second.log
        assert (
            second.parent.data.tags[f"hwr.{s}_run"] == reused and second.parent.data.tags[f"hwr.{s}_reused"] == "true"
        )
    # the same model again: not registered twice, version 1 stays the champion
    assert second.parent.data.tags["hwr.registered_model_uri"] == f"models:/{config.REGISTERED_MODEL}/1"
    assert second.parent.data.tags["hwr.decision"] == "unchanged"
    assert [str(v.version) for v in store.client.search_model_versions(f"name = '{config.REGISTERED_MODEL}'")] == ["1"]
    assert str(store.client.get_model_version_by_alias(config.REGISTERED_MODEL, "champion").version) == "1"


@pytest.mark.slow
def test_changed_preprocess_parameter_reruns_from_preprocess(store, first, changed):
    assert changed.proc.returncode == 0, changed.log[-3000:]
    assert set(changed.new) == {"main", "preprocess", "train", "evaluate", "register"}  # main: made by pipeline.py
    assert changed.parent.data.params["shard_size"] == "50" and changed.parent.data.params["rerun_from"] == "''"
    download = first.parent.data.tags["hwr.download_run"]
    assert f"[pipeline] download: reused run {download}" in changed.log
    steps = children(store, changed.parent)
    assert steps["preprocess"].data.params["shard_size"] == "50"
    assert steps["preprocess"].data.params["raw_data"] == f"runs:/{download}/{config.RAW_ARTIFACT}"
    assert steps["train"].data.params["data"] == f"runs:/{steps['preprocess'].info.run_id}/{config.DATASET_ARTIFACT}"
    reg = steps["register"].data
    promoted = reg.metrics["new_test_cer"] < reg.metrics["champion_test_cer"]
    assert reg.tags["hwr.decision"] == ("promoted" if promoted else "kept")


@pytest.mark.slow
def test_a_failing_step_fails_the_parent_naming_it(mlflow_store, mlflow_run):
    proc = mlflow_run("-e", "main", "--env-manager", "local", "-P", "dataset=nonexistent", "-P", "epochs=1")
    assert proc.returncode != 0
    assert "step download failed" in proc.stderr and "nonexistent" in proc.stderr
    assert "not running preprocess, train, evaluate, register" in proc.stderr
    runs = mlflow_store.search_runs([os.environ["MLFLOW_EXPERIMENT_ID"]])
    by_entry = {r.data.tags["mlflow.project.entryPoint"]: r for r in runs}
    assert set(by_entry) == {"main", "download"}
    assert by_entry["main"].info.status == "FAILED" and by_entry["download"].info.status == "FAILED"
    assert by_entry["main"].data.tags["hwr.failed_step"] == "download"
    assert by_entry["download"].data.tags["mlflow.parentRunId"] == by_entry["main"].info.run_id


@pytest.mark.slow
def test_credentials_in_a_source_url_reach_download_as_env_and_are_stored_nowhere(
    http_server, mlflow_store, monkeypatch, capfd
):
    """`-P source=http://user:pw@host/...` through main: the server gets basic auth, no run or log line holds it."""
    import base64
    import json

    from tests.steps.sources.test_http import PASSWORD, USER, mirror_zip

    mirror_zip(http_server.root / "IAM_Words.zip")
    http_server.auth = (USER, PASSWORD)
    monkeypatch.setenv("IAM_AUTH_HOST", "127.0.0.1")
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    url = http_server.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "IAM_Words.zip"
    routed = chain.route({"dataset": "iam", "source": url})
    ids = chain.run_steps(("download",), routed, os.environ["MLFLOW_EXPERIMENT_ID"], "local")

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert {h.get("Authorization") for _, h in http_server.requests} == {f"Basic {token}"}
    run = mlflow_store.get_run(ids["download"])
    assert run.info.status == "FINISHED" and run.data.params["source"] == http_server.url + "IAM_Words.zip"
    out = capfd.readouterr()
    assert PASSWORD not in json.dumps([run.data.params, run.data.tags]) + out.out + out.err
    assert "passed as IAM_USER/IAM_PASSWORD, not stored" in out.err
    assert "IAM_PASSWORD" not in os.environ  # set for the child only
