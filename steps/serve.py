"""REST API over the registered handwriting model: POST an image, get its transcription.

Run:
    mlflow run . -e serve --env-manager local -P model_uri="models:/HandwritingRecognitionModel/1"
    python -m steps.serve --model-uri "models:/HandwritingRecognitionModel@champion" --port 5000

Inputs: `model_uri` (models:/Name@alias, models:/Name/<version>, runs:/<run_id>/handwriting_recognition_model,
or any URI exported.load accepts), `host` (127.0.0.1: loopback only unless asked), `port`, `threads`
(waitress worker threads = requests handled at once) and `max_batch` (most images per model call).

Outputs: an HTTP server (waitress, a production WSGI server) with
    POST /predict   an image as a multipart file `image`, a form field `image` holding base64, a JSON body
                    {"image": "<base64>"} or a raw image body; several images as {"images": [...]} or several
                    multipart files `image`/`images`. Optional `beam_width` (query, form or JSON; 0 = greedy).
                    -> {"text": ..., "confidence": ...}, or for several images {"predictions": [...]} where a
                    bad image gets {"error": ...} and the others still succeed.
    GET /health     {"status": "ok"}
    GET /version    which model is served: name, version, alias, run id, model URI, model id, charset size
    GET /           an HTML page to upload an image and see its transcription (no external assets)
Errors are JSON {"error": ..., "status": ...} with a 4xx code naming the problem; no traceback reaches a
client (it is logged here). One log line per request (method, path, status, ms) goes to stderr.

    curl -X POST -F "image=@word.png" http://localhost:5000/predict
    curl -X POST -F "image=$(base64 -w 0 word.png)" http://localhost:5000/predict

The model does all preprocessing and decoding (steps/exported.py); this module only moves bytes in and
JSON out, and batches concurrent requests into one model call (MicroBatcher).
"""
from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import logging
import re
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

import click
import numpy as np

from steps import config, tracking

D = config.defaults("serve")
log = logging.getLogger("hwr.serve")

MAX_CONTENT_LENGTH = 10 * 1024 * 1024   # bytes per request; larger requests get 413 before any decoding
MAX_BEAM_WIDTH = 100                    # beam search cost grows with the width: bound what a client may ask
MAX_WAIT_MS = 5.0                       # longest a batch waits for more images from requests being prepared
RESULT_TIMEOUT_S = 120.0                # a request gives up (503) if its batch has not run by then
# JSON and form fields are text: images arrive base64 encoded, optionally as a data: URL from a browser.
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"[\r\n\t ]")


class ClientError(Exception):
    """A client error with its HTTP status, reported as JSON {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------- batching

@dataclasses.dataclass
class _Item:
    canvas: np.ndarray
    beam_width: int
    future: concurrent.futures.Future


class MicroBatcher:
    """Runs the canvases of concurrent requests through one `recognize(canvases, beam_width)` call.

    One background thread owns the model call. A request thread preprocesses its images itself
    (inside `preparing()`, so that work runs in parallel) and submits the canvases. The batcher
    takes the oldest pending item and adds pending items with the same beam width, waiting up to
    `max_wait_ms` for more only while some request is still preparing: a lone request never waits,
    and under load one call serves many requests (that is where the throughput comes from).
    Greedy and beam items never share a call, since the decoder differs.
    """

    def __init__(self, recognize: Callable[[np.ndarray, int], Sequence[tuple[str, float]]], max_batch: int,
                 max_wait_ms: float = MAX_WAIT_MS):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._recognize = recognize
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._preparing = 0
        self._closed = False
        self.batches = 0       # model calls and images so far (tests and debugging read them)
        self.images = 0
        self._thread = threading.Thread(target=self._run, name="hwr-batcher", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark a request as about to submit, so a forming batch waits a moment for it."""
        with self._cond:
            self._preparing += 1
        try:
            yield
        finally:
            with self._cond:
                self._preparing -= 1
                self._cond.notify_all()

    def submit(self, canvases: Sequence[np.ndarray], beam_width: int = 0) -> list[concurrent.futures.Future]:
        """Queue canvases; each future resolves to (text, confidence) or raises the model's exception."""
        items = [_Item(c, beam_width, concurrent.futures.Future()) for c in canvases]
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.extend(items)
            self._cond.notify_all()
        return [i.future for i in items]

    def close(self) -> None:
        """Finish what is pending, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _take(self) -> list[_Item]:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return []
            beam = self._pending[0].beam_width
            deadline = time.monotonic() + self.max_wait
            while self._preparing > 0:
                if sum(i.beam_width == beam for i in self._pending) >= self.max_batch:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [i for i in self._pending if i.beam_width == beam][: self.max_batch]
            taken = {id(i) for i in batch}
            self._pending = [i for i in self._pending if id(i) not in taken]
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                results = self._recognize(np.stack([i.canvas for i in batch]), batch[0].beam_width)
            except BaseException as e:  # the callers report it; the batcher must survive
                for i in batch:
                    i.future.set_exception(e)
                continue
            self.batches += 1
            self.images += len(batch)
            for i, result in zip(batch, results):
                i.future.set_result(result)


# --------------------------------------------------------------------------------------- request parsing

def decode_base64(text: str, what: str) -> bytes:
    """base64 text (standard or URL-safe alphabet, line breaks allowed, optional data: URL prefix) -> bytes."""
    if not isinstance(text, str):
        raise ClientError(400, f"{what} must be a base64 string, got {type(text).__name__}")
    # A urlencoded form turns '+' into ' '; base64 never contains spaces, so a space was a '+'.
    cleaned = _DATA_URL.sub("", text.strip()).replace(" ", "+")
    cleaned = _WHITESPACE.sub("", cleaned)
    if not cleaned:
        raise ClientError(400, f"{what} is empty")
    altchars = b"-_" if ("-" in cleaned or "_" in cleaned) else None
    try:
        return base64.b64decode(cleaned, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(400, f"{what} is not valid base64 (send the image file itself as a multipart "
                              f"file, or its base64 encoding)") from None


def parse_beam_width(value: Any) -> int:
    """A beam width from a query/form/JSON value: an int in [0, MAX_BEAM_WIDTH] (0 = greedy)."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ClientError(400, "beam_width must be an integer")
    try:
        width = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        width = None
    if width is None or not 0 <= width <= MAX_BEAM_WIDTH:
        raise ClientError(400, f"beam_width must be an integer from 0 (greedy) to {MAX_BEAM_WIDTH}, got {value!r}")
    return width


