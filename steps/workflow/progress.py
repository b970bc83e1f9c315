"""Progress bars that suit where stderr goes: tqdm's one redrawn line in a terminal, and in a log file (stderr
not a TTY) a plain line every INTERVAL seconds and one at the end, never carriage-return frames.

`bar(...)` takes tqdm's arguments and gives tqdm's interface (iterate, update, close, with), so callers do not
care which they got.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

INTERVAL = float(os.environ.get("HWR_PROGRESS_SECONDS", "30"))  # seconds between lines in a log file


def interactive() -> bool:
    """Is stderr a terminal (where redrawing one line is what a reader wants)?"""
    return sys.stderr.isatty()


class LineBar(tqdm):
    """tqdm that prints whole lines (at most one per INTERVAL seconds, plus the last) to stderr."""

    def __init__(self, *args, **kwargs):
        self._printed = 0
        self._devnull = open(os.devnull, "w")  # tqdm's own \r frames and blanking go here
        kwargs.update(
            file=self._devnull,
            mininterval=max(kwargs.get("mininterval", 0), INTERVAL),
            maxinterval=max(kwargs.get("maxinterval", 0), INTERVAL),
            ascii=True,
            ncols=80,
        )
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if not self.disable and self.n != self._printed:  # nothing new (the opening refresh): no line
            self._printed = self.n
            print(self.__str__().strip(), file=sys.stderr, flush=True)
        return True

    def close(self):
        if not self.disable:
            self.display()  # the last state, whatever the interval
        super().close()
        self._devnull.close()


def bar(*args, **kwargs) -> tqdm:
    """tqdm in a terminal, LineBar elsewhere; the arguments are tqdm's."""
    return (tqdm if interactive() else LineBar)(*args, **kwargs)


def epoch_lines(interval: float = INTERVAL):
    """A Keras callback printing one line every `interval` seconds within an epoch (Keras' verbose=2 prints only
    at its end, so a long epoch would look hung): step n/N, elapsed seconds, the running loss."""
    import time

    import keras

    class EpochLines(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.started = epoch + 1, time.monotonic()
            self.last = self.started

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if now - self.last < interval:
                return
            self.last = now
            steps = self.params.get("steps") or "?"
            loss = f", loss {logs['loss']:.4f}" if logs and "loss" in logs else ""
            print(f"epoch {self.epoch}: step {batch + 1}/{steps}, {now - self.started:.0f} s{loss}", file=sys.stderr)

    return EpochLines()
