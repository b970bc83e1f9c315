"""The micro-batcher and the log escaping, in process with a plain function as the model (fast tests)."""

from __future__ import annotations

import threading

import pytest

from steps.serving.app import printable
from steps.serving.batcher import MicroBatcher, QueueFull


def test_a_full_queue_refuses_a_whole_request_and_takes_it_once_there_is_room():
    release = threading.Event()

    def recognize(payloads, beam):
        release.wait(10)
        return [p.upper() for p in payloads]

    batcher = MicroBatcher(recognize, max_batch=2, max_wait_ms=0, max_queued=3)
    try:
        running = batcher.submit(["a", "b"])  # taken at once into the blocked model call
        while batcher._pending:
            pass
        queued = batcher.submit(["c", "d", "e"])  # exactly fills the queue
        with pytest.raises(QueueFull, match="3 images are waiting for the model \\(limit 3\\)"):
            batcher.submit(["f"])
        release.set()
        assert [f.result(10) for f in running + queued] == ["A", "B", "C", "D", "E"]
        assert batcher.submit(["f"])[0].result(10) == "F"
    finally:
        release.set()
        batcher.close()


def test_an_exception_returned_for_one_image_fails_that_image_alone():
    batcher = MicroBatcher(lambda ps, beam: [ValueError(p) if p == "bad" else p for p in ps], 8, 20, 16)
    try:
        good, bad = batcher.submit(["ok", "bad"])
        assert good.result(10) == "ok"
        with pytest.raises(ValueError, match="bad"):
            bad.result(10)
    finally:
        batcher.close()


@pytest.mark.parametrize(
    "text, logged",
    [
        ("/predict", "/predict"),
        ("/x\n2026-12-01 INFO forged", "/x\\n2026-12-01 INFO forged"),
        ("/x\r\nforged", "/x\\r\\nforged"),
        ("/\x1b[31mred", "/\\x1b[31mred"),
        ("/caf\u00e9", "/caf\\xe9"),
    ],
)
def test_printable_keeps_client_text_on_one_line(text, logged):
    assert printable(text) == logged
    assert "\n" not in printable(text) and "\r" not in printable(text)