@dataclasses.dataclass
class Parsed:
    images: list[bytes | ClientError]   # a batch entry that could not be decoded keeps its error
    batch: bool           # answer {"predictions": [...]} rather than one {"text", "confidence"}
    beam_width: int


MISSING = ("no image in the request: send a multipart file field 'image' (curl -F \"image=@word.png\"), "
           "a form field 'image' holding base64, a JSON body {\"image\": \"<base64>\"}, or a batch "
           "{\"images\": [\"<base64>\", ...]}")


def _entry(text: Any, what: str) -> bytes | ClientError:
    """One base64 entry of a batch: its bytes, or its error (a bad entry must not fail the others)."""
    try:
        return decode_base64(text, what)
    except ClientError as e:
        return e


def parse_json(body: Any, beam: Any) -> Parsed:
    """A parsed JSON body {"image": b64} or {"images": [b64, ...]} (+ optional beam_width) -> Parsed."""
    if not isinstance(body, dict):
        raise ClientError(400, "the JSON body must be an object like {\"image\": \"<base64>\"}")
    if "beam_width" in body:
        beam = body["beam_width"]
    if "images" in body:
        if not isinstance(body["images"], list) or not body["images"]:
            raise ClientError(400, "'images' must be a non-empty list of base64 strings")
        images = [_entry(v, f"images[{i}]") for i, v in enumerate(body["images"])]
        return Parsed(images, True, parse_beam_width(beam))
    if "image" in body:
        return Parsed([decode_base64(body["image"], "image")], False, parse_beam_width(beam))
    raise ClientError(400, MISSING)


def parse_request(request) -> Parsed:
    """Extract the images and beam width of a /predict request, whatever form it came in."""
    from steps import imaging

    content_type = (request.mimetype or "").lower()
    beam = request.args.get("beam_width")
    if content_type in ("", "application/x-www-form-urlencoded"):
        # curl -d / --data-binary label any body urlencoded: recognise JSON and raw image files by content.
        data = request.get_data(cache=True)
        if data.lstrip()[:1] in (b"{", b"["):
            content_type = "application/json"
        elif imaging.sniff_format(data) is not None:
            content_type = "application/octet-stream"
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            body = json.loads(request.get_data(cache=True))
        except ValueError:  # also UnicodeDecodeError
            raise ClientError(400, "the body is not valid JSON") from None
        return parse_json(body, beam)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form, files = request.form, request.files
        if form.get("beam_width") not in (None, ""):
            beam = form.get("beam_width")
        images: list[bytes | ClientError] = []
        batch = False
        for field in ("image", "images"):
            uploads = files.getlist(field)
            texts = form.getlist(field)
            images += [f.read() for f in uploads]
            images += [_entry(t, field) for t in texts]
            batch = batch or (field == "images" and bool(uploads or texts))
        if not images:
            raise ClientError(400, MISSING)
        batch = batch or len(images) > 1
        if not batch and isinstance(images[0], ClientError):
            raise images[0]
        return Parsed(images, batch, parse_beam_width(beam))
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        # The body is the image file itself (curl --data-binary @word.png -H "Content-Type: image/png").
        return Parsed([request.get_data(cache=True)], False, parse_beam_width(beam))
    if not request.content_length:
        raise ClientError(400, MISSING)
    what = (f"Content-Type {content_type!r} is not supported" if content_type
            else "the body is not JSON, a form or an image")
    raise ClientError(415, f"{what}: send multipart/form-data, application/json or an image/* body")


