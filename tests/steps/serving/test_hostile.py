"""The server against hostile and unlucky clients (issue 11): a real waitress server on 127.0.0.1 in this
process over the tiny trained model, called with `requests` and raw sockets. Each case is an input and the
status and message a client must get; the server must stay healthy and answer a good request after each."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest
import requests

from steps.serving import memory
from steps.serving.app import create_app
from steps.serving.limits import Limits
from steps.serving.server import make_server
from tests import model_fixture
from tests.servers import free_port, wait_healthy

pytestmark = pytest.mark.slow  # a real server over a real model

THREADS = 4
# The defaults, except the connection settings, shrunk so that a test can exhaust them in a second.
LIMITS = dataclasses.replace(Limits(), connections_per_thread=3, receive_seconds=2.0)
CONNECTIONS = LIMITS.connection_limit(THREADS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> model_fixture.TinyModel:
    return model_fixture.tiny_model(tmp_path_factory)


class LogLines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.extend(self.format(record).split("\n"))


@pytest.fixture(scope="module")
def served(tiny):
    """(base URL, host, port, log lines, batcher) of a server running in a thread of this process."""
    import mlflow

    from steps.inference import loading

    mlflow.set_tracking_uri(tiny.tracking_uri)
    try:
        model = loading.load(tiny.champion_uri)
    finally:
        mlflow.set_tracking_uri(None)
    memory.fix_mmap_threshold()
    app = create_app(model, {"name": "hostile"}, 32, LIMITS)
    logs = LogLines()
    logger = logging.getLogger("hwr.serve")
    logger.addHandler(logs)
    logger.setLevel(logging.INFO)
    server = make_server(app, "127.0.0.1", 0, THREADS, LIMITS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    host, port = "127.0.0.1", server.effective_port
    try:
        yield f"http://{host}:{port}", host, port, logs.lines, app.extensions["hwr.batcher"]
    finally:
        from waitress import wasyncore

        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(10)
        server.task_dispatcher.shutdown()
        app.extensions["hwr.batcher"].close()
        logger.removeHandler(logs)
    assert not any("Traceback" in line for line in logs.lines)


@pytest.fixture(scope="module")
def png(tiny) -> bytes:
    return tiny.images[0].read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------ hostile images, made from headers alone


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, frames: int = 1) -> bytes:
    """A PNG (an APNG if frames > 1) that declares width x height but holds a few bytes of pixels."""
    actl = png_chunk(b"acTL", struct.pack(">II", frames, 0)) if frames > 1 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + actl
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def gif_bomb(width: int, height: int, frames: int) -> bytes:
    """A GIF of `frames` frames of width x height, each a few bytes of LZW data (the 1.66 MB bomb, small)."""
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    for _ in range(frames):
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"
    return out + b"\x3b"


def tiff_bomb(width: int, height: int, pages: int) -> bytes:
    """A little-endian TIFF of `pages` uncompressed 8-bit pages of width x height (pixel data absent)."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8)]
    entries += [(278, 4, height), (279, 4, width * height)]
    size = 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<I", 8)
    for page in range(pages):
        nxt = 8 + (page + 1) * size if page + 1 < pages else 0
        out += struct.pack("<H", len(entries))
        out += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
        out += struct.pack("<I", nxt)
    return out


def animated_webp() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (64, 32), (i * 60, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:])
    return buf.getvalue()


# ----------------------------------------------------------------------------------- the table of requests

MiB = 1024 * 1024


