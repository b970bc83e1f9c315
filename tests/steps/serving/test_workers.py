"""`serve --workers 2` for real: a supervisor and two server processes on one port over the tiny model, called
with `requests`; a worker killed while serving is replaced, a stop ends them all and the run, and a model that
cannot load is one clear error rather than a restart loop."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time

import mlflow
import psutil
import pytest
import requests

from tests import model_fixture
from tests.servers import start, stop, wait_healthy

pytestmark = pytest.mark.slow  # real servers over a real model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> model_fixture.TinyModel:
    return model_fixture.tiny_model(tmp_path_factory)


def until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def worker_pids(log_text: str) -> dict[int, int]:
    """{worker index: pid} of the workers the supervisor says it started last."""
    return {int(i): int(pid) for i, pid in re.findall(r"started worker (\d+) \(pid (\d+)\)", log_text)}


def serving_run(tiny: model_fixture.TinyModel, pid: int):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tiny.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.endswith("-serving")]
    (run,) = client.search_runs(experiments, f"tags.`hwr.pid` = '{pid}'")
    return run


def test_two_workers_share_the_port_survive_a_killed_worker_and_stop_together(tiny, tmp_path):
    png = tiny.images[0].read_bytes()
    log = tmp_path / "serve.log"
    proc, url = start(tiny, log, "--model-uri", tiny.champion_uri, "--workers", "2")
    try:
        wait_healthy(url, proc, log)
        until(lambda: log.read_text().count("] serving {") == 2, 300, "both workers serving")
        expected = requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=60).json()
        assert "text" in expected

        def fresh_connection(_):  # one connection per request: each goes to whichever worker accepts it
            return requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(fresh_connection, range(64)))
        assert [r.status_code for r in answers] == [200] * 64
        assert all(r.json() == expected for r in answers)
        text = log.read_text()
        for index in (0, 1):
            assert f"[worker {index}] POST /predict 200" in text, text[-3000:]

        pids = worker_pids(text)
        assert sorted(pids) == [0, 1] and all(psutil.pid_exists(p) for p in pids.values())
        os.kill(pids[1], signal.SIGKILL)  # as the kernel's OOM killer would
        until(
            lambda: f"worker 1 (pid {pids[1]}) exited with code -9: starting another" in log.read_text(),
            30,
            "the supervisor noticing",
        )
        assert requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=60).json() == expected
        until(lambda: log.read_text().count("] serving {") == 3, 300, "the new worker serving")
        new = worker_pids(log.read_text())[1]
        assert new != pids[1] and psutil.pid_exists(new)

        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGTERM)  # the supervisor only: it stops its workers
        assert proc.wait(60) == 0
        until(
            lambda: not [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"],
            30,
            "every process gone",
        )
        output = log.read_text()
        assert "Traceback" not in output and output.rstrip().endswith("stopped"), output[-2000:]
        run = serving_run(tiny, proc.pid)
        assert run.info.status == "FINISHED" and run.data.params["workers"] == "2"
    finally:
        stop(proc, group=True)


def test_an_unknown_model_is_one_line_before_any_worker_starts(tiny, tmp_path):
    log = tmp_path / "serve.log"
    proc, _ = start(tiny, log, "--model-uri", "models:/NoSuchModel/1", "--workers", "2")
    try:
        assert proc.wait(120) == 1
        output = log.read_text()
        last = output.strip().splitlines()[-1]
        assert last.startswith("Error: cannot load model 'models:/NoSuchModel/1': "), output[-2000:]
        assert "started worker" not in output and "Traceback" not in output
    finally:
        stop(proc, group=True)


class NotAHandwritingModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


def test_a_model_no_worker_can_load_is_an_error_not_a_restart_loop(tiny, tmp_path):
    """The URI names a model, but not one of ours: each worker says why it cannot serve it, and the supervisor
    gives up at the first that exits before serving (the run is FAILED) instead of starting more."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tiny.tracking_uri)
        mlflow.set_tracking_uri(tiny.tracking_uri)
        try:
            with mlflow.start_run():
                uri = mlflow.pyfunc.log_model(name="other", python_model=NotAHandwritingModel()).model_uri
        finally:
            mlflow.set_tracking_uri(None)
    log = tmp_path / "serve.log"
    proc, _ = start(tiny, log, "--model-uri", uri, "--workers", "2")
    try:
        assert proc.wait(300) == 1
        output = log.read_text()
        assert "is not a handwriting recognition model (it holds a NotAHandwritingModel)" in output, output[-2000:]
        last = output.strip().splitlines()[-1]
        assert re.fullmatch(r"Error: worker \d exited with code 1 before it served", last), output[-2000:]
        assert "Traceback" not in output and "starting another" not in output
        assert serving_run(tiny, proc.pid).info.status == "FAILED"
    finally:
        stop(proc, group=True)


def test_a_stop_while_loading_ends_the_run_killed_and_one_while_serving_finished(tiny, tmp_path):
    """One process stopped before it serves did not do its job (KILLED, exit 130); stopped while serving, it did
    (FINISHED, exit 0). (A supervisor's stop is FINISHED: the first test.)"""
    log = tmp_path / "loading.log"
    proc, _ = start(tiny, log, "--model-uri", tiny.champion_uri)
    try:
        until(lambda: "loading models:/" in log.read_text(), 300, "the server loading its model")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130, log.read_text()[-2000:]
        assert serving_run(tiny, proc.pid).info.status == "KILLED"
    finally:
        stop(proc, group=True)
    log = tmp_path / "serving.log"
    proc, url = start(tiny, log, "--model-uri", tiny.champion_uri)
    try:
        wait_healthy(url, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0 and serving_run(tiny, proc.pid).info.status == "FINISHED"
    finally:
        stop(proc, group=True)
