"""The serving phase: `python -m steps.serve` vs `mlflow models serve` on the same registered model.

Both servers are started in their own sessions (so each is stopped with its children) and loaded in turns
by loadgen.py at each concurrency level, under one harness.Monitor that samples both process trees; the
figures are latency, images/s, server CPU per image and peak RSS. Runs in the driver's process (no
TensorFlow here: the servers are the child processes).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import loadgen
import psutil
from harness import REPO, Monitor, Runner, log, tree_cpu, wait_quiet, word_pngs

LEVELS = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server we started, with its children (its own process group, started with start_new_session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class Server:
    """A server under test: its command, the path that answers once it is ready, the load generator's target."""

    def __init__(self, name: str, command: list[str], ready_path: str, target: loadgen.Target):
        self.name, self.command, self.ready_path, self.target = name, command, ready_path, target
        self.proc: subprocess.Popen | None = None

    def start(self, runner: Runner, mon: Monitor, tracking_uri: str, images: list[bytes]) -> dict:
        log(f"serve/{self.name}: starting {' '.join(self.command)}")
        self.logfile = open(runner.logs / f"serve-{self.name}.log", "w")
        self.proc = subprocess.Popen(
            self.command,
            cwd=REPO,
            env=runner.env(MLFLOW_TRACKING_URI=tracking_uri),
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        mon.attach(self.ps, self.name)
        startup = wait_http(f"http://{self.target.host}:{self.target.port}{self.ready_path}", self.proc)
        status, answer = loadgen.one_request(self.target, images[0])
        if status != 200 or not self.target.ok(answer):
            raise RuntimeError(f"{self.name} answered {status}: {str(answer)[:300]}")
        for png in images[:10]:  # warm-up: the first calls build TF kernels
            loadgen.one_request(self.target, png)
        time.sleep(3 * mon.interval)
        return {
            "command": self.command,
            "startup_seconds": round(startup, 2),
            "example_answer": answer,
            "rss_after_warmup_mb": round(mon.peak[self.name] / 2**20, 1),
        }

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.logfile.close()


def measure_level(server: Server, images: list[bytes], c: int, requests: int) -> tuple:
    """One closed-loop run -> (LevelResult, server CPU seconds, load generator CPU seconds)."""
    server0, client0 = tree_cpu(server.ps), sum(psutil.Process().cpu_times()[:2])
    r = loadgen.run_level(server.target, images, c, requests)
    return r, tree_cpu(server.ps) - server0, sum(psutil.Process().cpu_times()[:2]) - client0


def merge_level(c: int, runs: list[tuple], repeats: int, t_load: float) -> dict:
    """The figures of one server at one level over its `repeats` runs (see measure_level)."""
    merged = loadgen.LevelResult(
        c,
        sum(r.requests for r, _, _ in runs),
        sum(r.errors for r, _, _ in runs),
        sum(r.seconds for r, _, _ in runs),
        [ms for r, _, _ in runs for ms in r.latencies_ms],
        next((r.first_error for r, _, _ in runs if r.first_error), None),
    )
    done = max(1, merged.requests - merged.errors)
    server_cpu, client_cpu = sum(x for _, x, _ in runs), sum(x for _, _, x in runs)
    return {
        **merged.summary(),
        "load_1min": round(t_load, 2),
        "repeats": repeats,
        "runs_images_per_second": [round(r.throughput, 1) for r, _, _ in runs],
        # CPU per answered image: the server's (all its processes), the load generator's.
        "server_cpu_ms_per_image": round(server_cpu * 1000 / done, 2),
        "server_cpu_cores": round(server_cpu / merged.seconds, 2),
        "client_cpu_ms_per_image": round(client_cpu * 1000 / done, 2),
    }


def serve_benchmark(
    runner: Runner, servers: list[Server], images: list[bytes], requests: int, repeats: int, tracking_uri: str
) -> dict:
    """Both servers up at once; at each concurrency level they take turns (A, B, A, B, ...), `repeats`
    runs of `requests` each, so that load from other processes falls on both alike (an idle server
    uses no CPU, so the other one does not disturb it)."""
    quiet = wait_quiet(runner.max_phase_wait, None)
    out: dict = {}
    with Monitor() as mon:
        try:
            for server in servers:
                out[server.name] = server.start(runner, mon, tracking_uri, images)
                out[server.name]["levels"] = {}
            for c in LEVELS:
                for server in servers:
                    loadgen.run_level(server.target, images, c, 2 * c)  # warm the connections and batch sizes
                runs: dict[str, list] = {s.name: [] for s in servers}
                t_load = os.getloadavg()[0]
                for _ in range(repeats):
                    for server in servers:
                        runs[server.name].append(measure_level(server, images, c, requests))
                for server in servers:
                    level = merge_level(c, runs[server.name], repeats, t_load)
                    out[server.name]["levels"][str(c)] = level
                    log(
                        f"serve/{server.name}: c={c}: {level['images_per_second']:.1f} images/s "
                        f"(runs {level['runs_images_per_second']}), p50 {level['p50_ms']:.1f} ms, p95 "
                        f"{level['p95_ms']:.1f} ms, server CPU {level['server_cpu_ms_per_image']:.1f} ms/image "
                        f"({level['server_cpu_cores']:.2f} cores), {level['errors']} errors"
                    )
        finally:
            for server in servers:
                server.stop()
    measure = {**mon.summary(), "waited_for_quiet": quiet}
    for server in servers:
        out[server.name]["peak_rss_mb"] = measure["peak_rss_mb_by_tree"][server.name]
    out["_measure"] = measure
    return out


def our_target(port: int) -> loadgen.Target:
    """POST /predict {"image": "<base64 png>"} to `python -m steps.serve`."""
    return loadgen.Target(
        "ours",
        "127.0.0.1",
        port,
        "/predict",
        body=lambda png: json.dumps({"image": base64.b64encode(png).decode()}).encode(),
        ok=lambda d: isinstance(d, dict) and "text" in d,
    )


def mlflow_target(port: int) -> loadgen.Target:
    """MLflow's scoring server decodes base64 strings for a column the signature declares binary."""
    return loadgen.Target(
        "mlflow",
        "127.0.0.1",
        port,
        "/invocations",
        body=lambda png: json.dumps(
            {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png).decode()]]}}
        ).encode(),
        ok=lambda d: isinstance(d, dict) and "predictions" in d,
    )


