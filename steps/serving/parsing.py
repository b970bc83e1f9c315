"""Request parsing for /predict: every input form a client may send, reduced to image bytes and a beam width.

Forms: a multipart file `image` (or several `image`/`images`), a form field holding base64, a JSON body
{"image": b64} or {"images": [b64, ...]}, or a raw image body. Problems are ClientErrors with their status.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from typing import Any

from steps.inference import imaging

MAX_BEAM_WIDTH = 100  # beam search cost grows with the width: bound what a client may ask
# JSON and form fields are text: images arrive base64 encoded, optionally as a data: URL from a browser.
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"[\r\n\t ]")


class ClientError(Exception):
    """A client error with its HTTP status, reported as JSON {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_base64(text: str, what: str) -> bytes:
    """base64 text (standard or URL-safe alphabet, line breaks allowed, optional data: URL prefix) -> bytes."""
    if not isinstance(text, str):
        raise ClientError(400, f"{what} must be a base64 string, got {type(text).__name__}")
    try:  # plain standard base64, what programs send, decodes as it is: cleaning it costs more than decoding
        if text:
            return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass  # whitespace, a data: URL, the URL-safe alphabet, or not base64: cleaned below
    # A urlencoded form turns '+' into ' '; base64 never contains spaces, so a space was a '+'.
    cleaned = _DATA_URL.sub("", text.strip()).replace(" ", "+")
    cleaned = _WHITESPACE.sub("", cleaned)
    if not cleaned:
        raise ClientError(400, f"{what} is empty")
    altchars = b"-_" if ("-" in cleaned or "_" in cleaned) else None
    try:
        return base64.b64decode(cleaned, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(
            400, f"{what} is not valid base64 (send the image file itself as a multipart file, or its base64 encoding)"
        ) from None


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
    images: list[bytes | ClientError]  # a batch entry that could not be decoded keeps its error
    batch: bool  # answer {"predictions": [...]} rather than one {"text", "confidence"}
    beam_width: int


MISSING = (
    "no image in the request: send a multipart file field 'image' (curl -F \"image=@word.png\"), "
    'a form field \'image\' holding base64, a JSON body {"image": "<base64>"}, or a batch '
    '{"images": ["<base64>", ...]}'
)


def _entry(text: Any, what: str) -> bytes | ClientError:
    """One base64 entry of a batch: its bytes, or its error (a bad entry must not fail the others)."""
    try:
        return decode_base64(text, what)
    except ClientError as e:
        return e


def too_many(count: int, max_images: int) -> ClientError:
    return ClientError(413, f"{count} images in one request exceed the limit of {max_images} images per request")


def parse_json(body: Any, beam: Any, max_images: int) -> Parsed:
    """A parsed JSON body {"image": b64} or {"images": [b64, ...]} (+ optional beam_width) -> Parsed."""
    if not isinstance(body, dict):
        raise ClientError(400, 'the JSON body must be an object like {"image": "<base64>"}')
    if "beam_width" in body:
        beam = body["beam_width"]
    if "images" in body:
        if not isinstance(body["images"], list) or not body["images"]:
            raise ClientError(400, "'images' must be a non-empty list of base64 strings")
        if len(body["images"]) > max_images:
            raise too_many(len(body["images"]), max_images)
        images = [_entry(v, f"images[{i}]") for i, v in enumerate(body["images"])]
        return Parsed(images, True, parse_beam_width(beam))
    if "image" in body:
        return Parsed([decode_base64(body["image"], "image")], False, parse_beam_width(beam))
    raise ClientError(400, MISSING)


def parse_request(request, max_images: int) -> Parsed:
    """Extract the images and beam width of a /predict request, whatever form it came in (at most
    `max_images` of them: more is a 413)."""
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
        except RecursionError:  # the C parser's guard against nesting as deep as the stack
            raise ClientError(400, 'the JSON body is nested too deeply: send {"image": "<base64>"}') from None
        return parse_json(body, beam, max_images)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form, files = request.form, request.files
        if form.get("beam_width") not in (None, ""):
            beam = form.get("beam_width")
        images: list[bytes | ClientError] = []
        batch = False
        for field in ("image", "images"):
            uploads = files.getlist(field)
            texts = form.getlist(field)
            if len(images) + len(uploads) + len(texts) > max_images:
                raise too_many(len(images) + len(uploads) + len(texts), max_images)
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
    what = (
        f"Content-Type {content_type!r} is not supported"
        if content_type
        else "the body is not JSON, a form or an image"
    )
    raise ClientError(415, f"{what}: send multipart/form-data, application/json or an image/* body")
