"""`python -m steps.serve` with an observer on its micro-batcher, for profiling (steps/ is not modified).

    python benchmarks/serve_probe.py STATS_JSON --model-uri ... --port ...   (same options as steps.serve)

Wraps the batcher's model call to record the size and duration of every batch, and writes
{"batches", "images", "sizes": {size: count}, "model_seconds"} to STATS_JSON twice a second.
Experiments for suggested changes: HWR_PROBE_BATCHER_THREADS=N (N threads take batches) and
HWR_PROBE_ADAPTIVE=1 (the batch waits to be as large as recent ones, see _adaptive_take).

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


def _adaptive_take(self):
    """Experiment (HWR_PROBE_ADAPTIVE=1): MicroBatcher._take that, besides waiting for requests still
    preparing, waits (up to max_wait) until the batch is as large as the largest of the last 8 batches:
    under steady concurrent load the clients of the previous batch are about to send again. A lone
    client still never waits (its batches have size 1)."""
    recent = self.__dict__.setdefault("_recent_sizes", collections.deque([1], maxlen=8))
    with self._cond:
        while not self._pending and not self._closed:
            self._cond.wait()
        if not self._pending:
            return []
        beam = self._pending[0].beam_width
        deadline = time.monotonic() + self.max_wait
        want = min(max(recent), self.max_batch)
        while True:
            n = sum(i.beam_width == beam for i in self._pending)
            if n >= self.max_batch or (self._preparing == 0 and n >= want):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        batch = [i for i in self._pending if i.beam_width == beam][: self.max_batch]
        taken = {id(i) for i in batch}
        self._pending = [i for i in self._pending if id(i) not in taken]
        recent.append(len(batch))
        return batch


def _dump(path: Path) -> None:
    while True:
        time.sleep(0.5)
        path.write_text(json.dumps({**STATS, "sizes": dict(sorted(STATS["sizes"].items()))}))


if __name__ == "__main__":
    stats_path = Path(sys.argv.pop(1))
    serve.create_app = _observe(serve.create_app)
    if os.environ.get("HWR_PROBE_ADAPTIVE") == "1":
        serve.MicroBatcher._take = _adaptive_take
    threading.Thread(target=_dump, args=(stats_path,), daemon=True).start()
    serve.main()
