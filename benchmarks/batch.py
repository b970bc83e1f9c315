"""Throughput of batch transcription: `batch` on Spark (local mode) vs `infer` on the same images and model.

    python benchmarks/batch.py                       # 2,000 images, Spark local[2], the tiny test model
    python benchmarks/batch.py --images 5000 --master 'local[*]' --model-uri models:/HandwritingRecognitionModel/3

Both run as a user runs them (`python -m steps.infer --output jsonl`, `python -m steps.batch`), end to end, in
child processes, one after the other. Each runs twice: on 16 images (start-up: Python, TF, the model, Spark)
and on all of them; the steady rate is the difference, (N - 16) / (t_N - t_16), and the end-to-end rate N / t_N.
Images are copies of the tiny model's synthetic word PNGs under benchmarks/work/batch/ (gitignored); the model
is tests/model_fixture.py's (a real 1-epoch model, small layers) unless --model-uri and MLFLOW_TRACKING_URI name
another. Prints one JSON object with the figures, the machine's cores and load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests import model_fixture  # noqa: E402

FEW = 16


def tiny_model(root: Path) -> model_fixture.TinyModel:
    """tests/model_fixture.py's model, built once into root (its facts kept in root/facts.json)."""
    facts_file = root / "facts.json"
    if not facts_file.exists():
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        command = [sys.executable, "-m", "tests.model_fixture", str(root)]
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
        facts_file.write_text(proc.stdout.strip().splitlines()[-1])
    facts = json.loads(facts_file.read_text())
    return model_fixture.TinyModel(
        root=root,
        tracking_uri=facts["tracking_uri"],
        run_id=facts["run_id"],
        runs_uri=facts["runs_uri"],
        name=facts["name"],
        version=str(facts["version"]),
        images=tuple(Path(p) for p in facts["images"]),
    )


def images_dir(root: Path, sources: list[Path], n: int) -> Path:
    out = root / f"images-{n}"
    if not out.exists():
        out.mkdir(parents=True)
        for i in range(n):
            shutil.copy(sources[i % len(sources)], out / f"{i:06d}.png")
    return out


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--model-uri", default="")
    args = parser.parse_args()
    work = HERE / "work" / "batch"
    work.mkdir(parents=True, exist_ok=True)
    tiny = tiny_model(work / "model")
    env = model_fixture.env(tiny) if not args.model_uri else dict(os.environ)
    model_uri = args.model_uri or tiny.champion_uri
    result = {"images": args.images, "master": args.master, "model_uri": model_uri, "cores": os.cpu_count()}
    result["load_average_start"] = os.getloadavg()[0]
    for n in (FEW, args.images):
        folder = images_dir(work, list(tiny.images), n)
        infer = [sys.executable, "-m", "steps.infer", "--model-uri", model_uri, "--image-path", str(folder)]
        result[f"infer_seconds_{n}"] = timed(infer + ["--output", "jsonl"], env)
        out = work / f"out-{n}.parquet"
        shutil.rmtree(out, ignore_errors=True)
        batch = [sys.executable, "-m", "steps.batch", "--model-uri", model_uri, "--images", str(folder)]
        result[f"batch_seconds_{n}"] = timed(batch + ["--output", str(out), "--master", args.master], env)
    n = args.images
    for tool in ("infer", "batch"):
        total, few = result[f"{tool}_seconds_{n}"], result[f"{tool}_seconds_{FEW}"]
        result[f"{tool}_images_per_second"] = round(n / total, 1)
        result[f"{tool}_steady_images_per_second"] = round((n - FEW) / max(total - few, 1e-9), 1)
    result["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
