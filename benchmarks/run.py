"""Side-by-side benchmarks of the pipeline against the usual baselines, on the same data and machine.

    python benchmarks/run.py --quick      # 1500 synthetic words, 3 x 60 requests per level: ~3 minutes
    python benchmarks/run.py              # 6000 words, 3 x 200 requests per level, profiles: ~10-20 minutes

Measures, in one run, and prints a table (comparison, ours, baseline, ratio, target, met?) and
writes benchmarks/results.json with both figures and their ratio for every comparison:

1. input pipeline: images/s of steps.data.batches over the TFRecord shards (eval and augmenting
   train readers, steady-state epochs) vs the Keras IAM example's pipeline over the same words as
   PNG files (benchmarks/keras_baseline.py), both decoding every epoch and as published (.cache());
2. preprocess: images/s of preprocess.build with all cores (workers=0) vs one worker (workers=1),
   and (full mode, --profile) the same conversion with a warm pool, to separate start-up from work;
3. training: samples/s of Keras fit of the default model (MLproject's train defaults) on our
   reader vs the same model fed by the Keras pipeline, and the time each step waits for its batch;
4. serving: p50/p95 latency and images/s at concurrency 1, 8, 32 of `python -m steps.serve` vs
   `mlflow models serve` (same registered model, models:/HandwritingRecognitionModel/1), and the
   server CPU each image costs;
5. peak RSS of both servers and of training.

Everything it makes lives in benchmarks/work/ (gitignored): per data size (data-1500, data-6000)
the synthetic words (steps.synthetic, reused across runs), their PNG files and the TFRecord
dataset; a throwaway sqlite tracking store with the registered model; one log per phase in logs/.

The machine is shared, so the run waits (up to --max-wait seconds) for the 1-minute load average
to drop below --load-threshold before it starts, waits for other processes to go quiet before each
phase, and records for every measurement the load average and the CPU (in cores) that processes
outside this benchmark used meanwhile ("other CPU"). Each phase runs in its own child process
(benchmarks/phases.py), so one measurement's caches, threads and memory do not leak into the next;
where two things are compared in one phase they take turns (input pipelines, training epochs, the
two servers at each concurrency level), so that load from elsewhere falls on both alike.

When a target is missed, these find out why (see their docstrings): profile_input.py (stages of the
reader), profile_preprocess.py (pool start-up vs conversion, alternatives), profile_imaging.py
(stages of imaging.preprocess_bytes), profile_serve.py (components of a /predict request) and
probe_serve_load.py with serve_probe.py (batch sizes the server forms under load).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

MODEL_NAME = "HandwritingRecognitionModel"   # steps.config.REGISTERED_MODEL (not imported: no TF here)
MODEL_URI = f"models:/{MODEL_NAME}/1"
LEVELS = (1, 8, 32)
MODES = {
    "quick": dict(num_words=1500, num_writers=60, requests=60, serve_repeats=3, train_epochs=2, compare_rounds=1, preprocess_repeats=1,
                  warm_seconds=2.0, baseline_cached_training=False, profile=False, max_wait=120),
    "full": dict(num_words=6000, num_writers=60, requests=200, serve_repeats=3, train_epochs=3, compare_rounds=2, preprocess_repeats=2,
                 warm_seconds=5.0, baseline_cached_training=True, profile=True, max_wait=600),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- machine facts

def machine() -> dict:
    import importlib.metadata as md

    def version(*names):
        for n in names:
            try:
                return md.version(n)
            except md.PackageNotFoundError:
                continue
        return None

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu, "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(),
        "python": platform.python_version(), "tensorflow": version("tensorflow-cpu", "tensorflow"),
        "keras": version("keras"), "mlflow": version("mlflow"), "numpy": version("numpy"),
        "waitress": version("waitress"), "uvicorn": version("uvicorn"),
    }


# ------------------------------------------------------------------------ load and process monitoring

def _busy_seconds() -> tuple[float, float]:
    """(system-wide busy CPU seconds, steal seconds) so far."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    steal = getattr(t, "steal", 0.0)
    return sum(t) - idle - steal - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0), steal


