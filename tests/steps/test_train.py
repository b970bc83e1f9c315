"""`mlflow run . -e train` then `-e evaluate` on the session's tiny dataset, checked through the MLflow client;
and train's resume-after-kill on the same data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.inference import recognizer
from steps.inference.calibration import Calibration, expected_calibration_error
from steps.workflow import config

pytestmark = pytest.mark.slow  # real `mlflow run` steps, servers or training

TINY = [
    "-P",
    "epochs=2",
    "-P",
    "batch_size=16",
    "-P",
    "conv_filters=8,16",
    "-P",
    "rnn_units=32",
    "-P",
    "dense_units=16",
]


@pytest.fixture(scope="module")
def trained(step_chain):
    data = f"runs:/{step_chain.preprocess_run}/{config.DATASET_ARTIFACT}"
    proc = step_chain.run("-e", "train", "--env-manager", "local", "-P", f"data={data}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_run = step_chain.newest("train")
    model_uri = f"runs:/{train_run.info.run_id}/{config.MODEL_ARTIFACT}"
    proc = step_chain.run("-e", "evaluate", "--env-manager", "local", "-P", f"model_uri={model_uri}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return train_run, step_chain.newest("evaluate"), model_uri


def test_train_logs_metrics_per_epoch_params_plots_and_model(step_chain, trained):
    train_run, _, model_uri = trained
    client = step_chain.client()
    run = client.get_run(train_run.info.run_id)
    assert run.info.status == "FINISHED"
    for key in ("loss", "val_loss", "val_cer", "val_wer", "learning_rate", "samples_per_second"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [h.step for h in history] == [0, 1], key
    assert 0.0 <= run.data.metrics["best_val_cer"] <= 1.5
    p = run.data.params
    assert (p["batch_size"], p["epochs"], p["image_height"], p["image_width"]) == ("16", "2", "32", "128")
    assert p["train_ratio"] == "0.75" and p["val_ratio"] == "0.15" and p["max_sequence_length"] == "24"
    # a tiny training set is passed over more than once per epoch: CTC needs ~100 updates to start reading
    assert (p["min_epoch_steps"], p["steps_per_epoch"]) == ("100", "100")
    assert int(p["train_samples"]) < 100 * 16
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"loss.png", "cer.png", "val_predictions.png", "augmented.png"} <= artifacts
    assert run.data.metrics["calibration_samples"] > 0  # fitted on the validation words
    import mlflow

    mlflow.set_tracking_uri(step_chain.env["MLFLOW_TRACKING_URI"])
    try:
        info = mlflow.models.get_model_info(model_uri)
        assert info.signature.inputs.input_names() == ["image"]
        assert set(info.signature.outputs.input_names()) == {"text", "confidence"}
        assert info.saved_input_example_info is not None
        model = mlflow.pyfunc.load_model(model_uri)
        reqs = mlflow.pyfunc.get_model_dependencies(model_uri)
        pinned = open(reqs).read()
        assert "tensorflow-cpu==2.17.1" in pinned and "mlflow==" in pinned
        example = model.input_example
        out = model.predict(example)
        assert list(out.columns) == ["text", "confidence"] and 0.0 <= out["confidence"][0] <= 1.0
        # The calibration travels inside the model and is the one it applies.
        calibration = Calibration.load(
            Path(mlflow.artifacts.download_artifacts(f"{model_uri}/artifacts/{recognizer.CALIBRATION}"))
        )
        assert model.unwrap_python_model().calibration == calibration
        # The Lite network has int8 weights exactly when they read the validation words as well as float ones.
        from steps.training.export import int8_allowance

        m = run.data.metrics
        as_well = m["lite_int8_check_cer"] <= m["lite_float_check_cer"] + int8_allowance(m["lite_float_check_cer"])
        assert p["int8_weights"] == "true" and model.unwrap_python_model().lite.int8_weights == as_well
    finally:
        mlflow.set_tracking_uri(None)


def test_evaluate_logs_test_metrics_predictions_and_plots(step_chain, trained):
    train_run, eval_run, model_uri = trained
    client = step_chain.client()
    run = client.get_run(eval_run.info.run_id)
    m = run.data.metrics
    for key in ("test_loss", "test_cer", "test_wer", "test_cer_beam", "test_wer_beam"):
        assert key in m and m[key] >= 0
    assert run.data.tags["hwr.model_uri"] == model_uri
    assert run.data.tags["hwr.train_run"] == train_run.info.run_id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        config.PREDICTIONS_FILE,
        "cer_histogram.png",
        "cer_by_length.png",
        "confusions.png",
        "worst_and_best.png",
        "reliability.png",
    } <= artifacts
    import mlflow
    import pyarrow.parquet as pq

    from steps.evaluation import metrics

    mlflow.set_tracking_uri(step_chain.env["MLFLOW_TRACKING_URI"])
    try:
        path = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/{config.PREDICTIONS_FILE}")
        model_id = mlflow.models.get_model_info(model_uri).model_id
        linked = mlflow.get_logged_model(model_id).metrics or []
    finally:
        mlflow.set_tracking_uri(None)
    rows = pq.read_table(path).to_pylist()
    assert len(rows) == m["test_samples"]
    assert {"id", "truth", "prediction", "confidence", "cer", "prediction_beam"} <= set(rows[0])
    confidence, correct = [r["confidence"] for r in rows], [r["truth"] == r["prediction"] for r in rows]
    assert all(0.0 <= c <= 1.0 for c in confidence)
    assert m["test_ece"] == pytest.approx(expected_calibration_error(confidence, correct, 10), abs=1e-6)
    # the logged CER is the aggregate over characters, recomputable from the predictions
    assert m["test_cer"] == pytest.approx(
        metrics.error_rates([r["truth"] for r in rows], [r["prediction"] for r in rows])["cer"]
    )
    assert "test_cer" in {x.key for x in linked}  # metrics are linked to the logged model


def test_train_without_data_finds_the_matching_preprocess_run(step_chain, trained):
    proc = step_chain.run(
        "-e",
        "train",
        "--env-manager",
        "local",
        "-P",
        "epochs=1",
        *TINY[2:],
        "-P",
        "train_ratio=0.75",
        "-P",
        "val_ratio=0.15",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"runs:/{step_chain.preprocess_run}/{config.DATASET_ARTIFACT}" in proc.stderr
    run = step_chain.newest("train")
    assert run.data.tags["hwr.data"] == f"runs:/{step_chain.preprocess_run}/{config.DATASET_ARTIFACT}"


def test_train_resumes_after_being_killed(step_chain, tmp_path):
    """A run that dies after epoch 1 leaves state; the same call again continues at epoch 2."""
    import mlflow

    from steps.training.fit import TrainConfig, fit
    from steps.training.model import ModelConfig

    mlflow.set_tracking_uri(step_chain.env["MLFLOW_TRACKING_URI"])
    try:
        data_dir = mlflow.artifacts.download_artifacts(f"runs:/{step_chain.preprocess_run}/{config.DATASET_ARTIFACT}")
    finally:
        mlflow.set_tracking_uri(None)
    cfg = TrainConfig(
        batch_size=16,
        epochs=3,
        learning_rate=1e-3,
        patience=5,
        lr_schedule="cosine",
        min_epoch_steps=1,
        augment=True,
        seed=1,
        model=ModelConfig(
            conv_filters=(8, 16),
            width_pools=2,
            column_pool=False,
            dense_units=16,
            rnn_units=(32,),
            dropout=0.1,
            shortcut=0.0,
        ),
    )
    seen = []

    def die_after_first(epoch, logs):
        seen.append(epoch)
        if epoch == 0:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        fit(data_dir, tmp_path, cfg, on_epoch=die_after_first)
    assert json.loads((tmp_path / "history.json").read_text())["val_cer"]  # epoch 1 was saved
    history = fit(data_dir, tmp_path, cfg, on_epoch=lambda epoch, logs: seen.append(epoch)).history
    assert seen == [0, 1, 2]  # epoch 0 was not trained again
    assert len(history["val_cer"]) == 3
