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


def _command(record: bool, fail: bool = False):
    """A real click command decorated like serve (record) or infer; it notes where its temp files go."""
    import tempfile

    import click

    seen = {}

    @click.command()
    @click.option("--port", type=int, default=5000)
    @runs.side_step("serve" if record else "infer", record=record)
    def main(port: int) -> None:
        seen["tmp"] = tempfile.mkdtemp()  # what MLflow does for a model copy
        if fail:
            raise RuntimeError("boom")

    return main, seen


def _placeholder(client, experiment_id: str, monkeypatch) -> str:
    """The run `mlflow run -e serve` makes before the step starts (and passes as MLFLOW_RUN_ID)."""
    run_id = client.create_run(experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    return run_id


def test_serve_runs_go_to_their_own_experiment_and_end_finished(mlflow_store, monkeypatch, tmp_path):
    import tempfile
    from pathlib import Path

    from click.testing import CliRunner

    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    experiment_id = os.environ["MLFLOW_EXPERIMENT_ID"]
    placeholder = _placeholder(mlflow_store, experiment_id, monkeypatch)
    main, seen = _command(record=True)
    assert CliRunner().invoke(main, ["--port", "5001"], catch_exceptions=False).exit_code == 0

    # the training experiment holds only the launch run, ended and labelled (see test_launch_runs_...)
    (launch,) = mlflow_store.search_runs([experiment_id])
    assert launch.info.run_id == placeholder and launch.info.status == "FINISHED"
    assert launch.data.tags[runs.TAG_LAUNCH] == "serve" and launch.data.tags["mlflow.runName"] == "serve-launch"
    serving = mlflow_store.get_experiment_by_name("test-serving")
    (run,) = mlflow_store.search_runs([serving.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params == {"port": "5001"}
    assert run.data.tags[config.TAG_STEP] == "serve"
    assert Path(seen["tmp"]).parent.name.startswith("hwr-serve-") and not Path(seen["tmp"]).exists()
    assert Path(seen["tmp"]).parent.parent == tmp_path / "tmp" and list((tmp_path / "tmp").iterdir()) == []


def test_a_failing_server_run_ends_failed_and_infer_makes_no_run(mlflow_store, monkeypatch):
    from click.testing import CliRunner

    experiment_id = os.environ["MLFLOW_EXPERIMENT_ID"]
    failing, _ = _command(record=True, fail=True)
    assert CliRunner().invoke(failing, []).exit_code == 1
    serving = mlflow_store.get_experiment_by_name("test-serving")
    assert [r.info.status for r in mlflow_store.search_runs([serving.experiment_id])] == ["FAILED"]

    placeholder = _placeholder(mlflow_store, experiment_id, monkeypatch)
    infer, _ = _command(record=False)
    assert CliRunner().invoke(infer, [], catch_exceptions=False).exit_code == 0
    assert [r.info.run_id for r in mlflow_store.search_runs([experiment_id])] == [placeholder]
    assert mlflow_store.get_run(placeholder).info.status == "FINISHED"


def test_launch_runs_are_deleted_once_their_process_is_gone(mlflow_store, monkeypatch):
    """`mlflow run` ends the run it made again when the step exits (and fails on a deleted one): so a launch
    run stays until a later side step finds its process gone; a live one (a server still serving) stays."""
    from click.testing import CliRunner

    experiment_id = os.environ["MLFLOW_EXPERIMENT_ID"]
    launches = {}
    for name, pid in (("gone", _dead_pid()), ("serving", os.getpid())):
        launches[name] = _placeholder(mlflow_store, experiment_id, monkeypatch)
        monkeypatch.delenv("MLFLOW_RUN_ID")
        mlflow_store.set_tag(launches[name], runs.TAG_LAUNCH, "serve")
        mlflow_store.set_tag(launches[name], config.TAG_PID, str(pid))
        mlflow_store.set_tag(launches[name], config.TAG_HOST, socket.gethostname())
        mlflow_store.set_terminated(launches[name], "FINISHED")
    elsewhere = _placeholder(mlflow_store, experiment_id, monkeypatch)  # another host's: its pid means nothing here
    monkeypatch.delenv("MLFLOW_RUN_ID")
    mlflow_store.set_tag(elsewhere, runs.TAG_LAUNCH, "infer")
    mlflow_store.set_tag(elsewhere, config.TAG_PID, str(_dead_pid()))
    mlflow_store.set_tag(elsewhere, config.TAG_HOST, "another-host")
    unlabelled = _placeholder(mlflow_store, experiment_id, monkeypatch)  # a run of some other kind
    monkeypatch.delenv("MLFLOW_RUN_ID")

    current = _placeholder(mlflow_store, experiment_id, monkeypatch)
    infer, _ = _command(record=False)
    assert CliRunner().invoke(infer, [], catch_exceptions=False).exit_code == 0
    stage = {run_id: mlflow_store.get_run(run_id).info.lifecycle_stage for run_id in (*launches.values(), elsewhere)}
    assert stage == {launches["gone"]: "deleted", launches["serving"]: "active", elsewhere: "active"}
    assert mlflow_store.get_run(unlabelled).info.lifecycle_stage == "active"
    run = mlflow_store.get_run(current)
    assert run.info.status == "FINISHED" and run.info.lifecycle_stage == "active"  # `mlflow run` may end it again
    mlflow_store.set_terminated(current, "FINISHED")  # what `mlflow run` does when the step exits: no error


def test_step_tempdir_sweeps_only_its_own_orphans(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.tempfile, "tempdir", str(tmp_path))
    dead = _dead_pid()
    orphan = tmp_path / f"hwr-download-{dead}-abc"  # left by a SIGKILLed step: it holds our owner file
    orphan.mkdir()
    (orphan / runs._OWNER).write_text(f"{socket.gethostname()} {dead}")
    stranger = tmp_path / f"hwr-quality-{dead}-xyz"  # same shape of name, someone else's: no owner file
    stranger.mkdir()
    elsewhere = tmp_path / f"hwr-train-{dead}-def"  # a step of another host sharing this $TMPDIR
    elsewhere.mkdir()
    (elsewhere / runs._OWNER).write_text(f"not-{socket.gethostname()} {dead}")
    with runs.step_tempdir("preprocess") as mine:
        assert (mine / runs._OWNER).read_text() == f"{socket.gethostname()} {os.getpid()}"
        assert not orphan.exists() and stranger.is_dir() and elsewhere.is_dir()
    assert not mine.exists()
