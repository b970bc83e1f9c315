"""The server's work budget and admission settings, stated once: one frozen object the app and server read.

Every limit bounds something a client controls. Over a limit is a JSON 413 (too much in one request) or
503 with Retry-After (the server is full right now); the message names the limit.
"""

from __future__ import annotations

import dataclasses

from steps.inference import imaging


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per request, per process and per connection bounds of `serve` (see the README's hardening section)."""

    max_body_bytes: int = 10 * 1024 * 1024  # one request's body; waitress refuses larger before reading them
    max_images: int = 64  # images in one request (a JSON batch, multipart files)
    max_image_pixels: int = imaging.DEFAULT_MAX_PIXELS  # frames x width x height of one image
    max_request_pixels: int = imaging.DEFAULT_MAX_PIXELS  # the same summed over a request's images
    # A request above this many pixels in all is decoded in its own thread, `heavy_lanes` at a time
    # (others get 503), so the shared batch only ever holds cheap word-sized work.
    heavy_pixels: int = 1_000_000
    heavy_lanes: int = 1
    max_queued_images: int = 256  # images waiting for the model; beyond, 503
    request_seconds: float = 30.0  # a request still unanswered after this gets 503
    retry_after_seconds: int = 1  # what a 503 tells the client to wait
    # Connections: waitress' own limit is set just above ours, so that ours (503) answers first.
    connections_per_thread: int = 16  # connection limit = threads x this
    receive_seconds: float = 20.0  # a request (headers and body) must arrive within this, or 408
    idle_seconds: float = 30.0  # an idle keep-alive connection is closed after this
    backlog: int = 128  # the kernel's queue of connections not accepted yet

    def connection_limit(self, threads: int) -> int:
        """Open connections allowed at once for `threads` worker threads."""
        return threads * self.connections_per_thread