def serving(
    runner: Runner,
    root: Path,
    model_uri: str,
    requests: int,
    repeats: int,
    tracking_uri: str,
    mlflow_workers: int,
    ours_workers: int = 1,
) -> dict:
    """The serving phase over 64 test words of the data under `root` (dataset/ and words/), each server with
    its number of processes (both default to 1)."""
    images = word_pngs(root, "test", 64)
    out = {
        "images": len(images),
        "mean_png_bytes": round(sum(map(len, images)) / len(images)),
        "request_format": {
            "ours": 'POST /predict {"image": "<base64 png>"}',
            "mlflow": 'POST /invocations {"dataframe_split": {"columns": ["image"], "data": [["<base64 png>"]]}}',
        },
        "workers": {"ours": ours_workers, "mlflow": mlflow_workers},
    }
    servers = make_servers(model_uri, mlflow_workers, ours_workers)
    out.update(serve_benchmark(runner, servers, images, requests, repeats, tracking_uri))
    return out


def make_servers(model_uri: str, mlflow_workers: int, ours_workers: int = 1) -> list[Server]:
    """`python -m steps.serve --workers ours_workers` and `mlflow models serve -w mlflow_workers` of `model_uri`,
    each on a free loopback port."""
    ours_port, mlflow_port = free_port(), free_port()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    ours = [sys.executable, "-m", "steps.serve", "--model-uri", model_uri, "--workers", str(ours_workers)]
    ours += ["--host", "127.0.0.1", "--port"]
    theirs = [mlflow_bin, "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1"]
    return [
        Server("ours", ours + [str(ours_port)], "/health", our_target(ours_port)),
        Server(
            "mlflow",
            theirs + ["-p", str(mlflow_port), "-w", str(mlflow_workers)],
            "/ping",
            mlflow_target(mlflow_port),
        ),
    ]
