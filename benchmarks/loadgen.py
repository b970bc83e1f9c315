"""A small closed-loop HTTP load generator: `concurrency` threads, each with one keep-alive connection,
sending POST requests until `total` have been sent; latency of every request and the wall time.

Standard library only (threads + http.client), so it adds nothing to the project's environment.
"""

from __future__ import annotations

import http.client
import itertools
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class Target:
    """An endpoint and how to turn an encoded image into its request body and check its answer."""

    name: str
    host: str
    port: int
    path: str
    body: Callable[[bytes], bytes]  # PNG bytes -> request body
    ok: Callable[[dict], bool]  # parsed JSON answer -> was it a transcription?
    content_type: str = "application/json"


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        k = (len(data) - 1) * q
        lo, hi = int(k), min(int(k) + 1, len(data) - 1)
        return data[lo] + (data[hi] - data[lo]) * (k - lo)

    def summary(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.throughput, 2),
            "p50_ms": round(self.percentile(0.50), 2),
            "p95_ms": round(self.percentile(0.95), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else None,
            "max_ms": round(max(self.latencies_ms), 2) if self.latencies_ms else None,
            "first_error": self.first_error,
        }


def one_request(target: Target, png: bytes, timeout: float = 60.0) -> tuple[int, dict | str]:
    """Send one request on a fresh connection -> (status, parsed JSON or raw text)."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("POST", target.path, target.body(png), {"Content-Type": target.content_type})
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")
    finally:
        conn.close()


def run_level(
    target: Target, images: Sequence[bytes], concurrency: int, total: int, timeout: float = 120.0
) -> LevelResult:
    """Closed loop: each thread sends its next request as soon as its previous answer arrived."""
    bodies = [target.body(png) for png in images]  # encoding is the client's cost, not the server's
    counter = itertools.count()
    lock = threading.Lock()
    result = LevelResult(concurrency, total, 0, 0.0)
    start_barrier = threading.Barrier(concurrency + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        conn.connect()
        start_barrier.wait()
        while True:
            i = next(counter)
            if i >= total:
                break
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            error = None
            try:
                conn.request("POST", target.path, body, {"Content-Type": target.content_type})
                response = conn.getresponse()
                raw = response.read()
                if response.status != 200:
                    error = f"HTTP {response.status}: {raw[:200]!r}"
                elif not target.ok(json.loads(raw)):
                    error = f"unexpected answer: {raw[:200]!r}"
            except Exception as e:  # a dropped connection: reconnect and go on, counting the error
                error = f"{type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if error is None:
                    result.latencies_ms.append(ms)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or error
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start_barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - t0
    return result
