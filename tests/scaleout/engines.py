"""The real engines the scale-out tests run on, started on 127.0.0.1 and stopped again: Debian's PostgreSQL
(initdb + pg_ctl in a temporary data directory, on a free port) and `mlflow server` with it as the backend
store and a proxied artifact store (`--artifacts-destination`, so runs hold mlflow-artifacts:/ URIs).

PostgreSQL refuses to run as root, and CI runs as root: then its commands run as the `postgres` user
(created by Debian's package) through runuser, in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.servers import free_port


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


@dataclass
class Postgres:
    data_dir: Path
    port: int
    user: str = "hwr"
    database: str = "mlflow"

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres() -> Postgres:
    """initdb a fresh cluster (trust auth on loopback: a throwaway test database) and start it."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does)")
    # Not under pytest's tmp dirs: those are private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="hwr-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = Postgres(root / "data", free_port())
    subprocess.run(
        _as_postgres([initdb, "-D", str(pg.data_dir), "-U", pg.user, "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {pg.port} -k {root} -c fsync=off"
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(pg.data_dir), "-l", str(root / "server.log"), "-o", options, "-w", "start"]),
        check=True,
        capture_output=True,
    )
    createdb = [pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, pg.database]
    subprocess.run(createdb, check=True, capture_output=True)
    return pg


def stop_postgres(pg: Postgres) -> None:
    subprocess.run(
        _as_postgres([pg_bin("pg_ctl"), "-D", str(pg.data_dir), "-m", "fast", "-w", "stop"]), capture_output=True
    )
    shutil.rmtree(pg.data_dir.parent, ignore_errors=True)


@dataclass
class TrackingServer:
    url: str
    artifacts: Path
    process: subprocess.Popen
    log: Path


def start_tracking_server(backend_uri: str, root: Path, timeout: float = 300) -> TrackingServer:
    """`mlflow server` on a free loopback port over `backend_uri`, artifacts proxied to root/artifacts."""
    port = free_port()
    artifacts, log = root / "artifacts", root / "mlflow-server.log"
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # one process: uvicorn's supervisor of several kills workers that start slower than its health check,
        # which on a loaded 2-core machine they do
        "--workers",
        "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = TrackingServer(f"http://127.0.0.1:{port}", artifacts, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(server.url + "/health", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_process_group(proc)
    raise RuntimeError(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM (then SIGKILL) the process group a server was started in (mlflow server forks workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)
    except ProcessLookupError:
        pass
