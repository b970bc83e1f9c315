"""The network of a word model as TensorFlow Lite: canvases in, logits out.

Train writes it beside the SavedModel (steps/training/lite.py) when it reads as the Keras model does;
HandwritingModel then computes logits here and everything else (preprocessing, decoding) in the SavedModel
and ctc.decode as before. A network with float weights uses the fused LSTM kernel, which has one batch size
and keeps its state between calls: it reads one image per call, each from a reset state. One with int8
weights (train's default) has its LSTMs written out and keeps no state: it reads a batch per call (up to
MAX_CALL images), 0.45 against 0.51 ms per word at 5, and a server's model thread waits for the interpreter
lock once per batch instead of once per image.

Interpreters are pooled rather than kept per thread: a call borrows an idle one of its batch size, the most
recently used, and a new one is made only when all are busy. A server has as many as it makes calls at once
(one per core), not one per request thread, so they stay in the CPU's cache. They are made with XNNPACK's
latest features, which share a written-out network's recurrent weights between its steps instead of packing
them once per step: 0.3 against 13 MB an interpreter, and ten of them taking turns read 0.54 against 0.95 ms
per word (same logits).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Iterator

import numpy as np
import tensorflow as tf

# What TensorFlow Lite, its converter and XLA (training/inputs.py) print through absl in a normal run. absl
# ignores TF_CPP_MIN_LOG_LEVEL (steps/workflow/quiet.py), so these lines are taken out of stderr where they are made.
HARMLESS_NATIVE_LINES = (
    "Created TensorFlow Lite XNNPACK delegate for CPU",  # once per process: the fast kernels are in use
    "All log messages before absl::InitializeLog() is called",  # absl's note that it logs to stderr
    "tf_tfl_flatbuffer_helpers.cc",  # "Ignored output_format", "Ignored drop_control_dependency": converter defaults
    "XLA service",  # "XLA service 0x... initialized for platform Host": XLA starting, once per process
    "StreamExecutor device (0): Host",  # the same start-up: XLA computes on the CPU
    "Compiled cluster using XLA",  # "This line is logged at most once for the lifetime of the process."
)
_STDERR_LOCK = threading.Lock()  # fd 2 is the process's: one capture at a time
MAX_CALL = 16  # most images a batch-taking network reads in one call (a larger batch is read in parts)


@contextlib.contextmanager
def native_stderr_without(pieces: tuple[str, ...] = HARMLESS_NATIVE_LINES) -> Iterator[None]:
    """Meanwhile, what anything in the process writes to fd 2 is held back; then every line that holds none of
    `pieces` is written out (late, but nothing is lost)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line for line in held.read().splitlines(keepends=True) if not any(p.encode() in line for p in pieces)
            ]
            if kept:
                os.write(2, b"".join(kept))


class LiteNetwork:
    """A TensorFlow Lite network (uint8 canvases [B, H, W, 1] -> logits [B, T, C]), safe to call from many threads.

    An interpreter runs one call at a time and computes on one core: concurrent calls, each with an
    interpreter of the pool, are how a server uses more.
    """

    def __init__(self, blob: bytes):
        self._blob = blob
        self._lock = threading.Lock()
        self._idle: dict[int, list[tuple[tf.lite.Interpreter, int, int]]] = {}  # by call size; most recent last
        first = self._make(1)
        self._idle[1] = [first]
        details = first[0].get_input_details()[0]
        self.canvas_shape = tuple(int(d) for d in details["shape"][1:])  # (H, W, 1)
        self.logits_shape = tuple(int(d) for d in first[0].get_output_details()[0]["shape"][1:])  # (T, C)
        # Weights stored as int8 (train's default since session 16: steps/training/lite.to_lite), or float.
        self.int8_weights = any(t["dtype"] == np.int8 for t in first[0].get_tensor_details())
        # LSTMs written out (int8 networks since session 18): no state, any batch size.
        self.batched = int(details["shape_signature"][0]) == -1

    def _make(self, size: int) -> tuple[tf.lite.Interpreter, int, int]:
        """A new interpreter for calls of `size` images, sized before it first runs (resizing one that has
        run crashes TensorFlow Lite 2.17 with XNNPACK's int8 kernels)."""
        with native_stderr_without():
            interpreter = tf.lite.Interpreter(
                model_content=self._blob, num_threads=1, experimental_default_delegate_latest_features=True
            )
            source = interpreter.get_input_details()[0]
            if size != source["shape"][0]:
                interpreter.resize_tensor_input(source["index"], [size, *source["shape"][1:]], strict=True)
            interpreter.allocate_tensors()
        return interpreter, source["index"], interpreter.get_output_details()[0]["index"]

    @contextlib.contextmanager
    def _borrowed(self, size: int) -> Iterator[tuple[tf.lite.Interpreter, int, int]]:
        with self._lock:
            idle = self._idle.setdefault(size, [])
            mine = idle.pop() if idle else None
        if mine is None:
            mine = self._make(size)
        try:
            yield mine
        finally:
            with self._lock:
                self._idle[size].append(mine)

    def pooled(self) -> int:
        """How many interpreters the pool holds (all idle between calls)."""
        with self._lock:
            return sum(map(len, self._idle.values()))

    def logits(self, canvases: np.ndarray) -> np.ndarray:
        """uint8 canvases [B, H, W, 1] -> float32 logits [B, T, C]."""
        if tuple(canvases.shape[1:]) != self.canvas_shape:
            raise ValueError(f"canvases of shape {tuple(canvases.shape[1:])}, the network reads {self.canvas_shape}")
        step = MAX_CALL if self.batched else 1
        out = [np.zeros((0, *self.logits_shape), np.float32)]
        for start in range(0, len(canvases), step):
            part = canvases[start : start + step]
            with self._borrowed(len(part)) as (interpreter, source, target):
                if not self.batched:
                    interpreter.reset_all_variables()  # a fused LSTM starts from the state its last call left
                interpreter.set_tensor(source, part)
                interpreter.invoke()
                out.append(interpreter.get_tensor(target))
        return np.concatenate(out)