def other_cpu(window: float = 2.0) -> float:
    """Cores used by processes outside this benchmark over the next `window` seconds (we are idle meanwhile)."""
    me = psutil.Process()
    b0, _ = _busy_seconds()
    c0 = sum(me.cpu_times()[:2])
    time.sleep(window)
    b1, _ = _busy_seconds()
    c1 = sum(me.cpu_times()[:2])
    return max(0.0, (b1 - b0 - (c1 - c0)) / window)


WAITED = [0.0]   # seconds spent waiting for a quiet machine in this run


def wait_quiet(max_wait: float, load_threshold: float | None, other_threshold: float = 0.5) -> dict:
    """Wait (at most max_wait s) until the load average (if given) and other processes' CPU are low."""
    t0 = time.monotonic()
    while True:
        load1 = os.getloadavg()[0]
        other = other_cpu()
        quiet = other < other_threshold and (load_threshold is None or load1 < load_threshold)
        waited = time.monotonic() - t0
        if quiet or waited >= max_wait:
            WAITED[0] += waited
            if not quiet:
                log(f"machine still busy after {waited:.0f}s (load {load1:.2f}, other processes {other:.2f} cores): "
                    f"measuring anyway; the figures below record it")
            return {"waited_seconds": round(waited, 1), "load_1min": round(load1, 2), "other_cpu_cores": round(other, 2),
                    "quiet": quiet}
        log(f"waiting for a quiet machine: load {load1:.2f}, other processes {other:.2f} cores ({waited:.0f}s waited)")
        time.sleep(10)


class Monitor:
    """While active: peak RSS of process trees (sum over each tree's processes), this benchmark's CPU, the others'.

    The CPU of the trees is tracked per process (its last sampled user+system time), so children that a
    child spawns (pool workers, uvicorn) are counted even after they exit.
    """

    def __init__(self, interval: float = 0.1):
        self.roots: dict[str, psutil.Process] = {}
        self.interval = interval
        self.peak: dict[str, int] = {}
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loads: list[float] = []
        self._lock = threading.Lock()

    def attach(self, root: psutil.Process, name: str = "main") -> None:
        with self._lock:
            self.roots[name] = root
            self.peak.setdefault(name, 0)

    @property
    def peak_rss(self) -> int:
        return self.peak.get("main", 0)

    def _sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        for name, root in roots.items():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                continue
            rss = 0
            for p in procs:
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        self._cpu[(p.pid, p.create_time())] = sum(p.cpu_times()[:2])
                except psutil.Error:
                    continue
            self.peak[name] = max(self.peak[name], rss)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self._sample()
            if n % 10 == 0:
                self._loads.append(os.getloadavg()[0])
            n += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._me = psutil.Process()
        self._me_cpu0 = sum(self._me.cpu_times()[:2])
        self._busy0, self._steal0 = _busy_seconds()
        self._t0 = time.perf_counter()
        self.load_start = os.getloadavg()[0]
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._sample()
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._t0
        busy, steal = _busy_seconds()
        own = sum(self._me.cpu_times()[:2]) - self._me_cpu0
        own += sum(v for (pid, _), v in self._cpu.items() if pid != self._me.pid)
        self.other_cores = max(0.0, (busy - self._busy0 - own) / self.seconds)
        self.steal_cores = (steal - self._steal0) / self.seconds
        self.own_cores = own / self.seconds
        self.load_end = os.getloadavg()[0]

    def summary(self) -> dict:
        summary = {"seconds": round(self.seconds, 2), "peak_rss_mb": round(self.peak_rss / 2**20, 1),
                   "load_1min_start": round(self.load_start, 2), "load_1min_end": round(self.load_end, 2),
                   "load_1min_max": round(max(self._loads + [self.load_start, self.load_end]), 2),
                   "other_cpu_cores": round(self.other_cores, 2), "benchmark_cpu_cores": round(self.own_cores, 2),
                   "steal_cores": round(self.steal_cores, 2)}
        if set(self.peak) != {"main"}:
            summary["peak_rss_mb_by_tree"] = {k: round(v / 2**20, 1) for k, v in self.peak.items()}
        return summary


# ----------------------------------------------------------------------------------------- phases

