"""Running the app: waitress (a production WSGI server) with fair admission, and a warm-up call.

What waitress does on its own that a hostile client could use is changed in three places:
- its error answers (a body over its limit, malformed HTTP) are JSON like the app's, not plain text;
- a connection over the limit is answered 503 with Retry-After at once (waitress would stop accepting, so
  connections would wait unanswered in the kernel's backlog); an idle keep-alive connection is closed
  first to make room for it;
- a request that has not fully arrived `receive_seconds` after its first byte gets 408 and is closed,
  so slow clients cannot hold connections (waitress only closes connections idle for a while).
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, WSGITask

from steps.serving import memory
from steps.serving.limits import Limits

log = logging.getLogger("hwr.serve")


def json_error(status: int, reason: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response whose body is the app's JSON error; the connection closes."""
    body = json.dumps({"error": message, "status": status}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head += f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return (head + "Connection: close\r\n\r\n").encode() + body


class JsonErrorTask(ErrorTask):
    """waitress' own error answers (bad HTTP, a body over its limit), as JSON naming the problem."""

    def execute(self):
        e = self.request.error
        message = {
            413: f"request larger than the limit of {self.channel.server.limits.max_body_bytes} bytes",
            400: f"malformed HTTP request: {str(e.body).splitlines()[0] if e.body else e.reason}",
            431: "request headers larger than the limit",
        }.get(e.code, e.reason)
        body = json.dumps({"error": message, "status": e.code}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class OneSendTask(WSGITask):
    """waitress' WSGI task, sending a response's head with the first part of its body: one send and one TCP
    segment for a JSON answer instead of two (two fewer thread switches per request in a busy server)."""

    def write(self, data):
        if self.wrote_header or not data or not self.complete or not self.has_body:
            return super().write(data)
        head = self.build_response_header()  # decides chunked_response and content_length
        self.wrote_header = True
        if self.chunked_response or self.content_length is None:
            self.channel.write_soon(head)
            return super().write(data)
        body = data[: self.content_length]
        self.content_bytes_written += len(body)
        self.channel.write_soon(head + body)
        if len(body) < len(data):
            self.logger.warning(
                "application-written content exceeded the number of bytes specified by Content-Length header "
                f"({self.content_length})"
            )
            self.logged_write_excess = True


class Channel(HTTPChannel):
    """A connection that remembers since when its current request has been arriving."""

    task_class = OneSendTask
    error_task_class = JsonErrorTask
    arriving: object = None  # the request being received
    arriving_since = 0.0

    def received(self, data):
        result = super().received(data)
        if self.request is not None and self.request is not self.arriving:
            self.arriving, self.arriving_since = self.request, time.monotonic()
        elif self.request is None:
            self.arriving = None
        return result


class Server(TcpWSGIServer):
    """waitress' TCP server with the admission above; `limits` and `connection_limit` set by make_server."""

    channel_class = Channel
    limits: Limits
    connection_limit: int

    def readable(self):
        super().readable()  # runs maintenance; its answer would pause accepting at waitress' own limit
        return self.accepting

    def handle_accept(self):
        if len(self.active_channels) < self.connection_limit or self._close_an_idle_channel():
            return super().handle_accept()
        try:
            conn, _ = self.accept() or (None, None)
        except OSError:
            return
        if conn is None:
            return
        try:
            conn.setblocking(False)
            conn.send(
                json_error(
                    503,
                    "Service Unavailable",
                    f"too many connections (limit {self.connection_limit}): retry in {self.limits.retry_after_seconds} s",
                    self.limits.retry_after_seconds,
                )
            )
            conn.recv(65536)  # what the client sent already: closing with it unread would reset the answer away
        except OSError:
            pass
        finally:
            conn.close()

    def _close_an_idle_channel(self) -> bool:
        """Close the longest-idle keep-alive connection (no request in or out), if there is one."""
        idle = [
            c
            for c in self.active_channels.values()
            if not c.requests and c.request is None and not c.total_outbufs_len and not c.will_close
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last_activity)
        oldest.handle_close()
        return True

    def maintenance(self, now):
        super().maintenance(now)
        cutoff = time.monotonic() - self.limits.receive_seconds
        for channel in list(self.active_channels.values()):
            late = channel.arriving is not None and channel.request is not None and channel.arriving_since < cutoff
            if late and not channel.requests:  # (an answer still being written for it would interleave)
                channel.arriving = channel.request = None
                channel.write_soon(
                    json_error(
                        408,
                        "Request Timeout",
                        f"the request did not arrive within {self.limits.receive_seconds} s",
                    )
                )
                channel.close_when_flushed = True
                log.info("closed a connection whose request took over %s s to arrive", self.limits.receive_seconds)


def make_server(app, host: str, port: int, threads: int, limits: Limits, sock: socket.socket | None = None) -> Server:
    """A bound waitress server for `app` (not running yet: call .run(), and .close() from elsewhere), on `sock`
    when given (bound and listening already: the socket every worker of `serve --workers N` shares)."""
    from waitress.adjustments import Adjustments
    from waitress.task import ThreadedTaskDispatcher

    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        ident="hwr-serve",
        # Bodies up to twice the limit reach the app, which answers 413 after reading them (a client that
        # sends a body whole and then reads gets its answer); waitress refuses larger ones unread.
        max_request_body_size=2 * limits.max_body_bytes,
        connection_limit=limits.connection_limit(threads) + 16,  # never reached: ours answers 503 first
        channel_timeout=limits.idle_seconds,
        cleanup_interval=1,
        backlog=limits.backlog,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    if sock is None:
        server = Server(app, map={}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])
    else:
        sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
        server = Server(app, map={}, _sock=sock, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo, bind_socket=False)
    server.limits, server.connection_limit = limits, limits.connection_limit(threads)
    return server


def serve(app, host: str, port: int, threads: int, limits: Limits, sock: socket.socket | None = None) -> None:
    """Run `app` until interrupted (on `sock` if given: see make_server)."""
    memory.fix_mmap_threshold()
    server = make_server(app, host, port, threads, limits, sock)
    try:
        server.run()
    finally:
        server.task_dispatcher.shutdown()
        server.close()


def warm_up(model) -> None:
    """Run tiny images through the model, one and a batch: the first TF calls build kernels (~0.2 s each)."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (64, 24), 255)
    ImageDraw.Draw(image).text((4, 6), "warm", fill=0)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    model.read([buf.getvalue()])
    model.read([buf.getvalue()] * 2)
