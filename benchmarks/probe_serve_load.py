"""Load steps.serve (through benchmarks/serve_probe.py) and report batch sizes and model time per level.

    python benchmarks/probe_serve_load.py [--work-dir benchmarks/work] [--requests 300] [--threads 1,2]

Needs the model and words of a benchmarks/run.py run. For each number of batcher threads (1 = steps.serve
as it is; 2 = the suggested change), starts the server, sends --requests requests at concurrency 1, 8
and 32, and prints images/s, p50, mean batch size and the share of the wall time the model was running.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=HERE / "work", help="holds mlflow.db with the registered model")
    p.add_argument("--data-root", type=Path, help="default: the latest benchmark data (work/data-*)")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--adaptive", default="0", help="comma list of 0/1: run with the adaptive batch wait too")
    a = p.parse_args()
    work = a.work_dir.resolve()
    if a.data_root is None:
        sys.path.insert(0, str(HERE))
        from run import latest_data_root

        a.data_root = latest_data_root(work)
    data_root = a.data_root.resolve()
    import pyarrow.parquet as pq

    m = pq.read_table(data_root / "dataset" / "manifest.parquet").to_pydict()
    ids = [i for i, s in zip(m["id"], m["split"]) if s == "test"][:64]
    pngs = [(data_root / "words" / i.split("-")[0] / "-".join(i.split("-")[:2]) / f"{i}.png").read_bytes() for i in ids]
    configs = [(int(t), ad) for ad in a.adaptive.split(",") for t in a.threads.split(",")]
    print(f"{'config':>22s} {'c':>3s} {'images/s':>9s} {'p50 ms':>7s} {'mean batch':>10s} {'model busy':>10s}")
    for threads, adaptive in configs:
        port = run.free_port()
        stats = work / "logs" / f"probe-{threads}.json"
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", TF_CPP_MIN_LOG_LEVEL="2",
                   HWR_PROBE_BATCHER_THREADS=str(threads), HWR_PROBE_ADAPTIVE=adaptive)
        proc = subprocess.Popen([sys.executable, str(HERE / "serve_probe.py"), str(stats), "--model-uri",
                                 run.MODEL_URI, "--port", str(port)], cwd=HERE.parent, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            run.wait_http(f"http://127.0.0.1:{port}/health", proc)
            target = loadgen.Target("ours", "127.0.0.1", port, "/predict",
                                    body=lambda x: json.dumps({"image": base64.b64encode(x).decode()}).encode(),
                                    ok=lambda d: "text" in d)
            for png in pngs[:10]:
                loadgen.one_request(target, png)
            for c in (1, 8, 32):
                loadgen.run_level(target, pngs, c, 2 * c)
                time.sleep(0.6)
                s0 = json.loads(stats.read_text())
                r = loadgen.run_level(target, pngs, c, a.requests)
                time.sleep(0.6)
                s1 = json.loads(stats.read_text())
                b, n = s1["batches"] - s0["batches"], s1["images"] - s0["images"]
                busy = (s1["model_seconds"] - s0["model_seconds"]) / r.seconds
                name = f"threads={threads} adaptive={adaptive}"
                print(f"{name:>22s} {c:3d} {r.throughput:9.1f} {r.percentile(0.5):7.1f} {n / max(b, 1):10.2f} "
                      f"{busy:10.2f}", flush=True)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


if __name__ == "__main__":
    main()
