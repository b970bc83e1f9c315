"""The Flask app: POST /predict, GET /health, GET /version and the upload page at GET /.

Errors are JSON {"error": ..., "status": ...} with a 4xx code naming the problem; no traceback reaches a
client (it is logged). The model does all preprocessing and decoding; the app moves bytes in and JSON out
and lets the MicroBatcher merge concurrent requests into one model call.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time
import traceback
from importlib import resources
from typing import Any

from steps.inference import imaging
from steps.inference.recognizer import HandwritingModel
from steps.serving.batcher import MAX_WAIT_MS, MicroBatcher
from steps.serving.parsing import ClientError, parse_request

log = logging.getLogger("hwr.serve")

MAX_CONTENT_LENGTH = 10 * 1024 * 1024  # bytes per request; larger requests get 413 before any decoding
RESULT_TIMEOUT_S = 120.0  # a request gives up (503) if its batch has not run by then
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


def create_app(
    model: HandwritingModel,
    model_info: dict,
    max_batch: int,
    max_content_length: int = MAX_CONTENT_LENGTH,
    max_pixels: int | None = None,
    max_wait_ms: float = MAX_WAIT_MS,
    lexicon=None,
):
    """The Flask app serving `model` (an exported.HandwritingModel); starts its batcher thread.

    `model_info` is what GET /version returns. `max_pixels` defaults to the model's own limit.
    The batcher is reachable as app.extensions["hwr.batcher"] (closed by the caller at shutdown).
    """
    import flask
    from werkzeug.exceptions import HTTPException

    max_pixels = imaging.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_content_length
    # Werkzeug's default limit for non-file form fields is 500 kB: a base64 form field carries a whole image.
    app.config["MAX_FORM_MEMORY_SIZE"] = max_content_length
    app.json.sort_keys = False
    batcher = MicroBatcher(
        lambda canvases, beam: model.recognize_canvases(canvases, beam, lexicon), max_batch, max_wait_ms
    )
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
        messages = {
            404: f"no such path {flask.request.path!r}: use POST /predict, GET /health, GET /version or GET /",
            405: f"{flask.request.method} is not allowed on {flask.request.path}",
            413: f"request larger than the limit of {max_content_length} bytes",
        }
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
        # The page checks sizes before uploading, against this server's limit.
        return flask.Response(PAGE.replace("__MAX_BYTES__", str(max_content_length)), mimetype="text/html")

    @app.get("/favicon.svg")
    @app.get("/favicon.ico")
    def favicon():
        return flask.Response(FAVICON, mimetype="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.post("/predict")
    def predict():
        with batcher.preparing():
            parsed = parse_request(flask.request)
            entries: list[dict] = [{} for _ in parsed.images]
            sent = [i for i, data in enumerate(parsed.images) if not isinstance(data, ClientError)]
            prepared = model.canvases([parsed.images[i] for i in sent], max_pixels)  # bad images isolated there
            good, canvases = [], []
            for i, data in enumerate(parsed.images):
                if isinstance(data, ClientError):
                    entries[i] = {"error": data.message, "status": data.status}
            for i, canvas in zip(sent, prepared):
                if isinstance(canvas, imaging.ImageError):
                    entries[i] = {"error": str(canvas), "status": IMAGE_ERROR_STATUS[type(canvas)]}
                else:
                    good.append(i)
                    canvases.append(canvas)
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
