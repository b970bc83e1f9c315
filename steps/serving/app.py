"""The Flask app: POST /predict, GET /health, GET /version and the upload page at GET /.

Errors are JSON {"error": ..., "status": ...} with a 4xx/5xx code naming the problem; no traceback reaches a
client (it is logged). The model does all preprocessing and decoding; the app checks each image's header
against the work budget (steps.serving.limits), moves bytes in and JSON out, and lets the MicroBatcher
merge concurrent requests into one model call that also decodes their images. A request of many pixels is
decoded in its own thread under a small semaphore instead, so it never holds up the shared batch.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
import traceback
from importlib import resources
from typing import Any

from steps.inference import imaging
from steps.inference.recognizer import HandwritingModel
from steps.serving import memory
from steps.serving.batcher import MAX_WAIT_MS, MicroBatcher, QueueFull
from steps.serving.limits import Limits
from steps.serving.parsing import ClientError, parse_request

log = logging.getLogger("hwr.serve")

PAGE = resources.files("steps.serving").joinpath("page.html").read_text(encoding="utf-8")
FAVICON = resources.files("steps.serving").joinpath("favicon.svg").read_bytes()
# What a client is told for each way an image can be unusable.
IMAGE_ERROR_STATUS = {
    imaging.EmptyImage: 400,  # nothing was uploaded
    imaging.UnsupportedFormat: 415,  # not an image format we read
    imaging.ImageTooLarge: 413,  # pixel limit: a decompression bomb or a huge scan
    imaging.CorruptImage: 422,  # a supported format, but undecodable
    imaging.BlankImage: 422,  # decodable, but nothing to read
}


def describe(model_uri: str, model) -> dict:
    """What /version reports about the served model; registry name/version/alias for models:/ URIs."""
    import mlflow
    from mlflow.tracking import MlflowClient

    info: dict[str, Any] = {
        "model_uri": model_uri,
        "name": None,
        "version": None,
        "alias": None,
        "run_id": None,
        "model_id": None,
        "charset_size": len(model.charset.characters),
        "engine": model.engine,  # tflite | savedmodel: what computes the network (recognizer.HandwritingModel)
        "int8_weights": bool(model.lite and model.lite.int8_weights),  # the Lite network's weights (train's default)
        "level": None,  # words | lines: what the model reads (its logged metadata; models before lines: words)
        "canvas": None,  # [height, width] every image is resized into
    }
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
            info.update(
                name=mv.name, version=mv.version, alias=alias, run_id=mv.run_id, model_id=getattr(mv, "model_id", None)
            )
            if not info["model_id"] and (mv.source or "").startswith("models:/m-"):
                info["model_id"] = mv.source[len("models:/") :]
        except Exception as e:  # the model loaded, so this is cosmetic: report, don't fail
            log.warning("cannot resolve %s in the registry: %s", model_uri, e)
    try:
        meta = mlflow.models.get_model_info(model_uri)
        info["run_id"] = info["run_id"] or meta.run_id
        info["model_id"] = info["model_id"] or meta.model_uuid
        about = meta.metadata or {}
        info["level"] = about.get("level", "words")
        info["canvas"] = [about["image_height"], about["image_width"]] if "image_width" in about else None
    except Exception as e:
        log.warning("cannot read the model metadata of %s: %s", model_uri, e)
    return info


def printable(text: str) -> str:
    """Client-supplied text for a log line: control characters (a %0A in a path) and non-ASCII escaped,
    so that no request can write a line of its own into the log."""
    return text.encode("unicode_escape").decode("ascii")


START = "hwr.start"  # the WSGI environ key holding when the request reached the app (time.perf_counter())


def access_logged(wsgi_app):
    """`wsgi_app` logging one line per request: method, path, status and milliseconds in the app.

    A WSGI middleware rather than Flask hooks: it reads the environ directly, which costs a server under
    load less of the interpreter lock than two hooks going through Flask's request proxies.
    """

    def logged(environ, start_response):
        environ[START] = start = time.perf_counter()
        status = "500"

        def respond(head, headers, exc_info=None):
            nonlocal status
            status = head[:3]
            return start_response(head, headers, exc_info)

        try:
            return wsgi_app(environ, respond)
        finally:
            # PATH_INFO holds the path's bytes as latin-1 (PEP 3333); read them as the UTF-8 they are
            path = environ.get("PATH_INFO", "").encode("latin-1", "replace").decode("utf-8", "replace")
            ms = (time.perf_counter() - start) * 1000
            log.info("%s %s %s %.1fms", printable(environ.get("REQUEST_METHOD", "")), printable(path), status, ms)

    return logged


# Model calls made at once. One: its calls release the interpreter lock while they compute, and a second
# calling thread, though it could use another core, mostly adds hand-offs of the lock in a process whose
# requests already contend for it. Served at concurrency 8 on 2 cores (README, "Performance", session 18),
# one thread answered as many images/s (per round 0.93-1.15x against two, in two A/B runs) at 10-20% less
# CPU per image. More cores for the model are more processes: serve --workers.
MODEL_THREADS = 1


def create_app(
    model: HandwritingModel,
    model_info: dict,
    max_batch: int,
    limits: Limits,
    lexicon=None,
    max_wait_ms: float = MAX_WAIT_MS,
):
    """The Flask app serving `model` (a recognizer.HandwritingModel) within `limits`; starts its batcher thread.

    `model_info` is what GET /version returns. The batcher is reachable as app.extensions["hwr.batcher"]
    (closed by the caller at shutdown).
    """
    import flask
    from werkzeug.exceptions import HTTPException

    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes
    # Werkzeug's default limit for non-file form fields is 500 kB: a base64 form field carries a whole image.
    app.config["MAX_FORM_MEMORY_SIZE"] = limits.max_body_bytes
    app.config["MAX_FORM_PARTS"] = limits.max_images + 8  # room for beam_width and stray fields
    app.json.sort_keys = False
    batcher = MicroBatcher(
        lambda payloads, beam: model.read(payloads, beam, lexicon),
        max_batch,
        max_wait_ms,
        limits.max_queued_images,
        MODEL_THREADS,
    )
    app.extensions["hwr.batcher"] = batcher
    heavy_lanes = threading.BoundedSemaphore(limits.heavy_lanes)
    busy = {"Retry-After": str(limits.retry_after_seconds)}

    def error(status: int, message: str, headers: dict | None = None):
        response = flask.jsonify({"error": message, "status": status})
        response.status_code = status
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    @app.errorhandler(ClientError)
    def client_error(e: ClientError):
        return error(e.status, e.message, busy if e.status == 503 else None)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if e.code == 413 and (flask.request.content_length or 0) <= limits.max_body_bytes:
            # werkzeug's form parser says 413 for too many parts or a too large field, not only for size
            too_much = f"a form of more than {app.config['MAX_FORM_PARTS']} parts (or a field over the size limit)"
        else:
            too_much = f"request larger than the limit of {limits.max_body_bytes} bytes"
        messages = {
            404: f"no such path {flask.request.path!r}: use POST /predict, GET /health, GET /version or GET /",
            405: f"{flask.request.method} is not allowed on {flask.request.path}",
            413: too_much,
        }
        headers = {"Allow": ", ".join(e.valid_methods)} if getattr(e, "valid_methods", None) else None
        return error(e.code or 500, messages.get(e.code, e.description or e.name), headers)

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        # The traceback stays in the server log; the client learns only that it was not its fault.
        log.error(
            "error serving %s %s:\n%s",
            printable(flask.request.method),
            printable(flask.request.path),
            traceback.format_exc(),
        )
        return error(500, "internal server error (logged on the server)")

    app.wsgi_app = access_logged(app.wsgi_app)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/version")
    def version():
        return model_info

    @app.get("/")
    def index():
        # The page checks sizes before uploading, against this server's limit.
        return flask.Response(PAGE.replace("__MAX_BYTES__", str(limits.max_body_bytes)), mimetype="text/html")

    @app.get("/favicon.svg")
    @app.get("/favicon.ico")
    def favicon():
        return flask.Response(FAVICON, mimetype="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    def inspect(data) -> imaging.ImageInfo | ClientError:
        if isinstance(data, ClientError):
            return data
        try:
            return imaging.inspect(data, limits.max_image_pixels)
        except imaging.ImageError as e:
            return ClientError(IMAGE_ERROR_STATUS[type(e)], str(e))

    def decode_heavy(images: list[bytes]) -> list:
        """A request of many pixels is decoded here, one such request at a time, and its memory given back."""
        if not heavy_lanes.acquire(blocking=False):
            raise ClientError(
                503,
                f"the server is decoding another large image (over {limits.heavy_pixels} pixels in a request): "
                f"retry in {limits.retry_after_seconds} s",
            )
        try:
            return model.canvases_of_checked(images)
        finally:
            heavy_lanes.release()
            memory.release()

    @app.post("/predict")
    def predict():
        with batcher.preparing():
            parsed = parse_request(flask.request._get_current_object(), limits.max_images)  # (no proxy per use)
            infos = [inspect(data) for data in parsed.images]
            good = [i for i, info in enumerate(infos) if isinstance(info, imaging.ImageInfo)]
            pixels = sum(infos[i].pixels for i in good)
            if pixels > limits.max_request_pixels:
                raise ClientError(
                    413,
                    f"{len(good)} images of {pixels} pixels in all exceed the limit of "
                    f"{limits.max_request_pixels} pixels per request",
                )
            payloads = [parsed.images[i] for i in good]
            if pixels > limits.heavy_pixels:
                payloads = decode_heavy(payloads)
            try:
                futures = batcher.submit(payloads, parsed.beam_width) if payloads else []
            except QueueFull as e:
                return error(503, f"the server is busy ({e}): retry in {limits.retry_after_seconds} s", busy)
        entries = [{"error": x.message, "status": x.status} if isinstance(x, ClientError) else {} for x in infos]
        deadline = flask.request.environ.get(START, time.perf_counter()) + limits.request_seconds
        for i, future in zip(good, futures):
            try:
                text, confidence = future.result(max(0.0, deadline - time.perf_counter()))
                entries[i] = {"text": text, "confidence": confidence}
            except concurrent.futures.TimeoutError:
                return error(503, f"no answer within {limits.request_seconds} s: the server is overloaded", busy)
            except imaging.ImageError as e:
                entries[i] = {"error": str(e), "status": IMAGE_ERROR_STATUS[type(e)]}
        if parsed.batch:
            return {"predictions": entries}
        if "error" in entries[0]:
            return error(entries[0]["status"], entries[0]["error"])
        return entries[0]

    return app
