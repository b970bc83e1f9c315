"""`mlflow run . -e preprocess` on a real synthetic download: what a user finds in the run afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from steps.dataset import tfrecords
from steps.workflow import config

pytestmark = pytest.mark.slow  # real `mlflow run` steps, servers or training


def _dataset_dir(chain) -> Path:
    import mlflow

    mlflow.set_tracking_uri(chain.env["MLFLOW_TRACKING_URI"])
    try:
        return Path(mlflow.artifacts.download_artifacts(f"runs:/{chain.preprocess_run}/{config.DATASET_ARTIFACT}"))
    finally:
        mlflow.set_tracking_uri(None)


def test_preprocess_without_raw_data_takes_the_newest_download_run(step_chain):
    run = step_chain.client().get_run(step_chain.preprocess_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags["hwr.raw_data"] == f"runs:/{step_chain.download_run}/{config.RAW_ARTIFACT}"


def test_dataset_artifacts_shards_manifest_charset_stats_and_grids(step_chain):
    data = _dataset_dir(step_chain)
    stats = json.loads((data / config.STATS_FILE).read_text())
    names = {p.name for p in data.iterdir()}
    for split in config.SPLITS:
        count = stats["shards"][split]
        assert {tfrecords.shard_name(split, i, count) for i in range(count)} <= names
        assert f"samples_{split}.png" in names
    assert stats["shards"]["train"] > 1  # shard_size=60 splits the training set
    manifest = pq.read_table(data / config.MANIFEST_FILE).to_pylist()
    # every manifest row is a record in the shard it names, and the counts agree
    for split in config.SPLITS:
        rows = [r for r in manifest if r["split"] == split]
        assert len(rows) == stats["samples"][split] > 0
        ids = {
            ex["id"].numpy().decode()
            for f in tfrecords.shard_files(str(data), split)
            for ex in tf.data.TFRecordDataset(f).map(lambda r: tfrecords.parse(r, 32, 128))
        }
        assert ids == {r["id"] for r in rows}
    # writer-independent: no writer in two splits
    writers = {split: {r["writer"] for r in manifest if r["split"] == split} for split in config.SPLITS}
    assert not (writers["train"] & writers["val"]) and not (writers["train"] & writers["test"])
    # the charset is the training split's, and the skipped images were counted, not fatal
    charset = json.loads((data / config.CHARSET_FILE).read_text())["characters"]
    assert set(charset) == {c for r in manifest if r["split"] == "train" for c in r["text"]}
    assert stats["dropped"]["err_flag"] > 0


def test_preprocess_metrics_and_lineage(step_chain):
    run = step_chain.client().get_run(step_chain.preprocess_run)
    m = run.data.metrics
    assert m["samples_train"] > m["samples_val"] > 0 and m["samples_test"] > 0
    assert m["images_per_second"] > 0 and m["dropped_err_flag"] > 0
    assert run.data.params["split"] == "writer" and run.data.params["train_ratio"] == "0.75"
    (dataset_input,) = run.inputs.dataset_inputs
    stats = json.loads((_dataset_dir(step_chain) / config.STATS_FILE).read_text())
    assert dataset_input.dataset.digest == stats["digest"]


def test_preprocess_bad_raw_data_fails_with_a_clear_message(step_chain, tmp_path):
    (tmp_path / "raw").mkdir()
    proc = step_chain.run("-e", "preprocess", "--env-manager", "local", "-P", f"raw_data={tmp_path / 'raw'}")
    assert proc.returncode != 0
    assert "words.txt not found" in proc.stderr
    assert step_chain.newest("preprocess").info.status == "FAILED"  # never mistaken for a finished dataset
