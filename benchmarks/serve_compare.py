"""The serving comparison alone, over any registered model and any folder of word PNGs (benchmarks/run.py's
serve phase without preparing data and training first).

    python benchmarks/serve_compare.py --tracking-uri sqlite:///benchmarks/work/mlflow.db --images <dir>
        [--model-uri models:/HandwritingRecognitionModel/1] [--requests 400] [--repeats 3] [--out file.json]

`python -m steps.serve` and `mlflow models serve` of the same model, in turns at concurrency 1, 8 and 32 (or --levels)
(servers.serve_benchmark: alternating runs, the machine's load recorded); prints images/s, p50/p95 and
server CPU per image of both, and the ratio at each level.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import servers
from harness import HERE, Runner, machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--model-uri", default="models:/HandwritingRecognitionModel/1")
    p.add_argument("--images", type=Path, required=True, help="a folder of word PNGs")
    p.add_argument("--requests", type=int, default=400, help="requests per run")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per server and level")
    p.add_argument("--levels", default="1,8,32", help="concurrency levels, comma-separated")
    p.add_argument("--workers", type=int, default=1, help="processes of each server (steps.serve --workers, -w)")
    p.add_argument("--mlflow-workers", type=int, help="mlflow models serve -w, when it should differ from --workers")
    p.add_argument("--max-wait", type=float, default=0, help="seconds to wait for a quiet machine first")
    p.add_argument("--out", type=Path, help="also write the figures here as JSON")
    a = p.parse_args()
    images = [f.read_bytes() for f in sorted(a.images.rglob("*.png"))[:64]]
    servers.LEVELS = tuple(int(c) for c in a.levels.split(","))
    runner = Runner(HERE / "work", a.max_wait)
    both = servers.make_servers(a.model_uri, a.mlflow_workers or a.workers, a.workers)
    out = servers.serve_benchmark(runner, both, images, a.requests, a.repeats, a.tracking_uri)
    out["machine"] = machine()
    out["load_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"{'concurrency':>11s} {'ours img/s':>10s} {'mlflow img/s':>12s} {'ratio':>6s} {'ours p50':>8s} {'p95':>6s}")
    for c in servers.LEVELS:
        ours, theirs = out["ours"]["levels"][str(c)], out["mlflow"]["levels"][str(c)]
        ratio = ours["images_per_second"] / max(theirs["images_per_second"], 1e-9)
        print(
            f"{c:11d} {ours['images_per_second']:10.1f} {theirs['images_per_second']:12.1f} {ratio:6.2f} "
            f"{ours['p50_ms']:8.1f} {ours['p95_ms']:6.1f}   (load {ours['load_1min']})"
        )
    if a.out:
        a.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
