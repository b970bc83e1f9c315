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
    running: list = []
    first = threading.Thread(target=lambda: running.extend(batcher.submit(["a", "b"])))  # a lone request...
    try:
        first.start()
        while not batcher._running:  # ...computed in its own thread, in the blocked model call
            pass
        queued = batcher.submit(["c", "d", "e"])  # the one call is taken: these wait, exactly filling the queue
        with pytest.raises(QueueFull, match="3 images are waiting for the model \\(limit 3\\)"):
            batcher.submit(["f"])
        release.set()
        first.join(10)
        assert [f.result(10) for f in running + queued] == ["A", "B", "C", "D", "E"]
        assert batcher.submit(["f"])[0].result(10) == "F"
    finally:
        release.set()
        batcher.close()


def test_a_lone_request_is_computed_in_its_own_thread_without_a_hand_over():
    callers = []

    def recognize(payloads, beam):
        callers.append(threading.current_thread().name)
        return [p.upper() for p in payloads]

    batcher = MicroBatcher(recognize, max_batch=4, max_wait_ms=50, max_queued=8)
    try:
        with batcher.preparing():
            futures = batcher.submit(["a", "b"])
            assert all(f.done() for f in futures)  # answered before submit returned
        assert [f.result(0) for f in futures] == ["A", "B"]
        assert callers == [threading.current_thread().name] and batcher.inline == 1
    finally:
        batcher.close()


def test_a_request_arriving_while_another_is_prepared_waits_to_share_its_batch():
    calls = []
    batcher = MicroBatcher(lambda ps, beam: calls.append(list(ps)) or ps, max_batch=4, max_wait_ms=5000, max_queued=8)
    other_ready, other_done = threading.Event(), threading.Event()
    other: list = []

    def other_request():
        with batcher.preparing():
            other_ready.set()
            other_done.wait(10)
            other.extend(batcher.submit(["b"]))

    thread = threading.Thread(target=other_request)
    try:
        thread.start()
        other_ready.wait(10)
        with batcher.preparing():
            mine = batcher.submit(["a"])  # another request is being prepared: queue, do not compute alone
        assert not mine[0].done()
        other_done.set()
        thread.join(10)
        assert mine[0].result(10) == "a" and other[0].result(10) == "b"
        assert calls == [["a", "b"]] and batcher.inline == 0
    finally:
        other_done.set()
        batcher.close()


def test_a_full_batch_goes_at_once_without_waiting_for_requests_still_being_prepared():
    calls = []
    batcher = MicroBatcher(lambda ps, beam: calls.append(list(ps)) or ps, max_batch=2, max_wait_ms=60_000, max_queued=8)
    slow_ready, slow_release = threading.Event(), threading.Event()

    def slow_request():
        with batcher.preparing():  # a request that takes its time: no batch may wait a minute for it
            slow_ready.set()
            slow_release.wait(20)

    thread = threading.Thread(target=slow_request)
    try:
        thread.start()
        slow_ready.wait(10)
        first = batcher.submit(["a"])[0]  # queued: another request is being prepared
        second = batcher.submit(["b"])[0]  # the batch is full now
        assert (first.result(5), second.result(5)) == ("a", "b") and calls == [["a", "b"]]
    finally:
        slow_release.set()
        thread.join(10)
        batcher.close()


def test_workers_that_raced_for_one_batch_still_answer_every_later_request():
    # Both workers wake for a queued image and wait for a request being prepared; one takes the image and
    # the other finds nothing. That one must not count as a running call, or the batcher runs out of calls.
    batcher = MicroBatcher(lambda ps, beam: ps, max_batch=4, max_wait_ms=20, max_queued=8, workers=2)
    try:
        for round_ in range(12):
            release = threading.Event()
            ready = threading.Event()

            def other_request(ready: threading.Event, release: threading.Event) -> None:
                with batcher.preparing():
                    ready.set()
                    release.wait(10)

            thread = threading.Thread(target=other_request, args=(ready, release))
            thread.start()
            ready.wait(10)
            future = batcher.submit([round_])[0]  # queued: another request is being prepared
            threading.Event().wait(0.005)
            release.set()
            thread.join(10)
            assert future.result(5) == round_
    finally:
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


def test_two_workers_make_two_model_calls_at_once():
    both_inside = threading.Barrier(2, timeout=10)  # passes only when two calls are in the model together

    def recognize(payloads, beam):
        both_inside.wait()
        return [p.upper() for p in payloads]

    batcher = MicroBatcher(recognize, max_batch=1, max_wait_ms=0, max_queued=8, workers=2)
    try:
        assert [f.result(10) for f in batcher.submit(["a", "b"])] == ["A", "B"]
        assert batcher.batches == 2 and batcher.images == 2
    finally:
        batcher.close()


def test_one_worker_makes_one_call_at_a_time():
    inside, most = [0], [0]
    lock = threading.Lock()

    def recognize(payloads, beam):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        threading.Event().wait(0.01)
        with lock:
            inside[0] -= 1
        return payloads

    batcher = MicroBatcher(recognize, max_batch=1, max_wait_ms=0, max_queued=8)
    try:
        assert [f.result(10) for f in batcher.submit(list("abcd"))] == list("abcd")
        assert most[0] == 1
    finally:
        batcher.close()


def test_closing_answers_what_is_queued_and_stops_every_worker():
    release = threading.Event()
    batcher = MicroBatcher(
        lambda ps, beam: release.wait(10) and ps, max_batch=1, max_wait_ms=0, max_queued=8, workers=3
    )
    futures = batcher.submit(list("abcde"))
    closer = threading.Thread(target=batcher.close)
    closer.start()
    release.set()
    closer.join(10)
    assert [f.result(10) for f in futures] == list("abcde")
    assert not any(t.is_alive() for t in batcher._threads)


def test_workers_must_be_at_least_one():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        MicroBatcher(lambda ps, beam: ps, 8, 0, 8, workers=0)


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