def multipart(parts: int) -> tuple[bytes, str]:
    boundary = "b0undary"
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(parts))
    return (body + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def nested(depth: int) -> bytes:
    return b'{"image": ' + b"[" * depth + b"]" * depth + b"}"


PARTS = multipart(1001)
# (id, request kwargs for requests.post(/predict, ...), status, words the error message must hold)
HOSTILE = [
    (
        "gif-60-frames",
        dict(files={"image": ("a.gif", gif_bomb(6000, 6000, 60))}),
        413,
        ["gif of 60 frames", "6000x6000"],
    ),
    ("apng-60-frames", dict(files={"image": ("a.png", png_header(6000, 6000, 60))}), 413, ["png of 60 frames"]),
    ("tiff-60-pages", dict(files={"image": ("a.tif", tiff_bomb(6000, 6000, 60))}), 413, ["tiff of 60 pages"]),
    ("webp-animated", dict(files={"image": ("a.webp", animated_webp())}), 415, ["not an image in a supported"]),
    ("pixel-bomb", dict(files={"image": ("a.png", png_header(30000, 30000))}), 413, ["30000x30000", "limit"]),
    (
        "request-pixels",
        dict(json={"images": [b64(png_header(5000, 5000))] * 2}),
        413,
        ["50000000 pixels in all", "per request"],
    ),
    (
        "json-10000-images",
        dict(json={"images": [b64(png_header(8, 8))] * 10_000}),
        413,
        ["10000 images", f"limit of {LIMITS.max_images} images"],
    ),
    (
        "multipart-65-files",
        dict(files=[("image", (f"{i}.png", png_header(8, 8))) for i in range(65)]),
        413,
        ["65 images"],
    ),
    ("multipart-1001-parts", dict(data=PARTS[0], headers={"Content-Type": PARTS[1]}), 413, ["more than", "parts"]),
    ("json-nested-1000", dict(data=nested(1000), headers={"Content-Type": "application/json"}), 400, ["nested"]),
    ("json-nested-100", dict(data=nested(100), headers={"Content-Type": "application/json"}), 400, ["base64"]),
    ("body-11-mb", dict(data=b"\x89PNG" + b"0" * 11 * MiB, headers={"Content-Type": "image/png"}), 413, ["larger"]),
]


def assert_json_error(status: int, content_type: str, body: bytes, expected: int, words: list[str]) -> None:
    assert status == expected, (status, body[:300])
    assert content_type.startswith("application/json"), content_type
    answer = json.loads(body)
    assert answer["status"] == expected
    for word in words:
        assert word in answer["error"].lower(), answer
    assert b"Traceback" not in body and b'File "' not in body


@pytest.mark.parametrize("kwargs, status, words", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_request(served, png, kwargs, status, words):
    url, batcher = served[0], served[4]
    images = batcher.images
    r = requests.post(url + "/predict", timeout=120, **kwargs)
    assert_json_error(r.status_code, r.headers.get("Content-Type", ""), r.content, status, words)
    assert batcher.images == images, "the request was refused before any of it reached the model"
    good = requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=120)
    assert good.status_code == 200 and "text" in good.json()


# ------------------------------------------------------------------------- malformed HTTP, on a raw socket


def raw_exchange(host: str, port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes, read until the server closes (or the timeout) -> everything it answered."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:  # the server answered and closed before taking all of it
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, socket.timeout):
            pass
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def over_waitress_limit() -> bytes:
    size = 2 * LIMITS.max_body_bytes + 1
    return f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {size}\r\n\r\n".encode()


RAW = [
    ("garbage", b"GARBAGE\r\n\r\n", 400, ["malformed http"]),
    ("bad-content-length", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, ["malformed"]),
    ("bad-chunking", b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, ["malformed"]),
    ("huge-header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 300_000 + b"\r\n\r\n", 431, ["headers larger"]),
    ("body-over-20-mb", over_waitress_limit(), 413, [f"limit of {LIMITS.max_body_bytes} bytes"]),
]  # fmt: skip


@pytest.mark.parametrize("data, status, words", [c[1:] for c in RAW], ids=[c[0] for c in RAW])
def test_malformed_http_gets_json(served, png, data, status, words):
    url, host, port, *_ = served
    code, headers, body = split_response(raw_exchange(host, port, data))
    assert_json_error(code, headers.get("content-type", ""), body, status, words)
    assert requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=60).status_code == 200


def test_a_newline_in_the_path_cannot_forge_a_log_line(served):
    url, host, port, lines, _ = served
    r = requests.get(url + "/x%0A2026-12-01 INFO hwr.serve GET /admin 200 1.0ms%0D%0Aforged", timeout=10)
    assert r.status_code == 404 and r.json()["status"] == 404
    time.sleep(0.2)
    assert not any(line.startswith(("2026-12-01", "forged")) for line in lines), lines[-5:]
    assert any("/x\\n2026-12-01 INFO" in line and "\\r\\nforged 404" in line for line in lines), lines[-5:]


def test_every_request_gets_one_log_line_with_its_status_and_time(served, png):
    """Answers of the app's own (200), of its error handlers (404, 405) and for a non-ASCII path, which is
    logged as the characters the client sent, escaped."""
    url, host, port, lines, _ = served
    before = len(lines)
    assert requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=60).status_code == 200
    assert requests.get(url + "/predict", timeout=10).status_code == 405
    assert requests.get(url + "/w%C3%B6rd", timeout=10).status_code == 404
    time.sleep(0.2)
    logged = lines[before:]
    for method, path, status in (("POST", "/predict", 200), ("GET", "/predict", 405), ("GET", "/w\\xf6rd", 404)):
        line = re.compile(rf"{method} {re.escape(path)} {status} \d+\.\dms")
        assert len([x for x in logged if line.fullmatch(x)]) == 1, logged