class Runner:
    def __init__(self, work: Path, max_phase_wait: float):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.max_phase_wait = max_phase_wait

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
        env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        env.update(extra)
        return env

    def phase(self, name: str, phase: str, args: dict, tag: str | None = None) -> dict:
        """Run phases.py <phase> in a child process under a Monitor; its result plus the monitor's figures."""
        tag = tag or name
        quiet = wait_quiet(self.max_phase_wait, None)
        args_file, result_file = self.logs / f"{tag}.args.json", self.logs / f"{tag}.result.json"
        args_file.write_text(json.dumps(args, indent=1))
        result_file.unlink(missing_ok=True)
        log(f"{tag}: running (log: {self.logs / (tag + '.log')})")
        with open(self.logs / f"{tag}.log", "w") as out, Monitor() as mon:
            proc = subprocess.Popen([sys.executable, str(HERE / "phases.py"), phase, str(args_file), str(result_file)],
                                    cwd=REPO, env=self.env(**args.get("_env", {})), stdout=out, stderr=subprocess.STDOUT)
            mon.attach(psutil.Process(proc.pid))
            code = proc.wait()
        if code != 0 or not result_file.exists():
            tail = (self.logs / f"{tag}.log").read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"phase {tag} failed with exit code {code}:\n" + "\n".join(tail))
        result = json.loads(result_file.read_text())
        result["_measure"] = {**mon.summary(), "waited_for_quiet": quiet}
        log(f"{tag}: done in {mon.seconds:.1f}s (other CPU {mon.other_cores:.2f} cores, load {mon.load_end:.2f})")
        return result


def data_root(work: Path, mode: dict) -> Path:
    """Where one data size lives (quick and full keep their own, so switching modes regenerates nothing)."""
    return work / f"data-{mode['num_words']}"


def latest_data_root(work: Path = HERE / "work") -> Path:
    """The most recently prepared data size under `work` (the default of the profiling scripts)."""
    roots = sorted(work.glob("data-*/dataset/stats.json"), key=lambda f: f.stat().st_mtime)
    if not roots:
        raise SystemExit(f"no dataset under {work}: run python benchmarks/run.py --quick first")
    return roots[-1].parent.parent


def prepare_data(runner: Runner, mode: dict, fresh: bool) -> tuple[Path, Path]:
    """Synthetic raw words (reused if generated with the same parameters) and their PNGs in IAM's layout.
    Regenerating them invalidates the dataset built from them."""
    root = data_root(runner.work, mode)
    raw, words = root / "raw", root / "words"
    stamp = raw / "benchmark-stamp.json"
    wanted = {"num_words": mode["num_words"], "num_writers": mode["num_writers"], "seed": 42}
    if fresh or not stamp.exists() or json.loads(stamp.read_text()) != wanted:
        for d in (raw, words, root / "dataset", root / "dataset-1"):
            shutil.rmtree(d, ignore_errors=True)
        result = runner.phase("generate", "generate", {"raw_dir": str(raw), **wanted})
        log(f"generated {result['counts']}")
        stamp.write_text(json.dumps(wanted))
    if not (words / ".complete").exists():
        shutil.rmtree(words, ignore_errors=True)
        words.mkdir(parents=True)
        # As the Keras example does (tar -xf words.tgz -C data/words): the baseline reads these PNG files.
        with tarfile.open(raw / "words.tgz") as tar:
            tar.extractall(words, filter="data")
        (words / ".complete").touch()
    return raw, words


# -------------------------------------------------------------------------------------------- serving

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


