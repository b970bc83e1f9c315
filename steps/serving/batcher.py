"""Micro-batching: the images of concurrent requests go through one model call.

Background threads (serve uses one: steps/serving/app.MODEL_THREADS) make the model calls; request threads
submit images (encoded bytes, preprocessed inside the batched call, or ready canvases) and wait on futures.
The queue is bounded: a submit that would overfill it raises QueueFull, which the app answers with 503 and
Retry-After.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from typing import Any, Callable, Iterator, Sequence

MAX_WAIT_MS = 5.0  # longest a batch waits for more images from requests being prepared


class QueueFull(Exception):
    """The batcher holds as many images as it may: the caller should answer 503 (try again shortly)."""


@dataclasses.dataclass
class _Item:
    payload: Any  # whatever `recognize` takes per image: encoded bytes or a canvas
    beam_width: int
    future: concurrent.futures.Future


class MicroBatcher:
    """Runs the images of concurrent requests through one `recognize(payloads, beam_width)` call, which
    returns one result per payload: a value, or an exception instance that fails that image alone.

    `workers` background threads make the calls, each one at a time. A request thread checks its images
    (inside `preparing()`) and submits them; at most `max_queued` images wait at once. A free worker
    takes the oldest pending item and adds pending items with the same beam width, waiting up to
    `max_wait_ms` for more only while some request is still preparing: a lone request never waits,
    and under load one call serves many requests (that is where the throughput comes from).
    Greedy and beam items never share a call, since the decoder differs.

    At most `workers` calls run at once. When nothing waits, no other request is being prepared, the images
    fit in one call and a call may start, `submit` makes the call itself, in the request's thread: a lone
    request then costs no hand-over to a worker and back (two thread wake-ups, slow on a virtual machine).
    """

    def __init__(
        self,
        recognize: Callable[[list, int], Sequence[Any]],
        max_batch: int,
        max_wait_ms: float,
        max_queued: int,
        workers: int = 1,
    ):
        if max_batch < 1 or max_queued < 1 or workers < 1:
            raise ValueError("max_batch, max_queued and workers must be at least 1")
        self._recognize = recognize
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued = max_queued
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._preparing = 0
        self._local = threading.local()  # .preparing: is this thread inside preparing()?
        self._running = 0  # model calls under way, by workers or inline; at most self.workers
        self.workers = workers
        self._closed = False
        self.batches = 0  # model calls and images so far (tests and debugging read them)
        self.images = 0
        self.inline = 0  # of those calls, made in the submitting thread
        self._threads = [
            threading.Thread(target=self._run, name=f"hwr-batcher-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark a request as about to submit, so a forming batch waits a moment for it."""
        with self._cond:
            self._preparing += 1
        self._local.preparing = True
        try:
            yield
        finally:
            self._local.preparing = False
            with self._cond:
                self._preparing -= 1
                self._cond.notify_all()

    def submit(self, payloads: Sequence[Any], beam_width: int = 0) -> list[concurrent.futures.Future]:
        """Queue images; each future resolves to recognize's result for it or raises its exception.

        All or none: QueueFull if they do not fit in the queue now. Called inside `preparing()` (or by a
        lone caller), it may compute the images before returning (see the class docstring).
        """
        items = [_Item(p, beam_width, concurrent.futures.Future()) for p in payloads]
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._pending) + len(items) > self.max_queued:
                raise QueueFull(f"{len(self._pending)} images are waiting for the model (limit {self.max_queued})")
            mine = int(getattr(self._local, "preparing", False))
            alone = not self._pending and self._preparing == mine and len(items) <= self.max_batch
            inline = alone and self._running < self.workers
            if inline:
                self._running += 1
                self._preparing -= mine  # computing, no longer preparing: no forming batch should wait for it
            else:
                self._pending.extend(items)
                self._cond.notify_all()
        if inline:
            try:
                self._call(items, inline=True)
            finally:
                with self._cond:
                    self._preparing += mine
        return [i.future for i in items]

    def close(self) -> None:
        """Finish what is pending, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _take(self) -> list[_Item]:
        """The next batch for a worker; [] once closed and drained."""
        while True:
            batch = self._take_once()
            if batch or self._closed:
                return batch

    def _take_once(self) -> list[_Item]:
        """A batch, or [] when another worker took the pending items while this one waited for more."""
        with self._cond:
            while (not self._pending or self._running >= self.workers) and not self._closed:
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
            self._running += bool(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            self._call(batch)

    def _call(self, batch: list[_Item], inline: bool = False) -> None:
        """One model call for `batch` (counted in self._running by the caller), its futures resolved."""
        try:
            results = self._recognize([i.payload for i in batch], batch[0].beam_width)
        except BaseException as e:  # the callers report it; the batcher must survive
            results = [e] * len(batch)
        else:
            with self._cond:
                self.batches += 1
                self.images += len(batch)
                self.inline += inline
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
        for i, result in zip(batch, results):
            if isinstance(result, BaseException):
                i.future.set_exception(result)
            else:
                i.future.set_result(result)
