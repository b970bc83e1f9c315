"""The two engines of one logged word model side by side: its network as TensorFlow Lite and in the SavedModel.

    python benchmarks/profiles/profile_engines.py --model-uri models:/HandwritingRecognitionModel@champion
        [--tracking-uri sqlite:///mlflow.db] [--images benchmarks/work/data-6000/words] [--rounds 5]

The model must carry network.tflite (train writes it for word models). Loads it twice in one process, with
and without the file, and times in alternating rounds (medians over rounds, wall and CPU): the network for
one word and per word at batch 8, `read` of one word (bytes to text), and the largest logit difference and
readings that differ over the images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH.parent)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed(fn, n: int) -> tuple[float, float]:
    """(median wall ms, mean CPU ms) per call over n calls, after one warm-up call."""
    fn()
    walls, cpu0 = [], time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls) * 1e3, (time.process_time() - cpu0) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-uri", required=True)
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI")
    p.add_argument("--images", type=Path, default=BENCH / "work" / "data-6000" / "words", help="a folder of word PNGs")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=100, help="calls per measurement and round")
    a = p.parse_args()

    import mlflow
    import numpy as np

    from steps.inference.recognizer import CALIBRATION, CHARSET, LITE, SAVED_MODEL, HandwritingModel

    if a.tracking_uri:
        mlflow.set_tracking_uri(a.tracking_uri)
    artifacts = Path(mlflow.artifacts.download_artifacts(a.model_uri)) / "artifacts"
    if not (artifacts / LITE).exists():
        sys.exit(f"{a.model_uri} has no {LITE}: nothing to compare (line models and models before session 14)")
    engines = {}
    for name, lite in (("tflite", artifacts / LITE), ("savedmodel", None)):
        model = HandwritingModel()
        model._load(artifacts / SAVED_MODEL, artifacts / CHARSET, artifacts / CALIBRATION, lite)
        engines[name] = model
    pngs = [f.read_bytes() for f in sorted(a.images.rglob("*.png"))[:300]]
    canvases = np.stack([engines["savedmodel"].canvas(x) for x in pngs])
    logits = {name: m.logits(canvases).numpy() for name, m in engines.items()}
    readings = {name: [t for t, _ in m.recognize_canvases(canvases)] for name, m in engines.items()}
    differ = sum(x != y for x, y in zip(readings["tflite"], readings["savedmodel"]))
    print(
        f"{len(pngs)} images: largest logit difference {np.abs(logits['tflite'] - logits['savedmodel']).max():.2g}, "
        f"{differ} readings differ"
    )

    measures = {
        "network, one word": lambda m: (lambda: m.logits(canvases[:1]).numpy(), 1),
        "network, batch of 8 (per word)": lambda m: (lambda: m.logits(canvases[:8]).numpy(), 8),
        "read, one word (bytes to text)": lambda m: (lambda: m.read([pngs[0]]), 1),
    }
    results: dict = {(what, name): [] for what in measures for name in engines}
    for _ in range(a.rounds):
        for what, make in measures.items():
            for name, model in engines.items():
                fn, per = make(model)
                wall, cpu = timed(fn, a.calls)
                results[what, name].append((wall / per, cpu / per))
    print(f"\n{'ms per word: median wall / mean CPU over rounds':48s} {'tflite':>16s} {'savedmodel':>16s}")
    for what in measures:
        cells = []
        for name in engines:
            walls, cpus = zip(*results[what, name])
            cells.append(f"{statistics.median(walls):6.2f} / {statistics.median(cpus):5.2f}")
        print(f"{what:48s} {cells[0]:>16s} {cells[1]:>16s}")


if __name__ == "__main__":
    main()
