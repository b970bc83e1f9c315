"""The network of a word model as TensorFlow Lite: canvases in, logits out, one image per call.

Train writes it beside the SavedModel (steps/training/lite.py) when it reads as the Keras model does;
HandwritingModel then computes logits here and everything else (preprocessing, decoding) in the SavedModel
and ctc.decode as before. A network with float weights uses the fused LSTM kernel, which has one batch size
and keeps its state between calls: each image is read from a reset state. One with int8 weights (train's
default) has its LSTMs written out and keeps no state. It would take a batch, but reads only a tenth faster
per image at 5 (0.45 against 0.51 ms), and each batch size would be an interpreter of its own (12-40 MB).

Interpreters are pooled rather than kept per thread: a call borrows an idle one, the most recently used, and
a new one is made only when all are busy. A server holds as many as it makes calls at once (one),
not one per request thread (a lone request is computed in its own thread), and they stay in the CPU's cache:
ten threads taking turns with one interpreter each read 0.95 ms per word, with a pool 0.54 (one thread alone:
0.51).
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
        self._idle = [self._make()]  # interpreters not in use, the most recently used last
        interpreter = self._idle[0][0]
        self.canvas_shape = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"][1:])  # (H, W, 1)
        self.logits_shape = tuple(int(d) for d in interpreter.get_output_details()[0]["shape"][1:])  # (T, C)
        # Weights stored as int8 (train's default since session 16: steps/training/lite.to_lite), or float.
        self.int8_weights = any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details())
        # LSTMs written out (int8 networks since session 18), which keep no state between calls, or fused.
        self.stateless = int(interpreter.get_input_details()[0]["shape_signature"][0]) == -1

    def _make(self) -> tuple[tf.lite.Interpreter, int, int]:
        with native_stderr_without():
            interpreter = tf.lite.Interpreter(model_content=self._blob, num_threads=1)
            interpreter.allocate_tensors()
        return interpreter, interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    @contextlib.contextmanager
    def _borrowed(self) -> Iterator[tuple[tf.lite.Interpreter, int, int]]:
        with self._lock:
            mine = self._idle.pop() if self._idle else None
        if mine is None:
            mine = self._make()
        try:
            yield mine
        finally:
            with self._lock:
                self._idle.append(mine)

    def pooled(self) -> int:
        """How many interpreters the pool holds (all idle between calls)."""
        with self._lock:
            return len(self._idle)

    def logits(self, canvases: np.ndarray) -> np.ndarray:
        """uint8 canvases [B, H, W, 1] -> float32 logits [B, T, C]."""
        if tuple(canvases.shape[1:]) != self.canvas_shape:
            raise ValueError(f"canvases of shape {tuple(canvases.shape[1:])}, the network reads {self.canvas_shape}")
        out = []
        with self._borrowed() as (interpreter, source, target):
            for canvas in canvases:
                if not self.stateless:
                    interpreter.reset_all_variables()  # a fused LSTM starts from the state its last call left
                interpreter.set_tensor(source, canvas[np.newaxis])
                interpreter.invoke()
                out.append(interpreter.get_tensor(target)[0])
        return np.stack(out) if out else np.zeros((0, *self.logits_shape), np.float32)
