"""Multi-worker training for real: `train` as two processes on 127.0.0.1 with TF_CONFIG (MultiWorkerMirroredStrategy
over the dataset's TFRecord shards), against the session's tiny dataset; and the configurations it refuses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from steps.dataset.info import DatasetInfo
from steps.workflow import artifacts, config
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.engines]

TINY = [
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--conv-filters",
    "8,16",
    "--rnn-units",
    "32",
    "--dense-units",
    "16",
    "--min-epoch-steps",
    "1",
]


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )


def _workers(step_chain, data: str, *extra: str) -> list[subprocess.CompletedProcess]:
    """`python -m steps.train` as worker 0 (the chief) and worker 1, started together; both waited for."""
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "steps.train", "--data", data, *TINY, *extra],
            cwd=config.ROOT,
            env={**step_chain.env, "TF_CONFIG": _tf_config(ports, index)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


@pytest.fixture(scope="module")
def two_workers(step_chain):
    data = f"runs:/{step_chain.preprocess_run}/{config.DATASET_ARTIFACT}"
    before = {r.info.run_id for r in step_chain.client().search_runs(["0"])}
    chief, worker = _workers(step_chain, data)
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert worker.returncode == 0, worker.stderr[-3000:]
    new = [r for r in step_chain.client().search_runs(["0"]) if r.info.run_id not in before]
    import mlflow

    mlflow.set_tracking_uri(step_chain.env["MLFLOW_TRACKING_URI"])
    try:
        info = DatasetInfo.load(artifacts.readable_dir(data))
    finally:
        mlflow.set_tracking_uri(None)
    return chief, worker, new, info


def test_two_workers_log_one_run_and_one_model_from_the_chief(step_chain, two_workers):
    chief, worker, new, info = two_workers
    assert len(new) == 1, [r.data.tags.get(config.TAG_STEP) for r in new]  # the chief's train run alone
    (run,) = new
    assert run.info.status == "FINISHED" and run.data.tags["hwr.workers"] == "2"
    models = [
        m
        for m in step_chain.client().search_logged_models([run.info.experiment_id])
        if m.source_run_id == run.info.run_id
    ]
    assert len(models) == 1
    assert "the chief (worker 0) logs the run and the model" in worker.stderr
    assert run.info.run_id not in worker.stderr + worker.stdout  # the worker never opened a run


def test_the_chief_reports_on_the_whole_data(step_chain, two_workers):
    chief, worker, (run,), info = two_workers
    client = step_chain.client()
    assert int(run.data.params["train_samples"]) == info.samples["train"]  # not one worker's half
    assert f"each reads every 2th of the {info.shards['train']} training shards" in chief.stderr
    assert [h.step for h in client.get_metric_history(run.info.run_id, "val_cer")] == [0, 1]
    assert 0.0 <= run.data.metrics["best_val_cer"] <= 1.5
    # samples/s counts every worker's samples: the epoch covered the whole training split
    rate = client.get_metric_history(run.info.run_id, "samples_per_second")[-1].value
    assert rate > 0
