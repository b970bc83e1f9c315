"""Where does a /predict request's time go? Component timings of the serving path, in one process.

    python benchmarks/profiles/profile_serve.py [--work-dir benchmarks/work] [--requests 300]

Needs the model that benchmarks/run.py registered (models:/HandwritingRecognitionModel/1 in
benchmarks/work/mlflow.db) and the PNG words it extracted. Prints, per image:
- the request-thread work of steps.serving.app: JSON + base64 decode (steps.serving.parsing),
  HandwritingModel.canvas (imaging.check: format sniff and PIL size check, then the SavedModel's
  preprocess endpoint: decode, levels, resize, pad);
- the model call of the batcher thread (recognize_canvases) at batch sizes 1..32, and the call the server
  makes now (HandwritingModel.read: encoded bytes decoded inside the batched call);
- the same images preprocessed in one call per batch (the SavedModel's `serve` endpoint: bytes [B] -> text);
- MLflow's pyfunc predict on a one-row DataFrame (what `mlflow models serve` runs per request);
- the whole Flask app (steps.serving.app.create_app) through its test client (no network, no waitress),
  and a cProfile of it (top functions).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness import latest_data_root, word_pngs  # noqa: E402

from steps.workflow import config  # noqa: E402


def per_call(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=BENCH / "work", help="holds mlflow.db with the registered model")
    p.add_argument("--data-root", type=Path, help="default: the latest benchmark data (work/data-*)")
    p.add_argument("--requests", type=int, default=300)
    a = p.parse_args()
    work = a.work_dir.resolve()
    if a.data_root is None:
        a.data_root = latest_data_root(work)
    data_root = a.data_root.resolve()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    import mlflow
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from steps.inference import imaging
    from steps.serving.app import create_app
    from steps.serving.limits import Limits
    from steps.serving.parsing import decode_base64

    pngs = word_pngs(data_root, "test", 64)
    bodies = [json.dumps({"image": base64.b64encode(x).decode()}) for x in pngs]
    uri = f"models:/{config.REGISTERED_MODEL}/1"  # what benchmarks/run.py registers
    t0 = time.perf_counter()
    pyfunc = mlflow.pyfunc.load_model(uri)
    model = pyfunc.unwrap_python_model()
    print(
        f"model load: {time.perf_counter() - t0:.1f}s; {len(pngs)} test images, mean {np.mean([len(x) for x in pngs]):.0f} bytes"
    )
    n = a.requests
    k = iter(range(10**9))

    def nxt():
        return next(k) % len(pngs)

    rows = []
    rows.append(
        ("json.loads + base64 decode", per_call(lambda: decode_base64(json.loads(bodies[nxt()])["image"], "image"), n))
    )
    rows.append(("imaging.check (format sniff + PIL size check)", per_call(lambda: imaging.check(pngs[nxt()]), n)))
    rows.append(
        (
            "SavedModel preprocess endpoint (1 image)",
            per_call(lambda: model.module.preprocess(tf.constant(pngs[nxt()])).numpy(), n),
        )
    )
    rows.append(("HandwritingModel.canvas (all of the above but JSON)", per_call(lambda: model.canvas(pngs[nxt()]), n)))
    canvases = np.stack([model.canvas(x) for x in pngs])
    for b in (1, 2, 4, 8, 16, 32):
        ms = per_call(lambda b=b: model.recognize_canvases(canvases[:b]), max(10, n // b))
        rows.append((f"recognize_canvases batch {b:2d}: per call / per image", ms, ms / b))
    for b in (1, 8, 32):
        ms = per_call(lambda b=b: model.read(pngs[:b]), max(10, n // b))
        rows.append((f"HandwritingModel.read (bytes decoded in the batch) {b:2d}: per call / per image", ms, ms / b))
    for b in (1, 8, 32):
        batch = tf.constant(pngs[:b])
        ms = per_call(lambda batch=batch: model.module.serve(batch), max(10, n // b))
        rows.append((f"SavedModel serve (bytes->text) batch {b:2d}: per call / per image", ms, ms / b))
    df = pd.DataFrame({"image": [pngs[0]]})
    rows.append(
        ("pyfunc predict, 1-row DataFrame (mlflow serve's model call)", per_call(lambda: pyfunc.predict(df), n // 2))
    )

    app = create_app(model, {"model_uri": uri}, int(config.defaults("serve")["max_batch"]), Limits())
    client = app.test_client()
    import logging

    logging.getLogger("hwr.serve").setLevel(logging.WARNING)

    def request():
        r = client.post("/predict", data=bodies[nxt()], content_type="application/json")
        assert r.status_code == 200, r.data

    rows.append(("Flask app via test client, 1 request (no network, no waitress)", per_call(request, n)))
    print(f"\n{'component':70s} {'ms':>8s} {'ms/image':>9s}")
    for r in rows:
        print(f"{r[0]:70s} {r[1]:8.2f}" + (f" {r[2]:9.2f}" if len(r) > 2 else ""))

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        request()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    print(
        f"\ncProfile of {n} requests through the Flask test client (request thread only; the batcher's model "
        f"call runs in its own thread and shows up as waiting):"
    )
    print("\n".join(out.getvalue().splitlines()[:45]))
    app.extensions["hwr.batcher"].close()


if __name__ == "__main__":
    main()
