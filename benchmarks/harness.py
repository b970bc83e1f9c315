"""The benchmark harness: machine facts, a quiet machine, each phase in a child process under a Monitor, and data.

On a shared machine a figure means little without the load it was taken under, so:
- `wait_quiet` waits (up to a limit) for the load average and other processes' CPU to drop;
- `Monitor` records, while a measurement runs, the peak RSS of process trees, this benchmark's CPU and
  the CPU that processes outside it used meanwhile ("other CPU"), and the load average;
- `Runner.phase` runs `phases.py <phase>` in a fresh child process under a Monitor, so one
  measurement's caches, threads and memory do not leak into the next.
The driver (run.py) and this module never import TensorFlow.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from steps.workflow import config  # noqa: E402  (names only: no TensorFlow, no MLflow)

WAITED = [0.0]  # seconds spent waiting for a quiet machine in this run


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow-cpu", "tensorflow"),
        "keras": version("keras"),
        "mlflow": version("mlflow"),
        "numpy": version("numpy"),
        "waitress": version("waitress"),
        "uvicorn": version("uvicorn"),
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
                log(
                    f"machine still busy after {waited:.0f}s (load {load1:.2f}, other processes {other:.2f} cores): "
                    f"measuring anyway; the figures below record it"
                )
            return {
                "waited_seconds": round(waited, 1),
                "load_1min": round(load1, 2),
                "other_cpu_cores": round(other, 2),
                "quiet": quiet,
            }
        log(f"waiting for a quiet machine: load {load1:.2f}, other processes {other:.2f} cores ({waited:.0f}s waited)")
        time.sleep(10)


def tree_cpu(proc: psutil.Process) -> float:
    """user+system CPU seconds of a live process and its live descendants."""
    total = 0.0
    for q in [proc] + proc.children(recursive=True):
        try:
            total += sum(q.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a live process and its live descendants (a server's workers)."""
    total = 0
    for q in [proc] + proc.children(recursive=True):
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


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
        summary = {
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "load_1min_start": round(self.load_start, 2),
            "load_1min_end": round(self.load_end, 2),
            "load_1min_max": round(max(self._loads + [self.load_start, self.load_end]), 2),
            "other_cpu_cores": round(self.other_cores, 2),
            "benchmark_cpu_cores": round(self.own_cores, 2),
            "steal_cores": round(self.steal_cores, 2),
        }
        if set(self.peak) != {"main"}:
            summary["peak_rss_mb_by_tree"] = {k: round(v / 2**20, 1) for k, v in self.peak.items()}
        return summary


# ----------------------------------------------------------------------------------------- phases


TRAINING_PHASES = ("train", "train_compare", "quality_vs_keras")


class Runner:
    """Runs the phases of one benchmark run; everything they make lives in `work`, their logs in work/logs."""

    def __init__(self, work: Path, max_phase_wait: float):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.max_phase_wait = max_phase_wait

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
        env.update(
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        )
        env.update(extra)
        return env

    def phase(self, name: str, phase: str, args: dict, tag: str | None = None) -> dict:
        """Run phases.py <phase> in a child process under a Monitor; its result plus the monitor's figures.

        Phases that train run with the train step's environment (config.TRAINING_ENV), so they train as it does."""
        tag = tag or name
        quiet = wait_quiet(self.max_phase_wait, None)
        args_file, result_file = self.logs / f"{tag}.args.json", self.logs / f"{tag}.result.json"
        args_file.write_text(json.dumps(args, indent=1))
        result_file.unlink(missing_ok=True)
        log(f"{tag}: running (log: {self.logs / (tag + '.log')})")
        with open(self.logs / f"{tag}.log", "w") as out, Monitor() as mon:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "phases.py"), phase, str(args_file), str(result_file)],
                cwd=REPO,
                env=self.env(**{**(config.TRAINING_ENV if phase in TRAINING_PHASES else {}), **args.get("_env", {})}),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            mon.attach(psutil.Process(proc.pid))
            code = proc.wait()
        if code != 0 or not result_file.exists():
            tail = (self.logs / f"{tag}.log").read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"phase {tag} failed with exit code {code}:\n" + "\n".join(tail))
        result = json.loads(result_file.read_text())
        result["_measure"] = {**mon.summary(), "waited_for_quiet": quiet}
        log(f"{tag}: done in {mon.seconds:.1f}s (other CPU {mon.other_cores:.2f} cores, load {mon.load_end:.2f})")
        return result


# ------------------------------------------------------------------------------------------- data


def data_root(work: Path, num_words: int) -> Path:
    """Where one data size lives (quick and full keep their own, so switching modes regenerates nothing)."""
    return work / f"data-{num_words}"


def latest_data_root(work: Path = HERE / "work") -> Path:
    """The most recently prepared data size under `work` (the default of the profiling scripts)."""
    roots = sorted(work.glob(f"data-*/dataset/{config.STATS_FILE}"), key=lambda f: f.stat().st_mtime)
    if not roots:
        raise SystemExit(f"no dataset under {work}: run python benchmarks/run.py --quick first")
    return roots[-1].parent.parent


def prepare_data(runner: Runner, num_words: int, num_writers: int, fresh: bool) -> tuple[Path, Path]:
    """Synthetic raw words (reused if generated with the same parameters) and their PNGs in IAM's layout.
    Regenerating them invalidates the dataset built from them."""
    root = data_root(runner.work, num_words)
    raw, words = root / "raw", root / "words"
    stamp = raw / "benchmark-stamp.json"
    wanted = {"num_words": num_words, "num_writers": num_writers, "seed": 42}
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
        with tarfile.open(raw / config.WORDS_ARCHIVE) as tar:
            tar.extractall(words, filter="data")
        (words / ".complete").touch()
    return raw, words


def word_pngs(root: Path, split: str = "test", limit: int = 64) -> list[bytes]:
    """The PNG files of the first `limit` words of `split` of the data under `root` (dataset/ and words/)."""
    import pyarrow.parquet as pq

    manifest = pq.read_table(root / "dataset" / config.MANIFEST_FILE).to_pydict()
    ids = [i for i, s in zip(manifest["id"], manifest["split"]) if s == split][:limit]
    return [(root / "words" / i.split("-")[0] / "-".join(i.split("-")[:2]) / f"{i}.png").read_bytes() for i in ids]
