"""Soak: `python -m steps.serve` under a long mixed load of good and hostile requests (bounded, loopback only;
not a test: it prints figures).

    python benchmarks/soak.py --tracking-uri sqlite:///benchmarks/work/mlflow.db --images <dir of word PNGs>
        [--model-uri models:/HandwritingRecognitionModel/1] [--requests 10000] [--concurrency 32] [--workers 1]

1. warm-up, then the server's warm RSS;
2. an all-good run (`--good-requests` word images at the same concurrency): its p95;
3. the soak: `--requests` requests, every `--hostile-every`-th one hostile (20% by default), cycling through
   pixel and frame bombs (GIF/APNG/TIFF), a real 6-megapixel image (the heavy lane: 200 or 503), a
   10,000-image JSON batch, 1,000-level nested JSON, a 1,001-part form, an 11 MB body, malformed HTTP and
   slow connections (request headers sent byte by byte for a few seconds, never finished).
Prints good-request errors, p50/p95 of good requests in both runs and their ratio, the hostile answers by
kind and status, and server RSS (warm, peak, end) sampled every 0.1 s. Targets (issue 11): 0 good errors,
p95 no worse than 2x the all-good run, RSS within 10% of warm.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import io
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import loadgen
import psutil
from harness import REPO, Monitor, log, tree_rss
from servers import free_port, stop, wait_http

MiB = 1024 * 1024


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, frames: int = 1) -> bytes:
    """A PNG (APNG if frames > 1) declaring width x height over a few bytes of pixels."""
    actl = png_chunk(b"acTL", struct.pack(">II", frames, 0)) if frames > 1 else b""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + actl + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def gif_bomb(width: int, height: int, frames: int) -> bytes:
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"
    return out + frame * frames + b"\x3b"


def tiff_bomb(width: int, height: int, pages: int) -> bytes:
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8)]
    entries += [(278, 4, height), (279, 4, width * height)]
    size, out = 2 + 12 * len(entries) + 4, b"II*\x00" + struct.pack("<I", 8)
    for page in range(pages):
        nxt = 8 + (page + 1) * size if page + 1 < pages else 0
        out += struct.pack("<H", len(entries))
        out += b"".join(struct.pack("<HHII", t, k, 1, v) for t, k, v in entries) + struct.pack("<I", nxt)
    return out


def real_png(side: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).line((0, side // 2, side, side // 2), fill=0, width=max(2, side // 50))
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def hostile_requests() -> dict[str, tuple[bytes, str] | bytes]:
    """kind -> (JSON/form body, content type) for /predict, or raw bytes for a socket (malformed HTTP)."""

    def as_json(data: bytes) -> tuple[bytes, str]:
        return json.dumps({"image": base64.b64encode(data).decode()}).encode(), "application/json"

    boundary = "b0undary"
    form = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(1001))
    tiny = base64.b64encode(png_header(8, 8)).decode()
    return {
        "pixel-bomb": as_json(png_header(30000, 30000)),
        "gif-60x6000x6000": as_json(gif_bomb(6000, 6000, 60)),
        "apng-60x6000x6000": as_json(png_header(6000, 6000, 60)),
        "tiff-60x6000x6000": as_json(tiff_bomb(6000, 6000, 60)),
        "real-6-megapixel": as_json(real_png(2450)),
        "json-10000-images": (json.dumps({"images": [tiny] * 10_000}).encode(), "application/json"),
        "json-nested-1000": (b'{"image": ' + b"[" * 1000 + b"]" * 1000 + b"}", "application/json"),
        "form-1001-parts": ((form + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"),
        "body-11-mb": (b"\x89PNG" + b"0" * 11 * MiB, "image/png"),
        "malformed-http": b"GARBAGE / HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
        "slow-connection": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n",
    }


def raw_socket(port: int, data: bytes, slow: bool) -> int:
    """Send raw bytes (byte by byte over ~3 s when slow, never finishing) -> the status answered (0: none)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            if slow:
                for b in data[:30]:
                    s.sendall(bytes([b]))
                    time.sleep(0.1)
                return 0  # hung up before finishing; the server must not have held anything for it
            s.sendall(data)
            answer = s.recv(65536)
            return int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0
    except OSError:
        return 0