def tree_cpu(proc: psutil.Process) -> float:
    """user+system CPU seconds of a live process and its live descendants."""
    total = 0.0
    for q in [proc] + proc.children(recursive=True):
        try:
            total += sum(q.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


class Server:
    """A server under test: started in its own session (so it is stopped with its children), with the
    load generator's target for it and its log file."""

    def __init__(self, name: str, command: list[str], ready_path: str, target: loadgen.Target):
        self.name, self.command, self.ready_path, self.target = name, command, ready_path, target
        self.proc: subprocess.Popen | None = None

    def start(self, runner: "Runner", mon: Monitor, tracking_uri: str, images: list[bytes]) -> dict:
        log(f"serve/{self.name}: starting {' '.join(self.command)}")
        self.logfile = open(runner.logs / f"serve-{self.name}.log", "w")
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=runner.env(MLFLOW_TRACKING_URI=tracking_uri),
                                     stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        mon.attach(self.ps, self.name)
        startup = wait_http(f"http://{self.target.host}:{self.target.port}{self.ready_path}", self.proc)
        status, answer = loadgen.one_request(self.target, images[0])
        if status != 200 or not self.target.ok(answer):
            raise RuntimeError(f"{self.name} answered {status}: {str(answer)[:300]}")
        for png in images[:10]:                       # warm-up: the first calls build TF kernels
            loadgen.one_request(self.target, png)
        time.sleep(3 * mon.interval)
        return {"command": self.command, "startup_seconds": round(startup, 2), "example_answer": answer,
                "rss_after_warmup_mb": round(mon.peak[self.name] / 2**20, 1)}

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.logfile.close()


def measure_level(server: Server, images: list[bytes], c: int, requests: int) -> tuple:
    """One closed-loop run -> (LevelResult, server CPU seconds, load generator CPU seconds)."""
    server0, client0 = tree_cpu(server.ps), sum(psutil.Process().cpu_times()[:2])
    r = loadgen.run_level(server.target, images, c, requests)
    return r, tree_cpu(server.ps) - server0, sum(psutil.Process().cpu_times()[:2]) - client0


def serve_benchmark(runner: "Runner", servers: list[Server], images: list[bytes], requests: int, repeats: int,
                    tracking_uri: str) -> dict:
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
                    loadgen.run_level(server.target, images, c, 2 * c)   # warm the connections and batch sizes
                runs: dict[str, list] = {s.name: [] for s in servers}
                t_load = os.getloadavg()[0]
                for _ in range(repeats):
                    for server in servers:
                        runs[server.name].append(measure_level(server, images, c, requests))
                for server in servers:
                    rs = runs[server.name]
                    merged = loadgen.LevelResult(c, sum(r.requests for r, _, _ in rs), sum(r.errors for r, _, _ in rs),
                                                 sum(r.seconds for r, _, _ in rs),
                                                 [ms for r, _, _ in rs for ms in r.latencies_ms],
                                                 next((r.first_error for r, _, _ in rs if r.first_error), None))
                    done = max(1, merged.requests - merged.errors)
                    server_cpu, client_cpu = sum(x for _, x, _ in rs), sum(x for _, _, x in rs)
                    level = {**merged.summary(), "load_1min": round(t_load, 2), "repeats": repeats,
                             "runs_images_per_second": [round(r.throughput, 1) for r, _, _ in rs],
                             # CPU per answered image: the server's (all its processes), the load generator's.
                             "server_cpu_ms_per_image": round(server_cpu * 1000 / done, 2),
                             "server_cpu_cores": round(server_cpu / merged.seconds, 2),
                             "client_cpu_ms_per_image": round(client_cpu * 1000 / done, 2)}
                    out[server.name]["levels"][str(c)] = level
                    log(f"serve/{server.name}: c={c}: {level['images_per_second']:.1f} images/s "
                        f"(runs {level['runs_images_per_second']}), p50 {level['p50_ms']:.1f} ms, p95 "
                        f"{level['p95_ms']:.1f} ms, server CPU {level['server_cpu_ms_per_image']:.1f} ms/image "
                        f"({level['server_cpu_cores']:.2f} cores), {merged.errors} errors")
        finally:
            for server in servers:
                server.stop()
    measure = {**mon.summary(), "waited_for_quiet": quiet}
    for server in servers:
        out[server.name]["peak_rss_mb"] = measure["peak_rss_mb_by_tree"][server.name]
    out["_measure"] = measure
    return out


def serving(runner: Runner, data_dir: Path, words_dir: Path, requests: int, repeats: int, tracking_uri: str,
            mlflow_workers: int) -> dict:
    import pyarrow.parquet as pq

    manifest = pq.read_table(data_dir / "manifest.parquet").to_pydict()
    test_ids = [i for i, s in zip(manifest["id"], manifest["split"]) if s == "test"][:64]
    images = []
    for word_id in test_ids:
        a, b = word_id.split("-")[:2]
        images.append((words_dir / a / f"{a}-{b}" / f"{word_id}.png").read_bytes())

    def b64(png: bytes) -> str:
        return base64.b64encode(png).decode()

    ours_port, mlflow_port = free_port(), free_port()
    ours = loadgen.Target("ours", "127.0.0.1", ours_port, "/predict",
                          body=lambda png: json.dumps({"image": b64(png)}).encode(),
                          ok=lambda d: isinstance(d, dict) and "text" in d)
    # MLflow's scoring server decodes base64 strings for a column the signature declares binary.
    theirs = loadgen.Target("mlflow", "127.0.0.1", mlflow_port, "/invocations",
                            body=lambda png: json.dumps({"dataframe_split": {"columns": ["image"],
                                                                             "data": [[b64(png)]]}}).encode(),
                            ok=lambda d: isinstance(d, dict) and "predictions" in d)
    out = {"images": len(images), "mean_png_bytes": round(sum(map(len, images)) / len(images)),
           "request_format": {"ours": 'POST /predict {"image": "<base64 png>"}',
                              "mlflow": 'POST /invocations {"dataframe_split": {"columns": ["image"], '
                                        '"data": [["<base64 png>"]]}}'}}
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    servers = [
        Server("ours", [sys.executable, "-m", "steps.serve", "--model-uri", MODEL_URI, "--host", "127.0.0.1",
                        "--port", str(ours_port)], "/health", ours),
        Server("mlflow", [mlflow_bin, "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
                          "-p", str(mlflow_port), "-h", "127.0.0.1", "-w", str(mlflow_workers)], "/ping", theirs),
    ]
    out.update(serve_benchmark(runner, servers, images, requests, repeats, tracking_uri))
    return out


# --------------------------------------------------------------------------------------- comparisons

def row(name: str, unit: str, ours: float | None, baseline: float | None, better: str, target: str = "",
        met: bool | None = None, measure: dict | None = None, note: str = "", baseline_name: str = "") -> dict:
    ratio = ours / baseline if ours is not None and baseline else None
    return {"comparison": name, "unit": unit, "ours": ours, "baseline": baseline, "baseline_name": baseline_name,
            "ratio": ratio, "better": better, "target": target, "target_met": met,
            "load_1min": (measure or {}).get("load_1min_max"), "other_cpu_cores": (measure or {}).get("other_cpu_cores"),
            "note": note}


def comparisons(res: dict, mode: dict, cores: int) -> list[dict]:
    rows = []
    if "preprocess" in res:
        p = res["preprocess"]
        all_cores, one = p["all_cores"], p["one_worker"]
        target = 0.8 * cores
        ratio = all_cores["images_per_second"] / one["images_per_second"]
        rows.append(row(f"preprocess: preprocess.build images/s, workers=0 ({cores} processes) vs workers=1",
                        "images/s", all_cores["images_per_second"], one["images_per_second"], "higher",
                        f">= {target:.1f}x (0.8 x {cores} cores)", ratio >= target, all_cores["_measure"],
                        f"{all_cores['images']} images; convert time incl. pool start-up (build wall: "
                        f"{all_cores['build_seconds']:.1f}s vs {one['build_seconds']:.1f}s)", "workers=1"))
        if "profile_all" in p:
            a, o = p["profile_all"], p["profile_one"]
            rows.append(row("preprocess profile: conversion with a warm pool (start-up excluded)", "images/s",
                            a["warm_images_per_second"], o["warm_images_per_second"], "higher", "", None,
                            a["_measure"], f"pool start-up {a['startup_seconds']:.1f}s; archive streaming alone "
                                           f"{a['archive_stream_images_per_second']:.0f} images/s", "1 worker"))
    if "input" in res:
        i = res["input"]
        m = i["_measure"]
        base = i["keras_per_epoch_decode"]["steady_images_per_second"]
        for key, label in (("ours_eval", "eval reader (training=False)"),
                           ("ours_train_augment", "training reader with augmentation")):
            ours = i[key]["steady_images_per_second"]
            rows.append(row(f"input: {label}, steady epoch, vs Keras example decoding PNGs each epoch", "images/s",
                            ours, base, "higher", ">= 5x", ours / base >= 5, m,
                            f"{i['images']} train images, batch 32", "Keras example, no cache"))
        rows.append(row("input: first (cold) epoch, eval reader vs Keras example", "images/s",
                        i["ours_eval"]["cold_images_per_second"], i["keras_per_epoch_decode"]["cold_images_per_second"],
                        "higher", "", None, m, "includes pipeline start-up", "Keras example"))
        rows.append(row("input: eval reader vs Keras example as published (.batch().cache(): float batches in RAM)",
                        "images/s", i["ours_eval"]["steady_images_per_second"],
                        i["keras_as_published_cache"]["steady_images_per_second"], "higher", "", None, m,
                        "steady epoch; both read memory", "Keras example, cached"))
    if "train" in res:
        t = res["train"]
        c = t["compare"]
        m = c["_measure"]
        o, k = c["pipelines"]["ours"], c["pipelines"]["keras_per_epoch_decode"]
        rows.append(row("training: samples/s, Keras fit of the default model, steady epochs (interleaved)",
                        "samples/s", o["steady_samples_per_second"], k["steady_samples_per_second"], "higher", "",
                        None, m, f"ours augments, the baseline does not; epoch s {o['epoch_seconds']} vs "
                                 f"{k['epoch_seconds']} (1st: tracing)", "same model on Keras pipeline"))
        ol, kl = o["loop"], k["loop"]
        rows.append(row("training: time a step waits for its batch (mean, train_on_batch loop)", "ms/step",
                        ol["wait_ms_mean"], kl["wait_ms_mean"], "lower", "< 5% of step time",
                        ol["wait_fraction"] < 0.05, m,
                        f"wait share {100 * ol['wait_fraction']:.1f}% vs {100 * kl['wait_fraction']:.1f}%; p95 "
                        f"{ol['wait_ms_p95']:.1f} vs {kl['wait_ms_p95']:.1f} ms; step {ol['step_ms_mean']:.0f} vs "
                        f"{kl['step_ms_mean']:.0f} ms", "Keras pipeline"))
        if "keras_as_published_cache" in c["pipelines"]:
            kc = c["pipelines"]["keras_as_published_cache"]
            rows.append(row("training: samples/s vs the Keras pipeline as published (cached), interleaved",
                            "samples/s", o["steady_samples_per_second"], kc["steady_samples_per_second"], "higher",
                            "", None, m, f"its wait share {100 * kc['loop']['wait_fraction']:.1f}%", "Keras, cached"))
        alone = t["ours"]
        rows.append(row("training alone (ours, as steps.train fits): samples/s, steady epoch", "samples/s",
                        alone["steady_samples_per_second"], None, "higher", "", None, alone["_measure"],
                        f"epoch s {alone['epoch_seconds']}", ""))
        rows.append(row("memory: peak RSS of training (ours, the training process)", "MB",
                        alone["peak_rss_bytes"] / 2**20, None, "lower", "", None, alone["_measure"],
                        f"process tree incl. export: {alone['_measure']['peak_rss_mb']} MB", ""))
    if "serve" in res:
        s = res["serve"]
        ours, ml = s["ours"]["levels"], s["mlflow"]["levels"]
        other = s["_measure"]["other_cpu_cores"]
        for c in LEVELS:
            c = str(c)
            met = ours[c]["images_per_second"] >= 2 * ml[c]["images_per_second"] if c == "8" else None
            rows.append(row(f"serve: throughput at concurrency {c}", "images/s", ours[c]["images_per_second"],
                            ml[c]["images_per_second"], "higher", ">= 2x" if c == "8" else "", met,
                            {"load_1min_max": ours[c]["load_1min"], "other_cpu_cores": other},
                            f"{ours[c]['repeats']} x {mode['requests']} requests, servers taking turns; runs "
                            f"{ours[c]['runs_images_per_second']} vs {ml[c]['runs_images_per_second']}",
                            "mlflow models serve"))
        for c in LEVELS:
            c = str(c)
            for q in ("p50", "p95"):
                target = "< 20 ms" if (c == "1" and q == "p50") else ""
                met = ours[c]["p50_ms"] < 20 if target else None
                rows.append(row(f"serve: {q} latency at concurrency {c}", "ms", ours[c][f"{q}_ms"], ml[c][f"{q}_ms"],
                                "lower", target, met, {"load_1min_max": ours[c]["load_1min"], "other_cpu_cores": other},
                                "one word image per request", "mlflow models serve"))
        for c in ("1", "8"):
            rows.append(row(f"serve: server CPU per image at concurrency {c}", "ms", ours[c]["server_cpu_ms_per_image"],
                            ml[c]["server_cpu_ms_per_image"], "lower", "", None,
                            {"load_1min_max": ours[c]["load_1min"], "other_cpu_cores": other},
                            f"server busy {ours[c]['server_cpu_cores']} vs {ml[c]['server_cpu_cores']} cores; load "
                            f"generator {ours[c]['client_cpu_ms_per_image']} vs {ml[c]['client_cpu_ms_per_image']} ms/image",
                            "mlflow models serve"))
        rows.append(row("memory: peak RSS of the server (process tree)", "MB", s["ours"]["peak_rss_mb"],
                        s["mlflow"]["peak_rss_mb"], "lower", "", None, s["_measure"],
                        f"after warm-up: {s['ours']['rss_after_warmup_mb']} vs {s['mlflow']['rss_after_warmup_mb']} MB",
                        "mlflow models serve"))
    return rows


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if unit in ("ms", "ms/step") or abs(v) < 10:
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:,.0f}"


