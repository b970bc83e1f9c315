"""Following an alias: when `@champion` moves, a running server switches to the new version between requests.

`Switch` is the WSGI application waitress runs. It holds the current Flask app (one model, its batcher and
its /version) and hands each request to the app that is current when the request arrives; that app serves
the request to the end, so a switch never drops or mixes one. `Follower` checks the alias every `interval`
seconds and, when it names another version, loads and warms that version *before* the switch (requests keep
going to the old app meanwhile), swaps, and closes the old app's batcher once its last request is answered.
A server started on a version, a run or a path pins it and says so in /version.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable

log = logging.getLogger("hwr.serve")

_ALIAS_URI = re.compile(r"^models:/([^/@]+)@([^/]+)/?$")


def alias_of(model_uri: str) -> tuple[str, str] | None:
    """(name, alias) of a models:/Name@alias URI; None for a URI that pins a model."""
    m = _ALIAS_URI.match(model_uri)
    return (m.group(1), m.group(2)) if m else None


class Switch:
    """A WSGI app delegating each request to the current Flask app; `swap` replaces it between requests."""

    def __init__(self, app):
        self._lock = threading.Lock()
        self._app = app
        self._in_flight = {id(app): 0}
        self._retired: set[int] = set()

    @property
    def current(self):
        return self._app

    @property
    def config(self):  # server.serve reads the request size limit from it
        return self._app.config

    def __call__(self, environ, start_response):
        with self._lock:
            app = self._app
            self._in_flight[id(app)] += 1
        try:
            # Our responses are small JSON or the page: buffered, the request ends here, in this app.
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                getattr(body, "close", lambda: None)()
        finally:
            self._leave(app)

    def swap(self, app) -> None:
        """Route new requests to `app`; the old one finishes its requests, then its batcher is closed."""
        with self._lock:
            old, self._app = self._app, app
            self._in_flight[id(app)] = 0
            self._retired.add(id(old))
        self._leave(old, entered=False)

    def _leave(self, app, entered: bool = True) -> None:
        with self._lock:
            if entered:
                self._in_flight[id(app)] -= 1
            done = id(app) in self._retired and self._in_flight[id(app)] == 0
            if done:
                self._retired.discard(id(app))
                del self._in_flight[id(app)]
        if done:
            app.extensions["hwr.batcher"].close()

    def close(self) -> None:
        """At shutdown: stop the current app's batcher."""
        self._app.extensions["hwr.batcher"].close()


class Follower:
    """A daemon thread that moves `switch` to the version `alias` names, checking every `interval` seconds.

    `build(version)` loads models:/<name>/<version> and returns its Flask app (warmed up); it runs in this
    thread, so loading never blocks a request. A registry that cannot be reached is logged and retried.
    """

    def __init__(
        self, switch: Switch, name: str, alias: str, version: str, interval: float, build: Callable[[str], object]
    ):
        self.switch, self.name, self.alias, self.version = switch, name, alias, version
        self.interval, self._build = interval, build
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hwr-follow", daemon=True)

    def start(self) -> "Follower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def check(self) -> bool:
        """One check: switch when the alias names another version. True when it switched."""
        from mlflow.tracking import MlflowClient

        wanted = MlflowClient().get_model_version_by_alias(self.name, self.alias).version
        if str(wanted) == str(self.version):
            return False
        log.info("@%s of %s moved from version %s to %s: loading it", self.alias, self.name, self.version, wanted)
        app = self._build(str(wanted))
        self.switch.swap(app)
        log.info("now serving %s version %s (@%s)", self.name, wanted, self.alias)
        self.version = str(wanted)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as e:  # the current version keeps serving; try again at the next check
                log.warning(
                    "cannot follow @%s of %s (still serving version %s): %s", self.alias, self.name, self.version, e
                )