def run(port: int, good: list[bytes], hostile: dict, total: int, concurrency: int, every: int) -> dict:
    """The closed loop: `concurrency` workers; request i is hostile when every and i % every == 0."""
    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    good_errors: collections.Counter = collections.Counter()
    answers: collections.Counter = collections.Counter()
    kinds = itertools.cycle(sorted(hostile))
    bodies = [json.dumps({"image": base64.b64encode(p).decode()}).encode() for p in good]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while (i := next(counter)) < total:
            if every and i % every == 0:
                with lock:
                    kind = next(kinds)
                request = hostile[kind]
                if isinstance(request, bytes):
                    status = raw_socket(port, request, slow=kind == "slow-connection")
                else:
                    try:
                        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                        c.request("POST", "/predict", request[0], {"Content-Type": request[1]})
                        r = c.getresponse()
                        r.read()
                        status = r.status
                        c.close()
                    except OSError as e:
                        status = type(e).__name__
                with lock:
                    answers[(kind, status)] += 1
                continue
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", bodies[i % len(bodies)], {"Content-Type": "application/json"})
                r = conn.getresponse()
                raw = r.read()
                error = None if r.status == 200 and b'"text"' in raw else f"HTTP {r.status}: {raw[:120]!r}"
            except (OSError, http.client.HTTPException) as e:
                error = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if error:
                    good_errors[error] += 1
                else:
                    latencies.append(ms)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    result = loadgen.LevelResult(concurrency, len(latencies), 0, seconds, latencies)
    return {
        "seconds": round(seconds, 1),
        "good_answered": len(latencies),
        "good_errors": sum(good_errors.values()),
        "good_error_kinds": dict(good_errors),
        "p50_ms": round(result.percentile(0.5), 1),
        "p95_ms": round(result.percentile(0.95), 1),
        "hostile": {f"{k} -> {s}": n for (k, s), n in sorted(answers.items(), key=str)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--model-uri", default="models:/HandwritingRecognitionModel/1")
    p.add_argument("--images", type=Path, required=True, help="a folder of word PNGs (the good requests)")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--good-requests", type=int, default=3_000, help="requests of the all-good run")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--hostile-every", type=int, default=5, help="every n-th request is hostile (5: 20%%)")
    p.add_argument("--workers", type=int, default=1, help="server processes (serve --workers); RSS is their sum")
    a = p.parse_args()
    good = [f.read_bytes() for f in sorted(a.images.rglob("*.png"))[:64]]
    if not good:
        raise SystemExit(f"no PNG files under {a.images}")
    port = free_port()
    command = [sys.executable, "-m", "steps.serve", "--model-uri", a.model_uri, "--port", str(port)]
    command += ["--workers", str(a.workers)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": a.tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "2"}
    logfile = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-serve-{port}.log"
    log(f"soak: starting {' '.join(command)} (log: {logfile})")
    with open(logfile, "w") as sink:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=sink, start_new_session=True)
    out: dict = {"load_1min_start": round(os.getloadavg()[0], 2)}
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        server = psutil.Process(proc.pid)
        hostile = hostile_requests()
        run(port, good, {}, 500, a.concurrency, 0)  # warm-up: kernels, connections, batch sizes
        out["rss_warm_mb"] = round(tree_rss(server) / MiB)
        with Monitor() as mon:
            mon.attach(server, "server")
            log(f"soak: all-good run, {a.good_requests} requests at concurrency {a.concurrency}")
            out["all_good"] = run(port, good, {}, a.good_requests, a.concurrency, 0)
            log(f"soak: {a.requests} requests, 1 in {a.hostile_every} hostile, at concurrency {a.concurrency}")
            out["soak"] = run(port, good, hostile, a.requests, a.concurrency, a.hostile_every)
            out["rss_peak_mb"] = round(mon.peak["server"] / MiB)
        time.sleep(2)
        out["rss_end_mb"] = round(tree_rss(server) / MiB)
        out["load_1min_end"] = round(os.getloadavg()[0], 2)
    finally:
        stop(proc)
    out["p95_ratio"] = round(out["soak"]["p95_ms"] / out["all_good"]["p95_ms"], 2)
    out["rss_end_vs_warm"] = round(out["rss_end_mb"] / out["rss_warm_mb"], 3)
    print(json.dumps(out, indent=1))
    traceback_lines = sum("Traceback" in line for line in logfile.read_text(errors="replace").splitlines())
    print(
        f"good requests: {out['soak']['good_errors']} errors of {out['soak']['good_answered'] + out['soak']['good_errors']}"
        f"; p95 {out['soak']['p95_ms']} ms vs {out['all_good']['p95_ms']} ms all-good ({out['p95_ratio']}x)"
        f"; server RSS warm {out['rss_warm_mb']} MB, peak {out['rss_peak_mb']} MB, end {out['rss_end_mb']} MB"
        f" ({out['rss_end_vs_warm']}x); tracebacks in the server log: {traceback_lines}"
    )


if __name__ == "__main__":
    main()
