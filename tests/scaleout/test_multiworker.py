"""Multi-worker training, for real: `python -m steps.train` as two workers of one TF cluster on 127.0.0.1
(TF_CONFIG, MultiWorkerMirroredStrategy over the TFRecord shards, sharded by file), on a synthetic dataset of
3 training shards and an isolated sqlite store: one train run and one model, logged by the chief, with the
figures of the whole data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steps.dataset import reader
from steps.dataset.info import DatasetInfo
from steps.evaluation import metrics
from steps.inference import loading
from steps.workflow import config
from tests.scaleout import engines

pytestmark = [pytest.mark.slow, pytest.mark.engines]

REPO = Path(__file__).resolve().parents[2]

TINY = ["--epochs", "2", "--batch-size", "16", "--conv-filters", "8,16", "--rnn-units", "32", "--dense-units", "16"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """160 synthetic words of 6 writers, preprocessed into shards of 40 words (3 training shards)."""
    from steps.dataset.build import build
    from steps.dataset.plan import PreprocessConfig
    from steps.sources import synthetic

    root = tmp_path_factory.mktemp("multiworker")
    synthetic.generate(root / "raw", 160, 6, 42, progress=False)
    (root / "ds").mkdir()
    build(
        root / "raw", root / "ds", PreprocessConfig("writer", 0.75, 0.15, 42, 32, 128, 24, False, 40, 1), progress=False
    )
    return root / "ds"


def test_two_workers_train_one_model_logged_once_by_the_chief(mlflow_store, dataset):
    client, experiment = mlflow_store, os.environ["MLFLOW_EXPERIMENT_ID"]
    data = str(dataset)
    before = {r.info.run_id for r in client.search_runs([experiment], max_results=1000)}
    models_before = len(client.search_logged_models(experiment_ids=[experiment]))
    hosts = [f"127.0.0.1:{engines.free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config))
        command = [sys.executable, "-m", "steps.train", "--data", data, *TINY]
        procs.append(
            subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    logs = [p.communicate(timeout=1800)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n-----\n".join(log[-3000:] for log in logs)
    assert "worker 1 of 2: training with the chief, which alone logs the run and the model" in logs[1]

    new = [r for r in client.search_runs([experiment], max_results=1000) if r.info.run_id not in before]
    (run,) = new  # one run: the chief's
    assert run.data.tags[config.TAG_STEP] == "train" and run.data.tags["hwr.workers"] == "2"
    assert run.info.status == "FINISHED"
    models = client.search_logged_models(experiment_ids=[experiment])
    assert len(models) == models_before + 1
    assert [m.source_run_id for m in models if m.source_run_id == run.info.run_id] == [run.info.run_id]

    # the figures are those of the whole data: every training sample counted, val CER over the whole val split
    info = DatasetInfo.load(data)
    model = loading.load(f"runs:/{run.info.run_id}/{config.MODEL_ARTIFACT}")
    assert run.data.params["train_samples"] == str(info.samples["train"])
    assert info.shards["train"] >= 2  # file sharding: every worker reads shards of its own
    val = list(reader.records(info, "val").as_numpy_iterator())
    read = model.recognize_canvases(np.stack([ex["image"] for ex in val]))
    cer = metrics.error_rates([ex["text"].decode() for ex in val], [t for t, _ in read])["cer"]
    history = client.get_metric_history(run.info.run_id, "val_cer")
    assert len(history) == 2
    assert run.data.metrics["best_val_cer"] == pytest.approx(cer, abs=1e-6)