def table(rows: list[dict]) -> str:
    head = ["comparison", "unit", "ours", "baseline", "ratio", "target", "met?", "load", "other CPU"]
    lines = [head]
    for r in rows:
        lines.append([r["comparison"], r["unit"], fmt(r["ours"], r["unit"]), fmt(r["baseline"], r["unit"]),
                      f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-", r["target"] or "-",
                      fmt(r["target_met"]) if r["target_met"] is not None else "-",
                      f"{r['load_1min']:.2f}" if r["load_1min"] is not None else "-",
                      f"{r['other_cpu_cores']:.2f}" if r["other_cpu_cores"] is not None else "-"])
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(lines[0], widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(l, widths)) + " |" for l in lines[1:]]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- main

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small data and request counts, no profiles (a few minutes)")
    p.add_argument("--work-dir", type=Path, default=HERE / "work")
    p.add_argument("--output", type=Path, default=HERE / "results.json")
    p.add_argument("--phases", default="preprocess,input,train,serve",
                   help="comma-separated subset of preprocess,input,train,serve (serve needs train)")
    p.add_argument("--requests", type=int, help="requests per concurrency level (default 60 quick, 200 full)")
    p.add_argument("--max-wait", type=float, help="seconds to wait for a quiet machine before starting "
                                                  "(default 120 quick, 600 full)")
    p.add_argument("--phase-wait", type=float, default=60.0,
                   help="seconds to wait before each phase for other processes to go quiet")
    p.add_argument("--load-threshold", type=float, default=1.5, help="1-minute load average to wait for")
    p.add_argument("--mlflow-workers", type=int, default=1, help="uvicorn workers of mlflow models serve (its default: 1)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="also profile preprocess (pool start-up vs warm conversion); default on in full mode")
    p.add_argument("--fresh", action="store_true", help="regenerate the synthetic words even if present")
    a = p.parse_args()

    mode_name = "quick" if a.quick else "full"
    mode = dict(MODES[mode_name])
    if a.requests:
        mode["requests"] = a.requests
    profile = mode["profile"] if a.profile is None else a.profile
    phases = set(a.phases.split(","))
    work = a.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    facts = machine()
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    log(f"{mode_name} mode on {facts['cpu_model']}, {facts['cores']} cores, {facts['ram_gb']} GB; "
        f"TF {facts['tensorflow']}, MLflow {facts['mlflow']}")
    start_quiet = wait_quiet(mode["max_wait"] if a.max_wait is None else a.max_wait, a.load_threshold)
    log(f"starting at load {start_quiet['load_1min']} (other processes {start_quiet['other_cpu_cores']} cores)")
    runner = Runner(work, a.phase_wait)
    res: dict = {}

    raw, words = prepare_data(runner, mode, a.fresh)
    data_dir = data_root(work, mode) / "dataset"
    if "preprocess" in phases or not (data_dir / "stats.json").exists():
        p_res = {}
        for rep in range(mode["preprocess_repeats"]):
            for key, workers in (("one_worker", 1), ("all_cores", 0)):
                r = runner.phase("preprocess", "preprocess",
                                 {"raw_dir": str(raw), "out_dir": str(data_dir if workers == 0 else data_dir.parent / "dataset-1"),
                                  "workers": workers}, tag=f"preprocess-w{workers}-{rep}")
                # Best of the repeats: the least disturbed run on a shared machine.
                if key not in p_res or r["images_per_second"] > p_res[key]["images_per_second"]:
                    p_res[key] = r
        if profile:
            for key, workers in (("profile_one", 1), ("profile_all", 0)):
                p_res[key] = runner.phase("convert_profile", "convert_profile", {"raw_dir": str(raw), "workers": workers},
                                          tag=f"convert-profile-w{workers}")
        res["preprocess"] = p_res
    if "input" in phases:
        res["input"] = runner.phase("input", "input", {
            "data_dir": str(data_dir), "raw_dir": str(raw), "words_dir": str(words), "batch_size": 32,
            "min_warm_seconds": mode["warm_seconds"], "min_warm_epochs": 2, "max_epochs": 400})
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    if "train" in phases:
        (work / "mlflow.db").unlink(missing_ok=True)      # a fresh store, so the model is version 1
        shutil.rmtree(work / "artifacts", ignore_errors=True)
        common = {"data_dir": str(data_dir), "raw_dir": str(raw), "words_dir": str(words),
                  "epochs": mode["train_epochs"], "tracking_uri": tracking_uri,
                  "artifacts_dir": str(work / "artifacts")}
        t_res = {"ours": runner.phase("train", "train", {**common, "pipeline": "ours", "export": True},
                                      tag="train-ours")}
        pipelines = ["ours", "keras_per_epoch_decode"] + (["keras_as_published_cache"]
                                                          if mode["baseline_cached_training"] else [])
        t_res["compare"] = runner.phase("train_compare", "train_compare",
                                        {**common, "pipelines": pipelines, "rounds": mode["compare_rounds"]},
                                        tag="train-compare")
        registered = t_res["ours"]["export"]["registered"]
        if registered != MODEL_URI:
            raise RuntimeError(f"expected the model to be registered as {MODEL_URI}, got {registered}")
        res["train"] = t_res
    if "serve" in phases:
        res["serve"] = serving(runner, data_dir, words, mode["requests"], mode["serve_repeats"], tracking_uri,
                               a.mlflow_workers)

    rows = comparisons(res, mode, facts["cores_available"])
    missed = [r for r in rows if r["target_met"] is False]
    results = {
        "command": command, "mode": mode_name, "mode_settings": mode,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1), "seconds_waiting_for_quiet": round(WAITED[0], 1),
        "machine": facts,
        "load": {"at_start": start_quiet, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "comparisons": rows, "targets_missed": [r["comparison"] for r in missed], "details": res,
    }
    a.output.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nBenchmarks ({mode_name} mode), {facts['cpu_model']}, {facts['cores_available']} cores, "
          f"{facts['ram_gb']} GB RAM; Python {facts['python']}, TensorFlow {facts['tensorflow']}, "
          f"Keras {facts['keras']}, MLflow {facts['mlflow']}")
    print(f"load average at start {start_quiet['load_1min']} (waited {start_quiet['waited_seconds']}s); "
          f"'load' = highest 1-min load average during the measurement (the benchmark's own processes count "
          f"too), 'other CPU' = cores used meanwhile by processes outside the benchmark; ratio = ours / baseline\n")
    print(table(rows))
    print(f"\n{len(rows)} comparisons in {results['seconds']:.0f}s ({results['seconds_waiting_for_quiet']:.0f}s of it "
          f"waiting for a quiet machine); results in {a.output}")
    for r in missed:
        print(f"TARGET MISSED: {r['comparison']}: ours {fmt(r['ours'], r['unit'])} {r['unit']} vs baseline "
              f"{fmt(r['baseline'], r['unit'])} (ratio {r['ratio']:.2f}x), target {r['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
