"""Servers the tests start on loopback: a free port, `python -m steps.serve` as a subprocess, waiting until it is
healthy and stopping it (with its process group when it was started as one)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests import model_fixture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tiny: model_fixture.TinyModel, log: Path, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    """Start a server (its own process group) with `args`; returns (process, base URL). Call wait_healthy next
    and stop(proc, group=True) at the end."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "steps.serve", "--port", str(port), *args],
            cwd=model_fixture.REPO,
            env=model_fixture.env(tiny, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    """Until /health answers ok; AssertionError with the log's tail if the server exits or never gets there (the
    10 minutes are for a shared machine under load: TensorFlow alone can take minutes to import there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=1).json() == {"status": "ok"}:
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, group: bool = False) -> None:
    """Terminate (then kill) a server we started, and its process group when it was started as one."""
    if proc.poll() is None:
        (os.killpg(proc.pid, signal.SIGTERM) if group else proc.terminate())
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            (os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill())
            proc.wait(15)
    elif group:  # the leader is gone; make sure no child (the real server) outlives it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
