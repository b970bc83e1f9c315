"""`python -m steps.serve` with an observer on its micro-batcher, for profiling (steps/ is not modified).

    python benchmarks/serve_probe.py STATS_JSON --model-uri ... --port ...   (same options as steps.serve)

Wraps the batcher's model call to record the size and duration of every batch, and writes
{"batches", "images", "sizes": {size: count}, "model_seconds"} to STATS_JSON twice a second.
With HWR_PROBE_BATCHER_THREADS=N, N threads take batches (an experiment for a suggested change).

    python benchmarks/probe_serve_load.py      # runs it at concurrency 1, 8, 32 with 1 and 2 batcher threads
"""
from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steps import serve  # noqa: E402

STATS = {"batches": 0, "images": 0, "sizes": collections.Counter(), "model_seconds": 0.0}


def _observe(create_app):
    def wrapped(*args, **kwargs):
        app = create_app(*args, **kwargs)
        batcher = app.extensions["hwr.batcher"]
        recognize = batcher._recognize

        def timed(canvases, beam_width):
            t0 = time.perf_counter()
            try:
                return recognize(canvases, beam_width)
            finally:
                STATS["model_seconds"] += time.perf_counter() - t0
                STATS["batches"] += 1
                STATS["images"] += len(canvases)
                STATS["sizes"][len(canvases)] += 1

        batcher._recognize = timed
        # Experiment: more than one thread taking batches (HWR_PROBE_BATCHER_THREADS=2), so one batch's
        # model call overlaps the next; MicroBatcher._take is already safe for that (one condition variable).
        for i in range(int(os.environ.get("HWR_PROBE_BATCHER_THREADS", "1")) - 1):
            threading.Thread(target=batcher._run, name=f"hwr-batcher-{i + 2}", daemon=True).start()
        return app
    return wrapped


def _dump(path: Path) -> None:
    while True:
        time.sleep(0.5)
        path.write_text(json.dumps({**STATS, "sizes": dict(sorted(STATS["sizes"].items()))}))


if __name__ == "__main__":
    stats_path = Path(sys.argv.pop(1))
    serve.create_app = _observe(serve.create_app)
    threading.Thread(target=_dump, args=(stats_path,), daemon=True).start()
    serve.main()
