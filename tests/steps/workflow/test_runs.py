"""steps.workflow.runs: stale RUNNING runs (their process gone) are told apart from live ones and end FAILED."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from steps.workflow import config, runs


def _running(client, experiment_id: str, pid: int, host: str | None = None, step: str = "preprocess") -> str:
    tags = {config.TAG_STEP: step, config.TAG_PID: str(pid), config.TAG_HOST: host or socket.gethostname()}
    return client.create_run(experiment_id, tags=tags).info.run_id


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_process_alive_tells_a_live_python_from_a_dead_pid_and_another_program():
    assert runs.process_alive(os.getpid())
    assert not runs.process_alive(_dead_pid())
    sleeper = subprocess.Popen(["sleep", "30"])  # alive, but not python: a pid reused by another program
    try:
        assert not runs.process_alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_only_this_hosts_runs_whose_process_is_gone_are_marked_failed(mlflow_store):
    client, experiment_id = mlflow_store, os.environ["MLFLOW_EXPERIMENT_ID"]
    dead = _running(client, experiment_id, _dead_pid())
    live = _running(client, experiment_id, os.getpid())
    elsewhere = _running(client, experiment_id, _dead_pid(), host="another-host")
    untagged = client.create_run(experiment_id, tags={config.TAG_STEP: "train"}).info.run_id
    other_step = _running(client, experiment_id, _dead_pid(), step="serve")

    assert runs.fail_stale_runs(experiment_id, ("download", "preprocess", "train"), client) == [dead]

    status = {r: client.get_run(r).info.status for r in (dead, live, elsewhere, untagged, other_step)}
    assert status == {dead: "FAILED", live: "RUNNING", elsewhere: "RUNNING", untagged: "RUNNING", other_step: "RUNNING"}
    assert "is gone" in client.get_run(dead).data.tags["hwr.stale"]


def test_a_step_run_records_its_pid_and_host(mlflow_store):
    with runs.start_step("download", {"dataset": "synthetic"}) as run:
        pass
    tags = mlflow_store.get_run(run.info.run_id).data.tags
    assert tags[config.TAG_PID] == str(os.getpid()) and tags[config.TAG_HOST] == socket.gethostname()