def error_status(data: bytes, message: str) -> int:
    """HTTP status for an image the model refused (exported.HandwritingModel.canvas's ValueError)."""
    from steps import imaging

    if not data:
        return 400                                  # nothing was uploaded
    if imaging.sniff_format(data) is None:
        return 415                                  # not an image format we read
    if "exceeds the limit" in message:
        return 413                                  # pixel limit: a decompression bomb or a huge scan
    return 422                                      # a supported format, but undecodable


# ------------------------------------------------------------------------------------------ model info

def describe(model_uri: str, model) -> dict:
    """What /version reports about the served model; registry name/version/alias for models:/ URIs."""
    import mlflow
    from mlflow.tracking import MlflowClient

    info: dict[str, Any] = {"model_uri": model_uri, "name": None, "version": None, "alias": None,
                            "run_id": None, "model_id": None, "charset_size": len(model.charset.characters)}
    registered = re.match(r"^models:/([^/@]+)(?:@([^/]+)|/([^/]+))/?$", model_uri)
    if registered and not registered.group(1).startswith("m-"):
        name, alias, version = registered.groups()
        client = MlflowClient()
        try:
            if alias:
                mv = client.get_model_version_by_alias(name, alias)
            elif version == "latest":
                mv = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
            else:
                mv = client.get_model_version(name, version)
            info.update(name=mv.name, version=mv.version, alias=alias, run_id=mv.run_id,
                        model_id=getattr(mv, "model_id", None))
            if not info["model_id"] and (mv.source or "").startswith("models:/m-"):
                info["model_id"] = mv.source[len("models:/"):]
        except Exception as e:  # the model loaded, so this is cosmetic: report, don't fail
            log.warning("cannot resolve %s in the registry: %s", model_uri, e)
    try:
        meta = mlflow.models.get_model_info(model_uri)
        info["run_id"] = info["run_id"] or meta.run_id
        info["model_id"] = info["model_id"] or meta.model_uuid
    except Exception as e:
        log.warning("cannot read the model metadata of %s: %s", model_uri, e)
    return info


# ---------------------------------------------------------------------------------------------- the app

def create_app(model, model_info: dict, max_batch: int = D["max_batch"],
               max_content_length: int = MAX_CONTENT_LENGTH, max_pixels: int | None = None,
               max_wait_ms: float = MAX_WAIT_MS):
    """The Flask app serving `model` (an exported.HandwritingModel); starts its batcher thread.

    `model_info` is what GET /version returns. `max_pixels` defaults to the model's own limit.
    The batcher is reachable as app.extensions["hwr.batcher"] (closed by the caller at shutdown).
    """
    import flask
    from werkzeug.exceptions import HTTPException

    from steps import exported

    max_pixels = exported.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_content_length
    # Werkzeug's default limit for non-file form fields is 500 kB: a base64 form field carries a whole image.
    app.config["MAX_FORM_MEMORY_SIZE"] = max_content_length
    app.json.sort_keys = False
    batcher = MicroBatcher(model.recognize_canvases, max_batch, max_wait_ms)
    app.extensions["hwr.batcher"] = batcher

    def error(status: int, message: str, headers: dict | None = None):
        response = flask.jsonify({"error": message, "status": status})
        response.status_code = status
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    @app.errorhandler(ClientError)
    def client_error(e: ClientError):
        return error(e.status, e.message)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        messages = {404: f"no such path {flask.request.path!r}: use POST /predict, GET /health, GET /version or GET /",
                    405: f"{flask.request.method} is not allowed on {flask.request.path}",
                    413: f"request larger than the limit of {max_content_length} bytes"}
        headers = {"Allow": ", ".join(e.valid_methods)} if getattr(e, "valid_methods", None) else None
        return error(e.code or 500, messages.get(e.code, e.description or e.name), headers)

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        # The traceback stays in the server log; the client learns only that it was not its fault.
        log.error("error serving %s %s:\n%s", flask.request.method, flask.request.path, traceback.format_exc())
        return error(500, "internal server error (logged on the server)")

    @app.before_request
    def start_timer():
        flask.g.start = time.perf_counter()

    @app.after_request
    def log_request(response):
        ms = (time.perf_counter() - flask.g.get("start", time.perf_counter())) * 1000
        log.info("%s %s %d %.1fms", flask.request.method, flask.request.path, response.status_code, ms)
        return response

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/version")
    def version():
        return model_info

    @app.get("/")
    def index():
        return flask.Response(INDEX_HTML, mimetype="text/html")

    @app.post("/predict")
    def predict():
        with batcher.preparing():
            parsed = parse_request(flask.request)
            entries: list[dict] = [{} for _ in parsed.images]
            good, canvases = [], []
            for i, data in enumerate(parsed.images):
                if isinstance(data, ClientError):
                    entries[i] = {"error": data.message, "status": data.status}
                    continue
                try:
                    canvases.append(model.canvas(data, max_pixels))
                    good.append(i)
                except ValueError as e:
                    entries[i] = {"error": str(e), "status": error_status(data, str(e))}
            futures = batcher.submit(canvases, parsed.beam_width) if canvases else []
        try:
            for i, future in zip(good, futures):
                text, confidence = future.result(RESULT_TIMEOUT_S)
                entries[i] = {"text": text, "confidence": confidence}
        except concurrent.futures.TimeoutError:
            return error(503, "the model is overloaded: try again later")
        if parsed.batch:
            return {"predictions": entries}
        if "error" in entries[0]:
            return error(entries[0]["status"], entries[0]["error"])
        return entries[0]

    return app


