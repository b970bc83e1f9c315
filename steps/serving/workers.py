"""Several server processes on one port (`serve --workers N`): one interpreter lock each.

One process answers at most what its Python can do under one interpreter lock: on the benchmark's machine,
~550-600 word images/s with cores to spare (README, "Performance"). With `workers` > 1 the process that
`serve` starts binds the port once and becomes a supervisor: it starts `workers` processes (spawned, so
each imports TensorFlow afresh rather than inheriting a forked copy), each loading the model and serving
on the shared listening socket as a whole server of its own (threads, batcher, limits; the kernel hands
each new connection to one of them). It restarts a worker that dies while serving, gives up when one dies
before it ever served (a model that cannot load: its error is above), and stops them all when it is
stopped. Each worker holds a copy of the model, so memory grows with the count.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger("hwr.serve")

STOP_SECONDS = 15.0  # a worker stopped with SIGTERM gets this long to finish its requests, then SIGKILL


class WorkerFailed(RuntimeError):
    """A worker exited before it ever served: the same would happen to any other (a model that cannot load)."""


def listening_socket(host: str, port: int) -> socket.socket:
    """The one socket every worker accepts on, bound and listening before any worker starts (each worker's
    server sets its backlog, limits.backlog, when it starts accepting)."""
    sock = socket.create_server((host, port))
    sock.setblocking(False)  # every worker waits for connections in select(); the one that accepts first has it
    return sock


def follow_parent(parent: int, interval: float = 1.0) -> None:
    """In a worker: SIGTERM ourselves (a clean stop) once the supervisor is gone, killed without a chance to
    stop us, so that no orphan keeps serving the port."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="hwr-follow-parent", daemon=True).start()


def supervise(count: int, target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """Run `count` processes of `target(index, ready, *args)` until interrupted, replacing any that dies after
    it called ready.set(); WorkerFailed when one exits before that. `args` are pickled to each (a socket
    among them reaches the worker as its own copy of the descriptor)."""
    context = multiprocessing.get_context("spawn")
    workers: dict[int, tuple[Any, Any]] = {}

    def start(index: int) -> None:
        ready = context.Event()
        process = context.Process(target=target, args=(index, ready, *args), name=f"worker-{index}", daemon=True)
        process.start()
        workers[index] = (process, ready)
        log.info("started worker %d (pid %d)", index, process.pid)

    try:
        for index in range(count):
            start(index)
        while True:
            multiprocessing.connection.wait([process.sentinel for process, _ in workers.values()])
            for index, (process, ready) in list(workers.items()):
                if process.exitcode is None:
                    continue
                if not ready.is_set():
                    raise WorkerFailed(f"worker {index} exited with code {process.exitcode} before it served")
                log.warning(
                    "worker %d (pid %d) exited with code %d: starting another", index, process.pid, process.exitcode
                )
                start(index)
    finally:
        stop([process for process, _ in workers.values()])


def stop(processes: list, seconds: float = STOP_SECONDS) -> None:
    """SIGTERM each live process, wait up to `seconds` for all, then SIGKILL what is left."""
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(5)
