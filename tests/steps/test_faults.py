"""Faults: steps killed (SIGTERM, SIGKILL) at chosen points, then rerun. After each: nothing of a run is left in
$TMPDIR (pointed at a test folder), the rerun succeeds, and no FINISHED run stands over partial data.

A step is stopped at a named point with HWR_PAUSE_AT (runs.pause_point: it says "paused at ..." and waits), or,
for preprocess, as soon as its shards exist on disk. Real steps, real MLflow store, real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from steps.workflow import chain, config, runs

pytestmark = pytest.mark.slow

DOWNLOAD = ["--num-words", "120", "--num-writers", "6"]


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch) -> Path:
    """$TMPDIR for the steps (and this process), empty at the start."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    return tmp


def start(step: str, *args: str, pause: str = "") -> subprocess.Popen:
    env = dict(os.environ, **({runs.PAUSE_ENV: pause} if pause else {}))
    return subprocess.Popen(
        [sys.executable, "-m", f"steps.{step}", *args], cwd=config.ROOT, env=env, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]


def wait_for_pause(proc: subprocess.Popen, point: str) -> None:
    for line in proc.stderr:
        if f"paused at {point}" in line:
            return
    raise AssertionError(f"the step ended (rc {proc.wait()}) before pausing at {point}")


def step_runs(client, step: str) -> list:
    return client.search_runs([os.environ["MLFLOW_EXPERIMENT_ID"]], f"tags.`{config.TAG_STEP}` = '{step}'")


def artifacts(client, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def test_sigterm_between_raw_and_download_json_ends_killed_and_a_rerun_succeeds(mlflow_store, tmpdir_env):
    proc = start("download", *DOWNLOAD, pause="download.raw_logged")
    wait_for_pause(proc, "download.raw_logged")
    assert any(tmpdir_env.iterdir())  # the step's temporary directory, in use
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    (killed,) = step_runs(mlflow_store, "download")
    assert killed.info.status == "KILLED"
    assert artifacts(mlflow_store, killed.info.run_id) == {config.RAW_ARTIFACT}  # partial: no download.json
    assert runs.find_run("download") is None  # nothing downstream can take it
    assert list(tmpdir_env.iterdir()) == []

    finish(start("download", *DOWNLOAD))
    finished = runs.find_run("download")
    assert finished.info.run_id != killed.info.run_id
    assert artifacts(mlflow_store, finished.info.run_id) == {config.RAW_ARTIFACT, config.DOWNLOAD_INFO}
    assert list(tmpdir_env.iterdir()) == []


def test_sigkill_leaves_a_stale_run_that_main_marks_failed_and_an_orphan_the_rerun_removes(mlflow_store, tmpdir_env):
    proc = start("download", *DOWNLOAD, pause="download.raw_logged")
    wait_for_pause(proc, "download.raw_logged")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (stale,) = step_runs(mlflow_store, "download")
    assert stale.info.status == "RUNNING"  # nobody could end it
    assert [p.name.split("-")[1] for p in tmpdir_env.iterdir()] == ["download"]  # the orphaned step directory

    routed = chain.route({"num_words": "120", "num_writers": "6"})
    ids = chain.run_steps(("download",), routed, os.environ["MLFLOW_EXPERIMENT_ID"], "local")

    assert mlflow_store.get_run(stale.info.run_id).info.status == "FAILED"
    assert "is gone" in mlflow_store.get_run(stale.info.run_id).data.tags["hwr.stale"]
    assert ids["download"] != stale.info.run_id
    assert mlflow_store.get_run(ids["download"]).info.status == "FINISHED"
    assert list(tmpdir_env.iterdir()) == []


def test_preprocess_killed_while_writing_shards_leaves_nothing_and_the_chain_redoes_it(mlflow_store, tmpdir_env):
    finish(start("download", *DOWNLOAD))

    proc = start("preprocess", "--shard-size", "20", "--workers", "1")
    deadline = time.monotonic() + 300
    while not list(tmpdir_env.rglob("*.tfrecord")):  # TFRecord writers open every shard at the start
        assert proc.poll() is None and time.monotonic() < deadline, "preprocess ended before writing shards"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (killed,) = step_runs(mlflow_store, "preprocess")
    assert killed.info.status == "RUNNING" and artifacts(mlflow_store, killed.info.run_id) == set()

    routed = chain.route({"num_words": "120", "num_writers": "6", "shard_size": "20", "workers": "1"})
    logs = []
    ids = chain.run_steps(
        ("download", "preprocess"),
        routed,
        os.environ["MLFLOW_EXPERIMENT_ID"],
        "local",
        on_step=lambda step, run_id, reused, inputs: logs.append((step, reused)),
    )
    assert logs == [("download", True), ("preprocess", False)]  # the finished download is reused, not the kill
    assert mlflow_store.get_run(killed.info.run_id).info.status == "FAILED"
    assert artifacts(mlflow_store, ids["preprocess"]) == {config.DATASET_ARTIFACT}
    assert list(tmpdir_env.iterdir()) == []  # the killed run's partial shards went with its orphaned directory