# ------------------------------------------------------------------------------------- fair admission


def test_slow_connections_are_refused_or_shed_and_good_requests_get_through(served, png):
    """More slow clients than the connection limit, each sending a request byte by byte: a new client gets
    503 with Retry-After at once (not a hang); after `receive_seconds` the slow ones get 408 and are closed,
    and good requests are answered again."""
    url, host, port, *_ = served
    slow = []
    for _ in range(CONNECTIONS + 4):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        slow.append(s)
    time.sleep(0.5)
    t0 = time.perf_counter()
    try:
        r = requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=10)
        answered = (r.status_code, r.headers.get("Retry-After"), r.json())
    except requests.ConnectionError:  # the 503 was written, but the reset of the close got there first
        answered = None
    assert time.perf_counter() - t0 < 5, "a client beyond the limit must be answered, not left waiting"
    if answered is not None and answered[0] != 200:
        status, retry_after, body = answered
        assert status == 503 and retry_after == str(LIMITS.retry_after_seconds), answered
        assert "too many connections" in body["error"]
    deadline = time.monotonic() + LIMITS.receive_seconds + 5
    good = None
    while time.monotonic() < deadline:
        try:
            good = requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=10)
            if good.status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    assert good is not None and good.status_code == 200, "good requests must get through once the slow are shed"
    timed_out = 0
    for s in slow:
        code, _, body = split_response(raw_exchange_existing(s))
        timed_out += code == 408 and b"did not arrive within" in body
    assert timed_out >= CONNECTIONS - 2, f"{timed_out} of the slow connections got 408"


def raw_exchange_existing(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return b"".join(chunks) or b"HTTP/1.1 000 closed\r\n\r\n"


def big_png(side: int) -> bytes:
    """A real side x side grey-level PNG with a stroke of ink (compresses to a few kB, decodes to side^2)."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).line((0, side // 2, side, side // 2), fill=0, width=side // 50)
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_large_decode_runs_alone_and_leaves_the_server_no_larger(tiny, png, tmp_path):
    """`python -m steps.serve` as a user starts it: a 36-megapixel image (within the limit) is decoded in the
    heavy lane; a second one at the same time gets 503 with Retry-After, a word image is answered meanwhile,
    and afterwards the server process is no larger than before the large decodes."""
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "steps.serve", "--model-uri", tiny.champion_uri, "--port", str(port)],
            cwd=model_fixture.REPO,
            env=model_fixture.env(tiny),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        bomb = big_png(6000)
        for _ in range(5):
            assert requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=60).status_code == 200
        warm = rss(proc.pid)
        results: dict = {}

        def heavy(key: str) -> None:
            results[key] = requests.post(url + "/predict", files={"image": ("big.png", bomb)}, timeout=120)
            results[key + " done"] = time.monotonic()

        for _ in range(2):
            results.clear()
            both = [threading.Thread(target=heavy, args=(key,)) for key in ("a", "b")]
            for t in both:
                t.start()
            # Once one large image is refused the other is being decoded: word images sent from then on must be
            # answered while it decodes, not after it (on a fast machine the decode takes a fraction of a second,
            # so the words are sent in a loop rather than once after a fixed sleep).
            deadline = time.monotonic() + 60
            while not any(k in results and results[k].status_code == 503 for k in "ab"):
                assert time.monotonic() < deadline and not all(k + " done" in results for k in "ab"), (
                    "neither large image was refused"
                )
                time.sleep(0.005)
            words = []
            while not any(k + " done" in results and results[k].status_code == 200 for k in "ab"):
                words.append(
                    (requests.post(url + "/predict", files={"image": ("w.png", png)}, timeout=60), time.monotonic())
                )
            for t in both:
                t.join()
            (decoded,) = [k for k in "ab" if results[k].status_code == 200]
            (refused,) = [results[k] for k in "ab" if k != decoded]
            assert refused.status_code == 503 and refused.headers["Retry-After"] == str(Limits().retry_after_seconds)
            assert "decoding another large image" in refused.json()["error"]
            assert all(word.status_code == 200 for word, _ in words)
            answered_meanwhile = [done for _, done in words if done < results[decoded + " done"]]
            assert answered_meanwhile, "the word images waited for the decode"
        grown = rss(proc.pid) - warm
        assert grown < 0.1 * warm, f"the server stayed {grown / 2**20:.0f} MB larger after two large decodes"
    finally:
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
