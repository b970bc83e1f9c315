"""A shared tracking server, for real: PostgreSQL as the backend and registry store, `mlflow server` proxying
the artifacts (mlflow-artifacts:/), and the tiny pipeline run against it with MLFLOW_TRACKING_URI=http://...:
nested runs, the run cache, the registry and its alias, `serve` of the champion through the server, and two
registers racing for the alias.

The launches share one experiment on the server and happen in order (each fixture needs the one before).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from steps.workflow import chain, config
from tests.scaleout import engines
from tests.test_pipeline import TINY  # the same tiny main run as the local-store tests

pytestmark = [pytest.mark.slow, pytest.mark.engines]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Launch:
    proc: subprocess.CompletedProcess
    steps: dict[str, object]  # entry point -> its nested run of this launch
    parent: object


@pytest.fixture(scope="module")
def experiment(tracking) -> str:
    return tracking.client().create_experiment("shared")


def launch_main(tracking, experiment: str) -> Launch:
    """`mlflow run . -e main` with the tiny parameters against the tracking server."""
    client = tracking.client()
    before = {r.info.run_id for r in client.search_runs([experiment], max_results=1000)}
    command = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "-e", "main", "--env-manager", "local"]
    command += [a for k, v in TINY.items() for a in ("-P", f"{k}={v}")]
    proc = subprocess.run(command, cwd=REPO, env=tracking.env(experiment), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    new = [r for r in client.search_runs([experiment], max_results=1000) if r.info.run_id not in before]
    (parent,) = [r for r in new if r.data.tags.get("mlflow.project.entryPoint") == "main"]
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return Launch(proc, {r.data.tags["mlflow.project.entryPoint"]: r for r in children}, parent)


@pytest.fixture(scope="module")
def first(tracking, experiment) -> Launch:
    return launch_main(tracking, experiment)


@pytest.fixture(scope="module")
def second(tracking, experiment, first) -> Launch:
    return launch_main(tracking, experiment)


def test_the_pipeline_runs_against_the_server_with_proxied_artifacts(tracking, experiment, first):
    import psycopg

    assert set(first.steps) == set(chain.STEPS)
    assert all(r.info.status == "FINISHED" for r in [first.parent, *first.steps.values()])
    # every artifact went through the server's proxy into --artifacts-destination
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in first.steps.values())
    preprocess, train = first.steps["preprocess"], first.steps["train"]
    shards = list(tracking.server.artifacts.glob(f"{experiment}/{preprocess.info.run_id}/artifacts/dataset/*.tfrecord"))
    assert shards
    # tf.data cannot read mlflow-artifacts:/ in place: train says it copies the dataset (once, into the cache)
    assert f"copying mlflow-artifacts:/{experiment}/{preprocess.info.run_id}/artifacts/dataset" in first.proc.stderr
    assert train.data.params["data"] == f"runs:/{preprocess.info.run_id}/{config.DATASET_ARTIFACT}"
    # the runs and the registry live in PostgreSQL
    with psycopg.connect(f"host=127.0.0.1 port={tracking.postgres.port} user=hwr dbname=mlflow") as db:
        stored = {row[0] for row in db.execute("select run_uuid from runs where experiment_id = %s", (experiment,))}
        aliases = db.execute(
            "select alias, version from registered_model_aliases where name = %s", (config.REGISTERED_MODEL,)
        ).fetchall()
    assert {r.info.run_id for r in [first.parent, *first.steps.values()]} <= stored
    assert aliases == [(config.CHAMPION_ALIAS, 1)]
    champion = tracking.client().get_model_version_by_alias(config.REGISTERED_MODEL, config.CHAMPION_ALIAS)
    assert champion.tags["hwr.train_run"] == train.info.run_id
    assert first.parent.data.tags["hwr.decision"] == "promoted"


def test_a_second_launch_reuses_every_step_but_register(first, second):
    for step in ("download", "preprocess", "train", "evaluate"):
        assert f"[pipeline] {step}: reused run {first.steps[step].info.run_id}" in second.proc.stderr
    assert set(second.steps) == {"register"}  # reused steps start no run
    assert second.parent.data.tags["hwr.decision"] == "unchanged"


def test_serve_loads_the_champion_through_the_server(tracking, experiment, second):
    port = engines.free_port()
    log = tracking.root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "steps.serve", "--port", str(port)],  # default: the champion
            cwd=REPO,
            env=tracking.env(experiment),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(url + "/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        version = requests.get(url + "/version", timeout=10).json()
        with open(REPO / "data" / "examples" / "word.png", "rb") as f:
            answer = requests.post(url + "/predict", files={"image": f}, timeout=60)
    finally:
        engines.stop_process_group(proc)
    assert str(version["version"]) == "1" and version["alias"] == config.CHAMPION_ALIAS
    assert answer.status_code == 200 and set(answer.json()) == {"text", "confidence"}


def _evaluated_copy(tracking, experiment: str, model_dir: str, cer: float) -> str:
    """A train run holding a copy of the pipeline's model and a finished evaluate run of it with this test CER:
    what two evaluate runs of two different models leave in the store (their figures chosen, not trained)."""
    client = tracking.client()
    train = client.create_run(experiment, tags={config.TAG_STEP: "train"})
    client.log_artifacts(train.info.run_id, model_dir, config.MODEL_ARTIFACT)
    client.set_terminated(train.info.run_id)
    model_uri = f"runs:/{train.info.run_id}/{config.MODEL_ARTIFACT}"
    tags = {config.TAG_STEP: "evaluate", "hwr.model_uri": model_uri, "hwr.train_run": train.info.run_id}
    evaluate = client.create_run(experiment, tags=tags)
    client.log_metric(evaluate.info.run_id, "test_cer", cer)
    client.set_terminated(evaluate.info.run_id)
    return model_uri


def test_two_registers_at_once_leave_the_alias_on_the_better_model(tracking, experiment, first, second):
    """The worse model's register starts a moment after the better one's: without the re-read right before the
    move both decide against the old champion (CER 1.0), the later one moves the alias last, and the worse
    model ends as champion. With it, the alias ends on the better model, whatever the interleaving."""
    import mlflow

    mlflow.set_tracking_uri(tracking.server.url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = mlflow.artifacts.download_artifacts(
                f"runs:/{first.steps['train'].info.run_id}/{config.MODEL_ARTIFACT}", dst_path=tmp
            )
            better = _evaluated_copy(tracking, experiment, model_dir, 0.40)
            worse = _evaluated_copy(tracking, experiment, model_dir, 0.60)
    finally:
        mlflow.set_tracking_uri(None)
    procs = {}
    for name, uri in (("better", better), ("worse", worse)):
        command = [sys.executable, "-m", "steps.register", "--model-uri", uri, "--max-cer", "2"]
        procs[name] = subprocess.Popen(
            command, cwd=REPO, env=tracking.env(experiment), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(0.5)
    out = {name: p.communicate(timeout=900) for name, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), out
    client = tracking.client()
    champion = client.get_model_version_by_alias(config.REGISTERED_MODEL, config.CHAMPION_ALIAS)
    assert champion.tags["hwr.model_uri"] == better, out
    registered = {
        name: client.search_runs([experiment], f"tags.`hwr.model_uri` = '{uri}' and tags.`hwr.step` = 'register'")[0]
        for name, uri in (("better", better), ("worse", worse))
    }
    assert registered["better"].data.tags["hwr.decision"] == "promoted"
    assert registered["worse"].data.tags["hwr.decision"] == "kept"
    assert registered["worse"].data.tags["hwr.champion_version"] == champion.version
