"""Shared fixtures: a real HTTP server on loopback, an isolated MLflow store, an isolated download cache."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class FileServer:
    """Serves files under `root` at `url` with Range support; behaviour is set per test.

    auth:        (user, password) demanded by basic auth, or None
    cut_once:    {path: n}: the first GET of path sends only n bytes, then drops the connection
    fail_once:   {path: status}: the first GET of path (after any cut) answers that status
    ignore_range: answer 200 with the whole file even to Range requests
    requests:    (path, headers) of every request, in order
    """

    root: Path
    url: str = ""
    auth: tuple[str, str] | None = None
    cut_once: dict[str, int] = field(default_factory=dict)
    fail_once: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            state.requests.append((path, dict(self.headers)))
            if state.auth is not None:
                token = base64.b64encode(":".join(state.auth).encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    return self._send(
                        401,
                        b"<html>login required</html>",
                        {"WWW-Authenticate": 'Basic realm="test"', "Content-Type": "text/html"},
                    )
            if path in state.fail_once and path not in state.cut_once:  # a cut comes first
                return self._send(state.fail_once.pop(path), b"failure")
            file = state.root / path.lstrip("/")
            if not file.is_file() or not file.resolve().is_relative_to(state.root.resolve()):
                return self._send(404, b"<html>not found</html>", {"Content-Type": "text/html"})
            data = file.read_bytes()
            start, code, headers = 0, 200, {"Accept-Ranges": "bytes"}
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and not state.ignore_range:
                start = int(ranged[6:].split("-")[0])
                if start >= len(data):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                code, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if path in state.cut_once:  # promise the whole body, deliver part of it, hang up
                n = state.cut_once.pop(path)
                self.send_response(code)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[:n])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(code, body, headers)

    return Handler


@pytest.fixture
def http_server(tmp_path):
    """A threaded HTTP server on 127.0.0.1 (port 0) serving tmp_path/www; yields its FileServer state."""
    root = tmp_path / "www"
    root.mkdir()
    state = FileServer(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never read or fill the user's real download cache."""
    monkeypatch.setenv("HWR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory) -> Path:
    """A freshly migrated sqlite tracking DB, made once: copying it is much faster than migrating per test."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates and migrates the schema
    return db


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, _empty_mlflow_db):
    """An isolated tracking store `sqlite:///<tmp>/mlflow.db` with an experiment "test" whose artifacts live under tmp.

    Sets MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID, so in-process code and `mlflow run`
    subprocesses (which inherit os.environ) both use it. Yields an MlflowClient.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    shutil.copyfile(_empty_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("test", artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    yield client
    mlflow.set_tracking_uri(None)  # back to "read MLFLOW_TRACKING_URI", which monkeypatch restores


@pytest.fixture
def mlflow_run():
    """Run `mlflow run . <args>` in the repo root with this interpreter's bin dir first on PATH
    (`--env-manager local` runs `python` from PATH); returns the CompletedProcess."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, **(env or {}))
        bindir = str(Path(sys.executable).parent)
        full_env["PATH"] = os.pathsep.join([bindir, full_env.get("PATH", "")])
        return subprocess.run(
            [str(Path(bindir) / "mlflow"), "run", ".", *args],
            cwd=REPO,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@dataclass
class StepChain:
    """A session-wide tracking store holding one real download -> preprocess chain (tiny synthetic set)."""

    root: Path
    env: dict[str, str]
    download_run: str = ""
    preprocess_run: str = ""

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`mlflow run . <args>` against this store; fails the test with the step's stderr if it fails."""
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "mlflow"), "run", ".", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.env["MLFLOW_TRACKING_URI"])

    def newest(self, step: str):
        from steps.workflow import runs

        run = runs.find_run(step, experiment_id="0", client=self.client(), status=None)
        assert run is not None, f"no {step} run"
        return run


@pytest.fixture(scope="session")
def step_chain(tmp_path_factory, _empty_mlflow_db) -> StepChain:
    """download (200 synthetic words, 6 writers) then preprocess, both through `mlflow run`, once per session."""
    root = tmp_path_factory.mktemp("chain")
    shutil.copyfile(_empty_mlflow_db, root / "mlflow.db")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        HWR_CACHE_DIR=str(root / "cache"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    chain = StepChain(root, env)
    for args in (
        ("-e", "download", "--env-manager", "local", "-P", "num_words=240", "-P", "num_writers=8"),
        ("-e", "preprocess", "--env-manager", "local", "-P", "shard_size=60"),
    ):
        proc = chain.run(*args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    chain.download_run = chain.newest("download").info.run_id
    chain.preprocess_run = chain.newest("preprocess").info.run_id
    return chain