def serve(app, host: str, port: int, threads: int) -> None:
    """Run `app` under waitress until interrupted."""
    import waitress

    # waitress buffers each body before the app sees it; let Flask (JSON 413) judge sizes up to twice
    # its limit and have waitress refuse anything beyond, so a huge upload is never read to the end.
    waitress.serve(app, host=host, port=port, threads=threads, ident="hwr-serve",
                   max_request_body_size=2 * app.config["MAX_CONTENT_LENGTH"])


def warm_up(model) -> None:
    """Run one tiny image through the model: the first TF call builds kernels and takes ~0.2 s."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (64, 24), 255)
    ImageDraw.Draw(image).text((4, 6), "warm", fill=0)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    model.recognize([buf.getvalue()])


@click.command()
@click.option("--model-uri", default=D["model_uri"], show_default=True,
              help="models:/Name@alias, models:/Name/<version> or runs:/<run_id>/handwriting_recognition_model")
@click.option("--host", default=D["host"], show_default=True, help="interface to bind (0.0.0.0 exposes it)")
@click.option("--port", type=click.IntRange(0, 65535), default=D["port"], show_default=True)
@click.option("--threads", type=click.IntRange(1), default=D["threads"], show_default=True,
              help="worker threads (requests handled concurrently)")
@click.option("--max-batch", type=click.IntRange(1), default=D["max_batch"], show_default=True,
              help="most images per model call")
def main(model_uri: str, host: str, port: int, threads: int, max_batch: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from steps.infer import load_model

    tracking.log(f"loading {model_uri}")
    model = load_model(model_uri)
    warm_up(model)
    info = describe(model_uri, model)
    tracking.log("serving " + json.dumps(info))
    app = create_app(model, info, max_batch)
    try:
        serve(app, host, port, threads)
    finally:
        app.extensions["hwr.batcher"].close()


INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Handwriting recognition</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}
 #preview{max-width:100%;max-height:10rem;border:1px solid #ccc;display:none;margin:1rem 0}
 #text{font-size:2rem;margin:.5rem 0} pre{background:#f4f4f4;padding:.5rem;overflow:auto}
 .error{color:#b00}
</style></head>
<body>
<h1>Handwriting recognition</h1>
<p>Upload an image of one handwritten word.</p>
<form id="form">
 <input type="file" name="image" id="image" accept="image/*" required>
 <label>beam width <input type="number" name="beam_width" value="0" min="0" max="100"></label>
 <button type="submit">Recognize</button>
</form>
<img id="preview" alt="uploaded image">
<div id="text"></div>
<pre id="json"></pre>
<script>
const form = document.getElementById("form"), file = document.getElementById("image");
const preview = document.getElementById("preview"), text = document.getElementById("text");
const out = document.getElementById("json");
file.addEventListener("change", () => {
  if (file.files.length) { preview.src = URL.createObjectURL(file.files[0]); preview.style.display = "block"; }
});
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  text.textContent = "…"; text.className = ""; out.textContent = "";
  try {
    const response = await fetch("/predict", {method: "POST", body: new FormData(form)});
    const result = await response.json();
    out.textContent = JSON.stringify(result, null, 2);
    if (result.error) { text.textContent = result.error; text.className = "error"; }
    else { text.textContent = result.text + "  (confidence " + result.confidence.toFixed(3) + ")"; }
  } catch (e) { text.textContent = String(e); text.className = "error"; }
});
</script>
</body></html>
"""


if __name__ == "__main__":
    main()
