"""Conversion: stream the words archive once, preprocess every planned sample, write the TFRecord shards.

The images go through imaging's decode and resize_pad (the preprocessing the exported model runs too) in
one parallel tf.data map inside this process. What to convert was decided beforehand by plan.py.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from steps.dataset import iam_format, tfrecords
from steps.dataset.plan import Sample
from steps.inference import imaging

# Images cross between Python and TensorFlow in chunks: one element per image cost ~0.5 ms of Python each
# way (from_generator's call and the iterator's), more than decoding the image, and all of it under the GIL.
CHUNK = 64


class StreamConverter:
    """Preprocesses a stream of (sample, encoded bytes) in this process, `parallel` images at a time.

    One tf.data pipeline for the whole stream runs imaging's decode and resize_pad on TensorFlow's thread
    pool (the ops release the GIL), so all cores work without worker processes (each spent 3-4 s importing
    TensorFlow), and the next images decode while this thread serializes and writes. It is built once: a
    pipeline per chunk of 256 images spent ~0.5 s tracing the preprocessing each time, more than the
    images took. Images enter and leave it CHUNK at a time (the map itself is per image). The map is
    deterministic, so the output order and bytes do not depend on `parallel`. A file TensorFlow cannot
    decode is dropped by ignore_errors and found missing by its index: corrupt.
    """

    def __init__(self, height: int, width: int, parallel: int):
        import tensorflow as tf

        self.parallel = parallel

        # Plain TensorFlow ops, no Python control flow on tensors: AutoGraph's rewrite of imaging's source
        # was ~0.5 s of the pipeline's start-up, a sixth of converting the benchmark's 5,400 images on 2 cores.
        @tf.autograph.experimental.do_not_convert
        def preprocess(index, data):
            image = imaging.decode_grayscale(data)
            return index, imaging.resize_pad(image, height, width), tf.shape(image)[:2]

        self._preprocess = preprocess

    def __call__(
        self, pairs: Iterable[tuple[Sample, bytes]]
    ) -> Iterator[tuple[Sample, bytes | None, str | None, tuple[int, int]]]:
        """-> (sample, serialized example or None, drop reason, original (height, width)) per item; the
        written ones in stream order."""
        import tensorflow as tf

        pending: deque[tuple[int, Sample]] = deque()  # sent to the map, in order (appended by the feed thread)
        refused: deque[tuple[Sample, str]] = deque()  # not even an image: never reach TensorFlow

        failed: list[Exception] = []  # the stream's own error (a broken archive), raised here, not swallowed

        def feed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            indices: list[int] = []
            chunk: list[bytes] = []
            try:
                for i, (sample, data) in enumerate(pairs):
                    if not data:
                        refused.append((sample, "empty_image"))
                    elif imaging.sniff_format(data) is None:
                        refused.append((sample, "not_an_image"))
                    else:
                        pending.append((i, sample))
                        indices.append(i)
                        chunk.append(data)
                        if len(chunk) == CHUNK:
                            yield np.array(indices, np.int64), np.array(chunk, object)
                            indices, chunk = [], []
            except Exception as e:  # handed to the consuming thread as it is
                failed.append(e)
            if chunk:
                yield np.array(indices, np.int64), np.array(chunk, object)

        signature = (tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string))
        ds = tf.data.Dataset.from_generator(feed, output_signature=signature).prefetch(1).unbatch()
        # `parallel` threads do TensorFlow's work; four images in flight per thread keep them busy while one
        # slow image holds up the (deterministic) order, and while the feed reads the next chunk.
        ds = ds.map(self._preprocess, num_parallel_calls=4 * self.parallel, deterministic=True).ignore_errors()
        options = tf.data.Options()
        options.threading.private_threadpool_size = self.parallel
        # No autotuning thread: every size here is fixed, and dropping the iterator at the end waited for that
        # thread's next wake-up, 0 to 2.5 s on the full benchmark set (as train's stream, inputs.py), as much
        # as converting the quick set's images takes.
        options.autotune.enabled = False
        ds = ds.batch(CHUNK).prefetch(2).with_options(options)
        for indices, canvases, sizes in ds.as_numpy_iterator():
            for i, canvas, size in zip(indices, canvases, sizes):
                yield from _drain(refused)
                while pending[0][0] != i:  # sent before i and not come out: TensorFlow could not decode it
                    yield pending.popleft()[1], None, "corrupt_image", (0, 0)
                sample = pending.popleft()[1]
                size = (int(size[0]), int(size[1]))
                if not canvas.any():
                    yield sample, None, "blank_image", size
                else:
                    yield sample, tfrecords.serialize(sample.id, sample.writer, sample.text, canvas), None, size
        if failed:
            raise failed[0]
        yield from _drain(refused)
        while pending:
            yield pending.popleft()[1], None, "corrupt_image", (0, 0)


def _drain(refused: deque[tuple[Sample, str]]) -> Iterator[tuple[Sample, None, str, tuple[int, int]]]:
    while refused:
        sample, reason = refused.popleft()
        yield sample, None, reason, (0, 0)


@dataclass
class ConversionResult:
    written: dict[str, str]  # sample id -> shard file name
    sizes: dict[str, tuple[int, int]]  # sample id -> original (height, width)
    dropped: Counter
    seconds: float
    previews: dict[str, list[tuple[str, np.ndarray]]]  # split -> a few (text, canvas) for the sample grid


def convert(
    archive: Path,
    samples: list[Sample],
    shard_counts: dict[str, int],
    height: int,
    width: int,
    out_dir: Path,
    workers: int = 0,
    progress: bool = True,
    previews: int = 16,
) -> ConversionResult:
    """Stream `archive`, preprocess every planned sample on `workers` threads (0 = all cores), write shards."""
    import tensorflow as tf

    from steps.workflow.progress import bar as tqdm  # one redrawn line in a terminal, whole lines in a log

    workers = workers or os.cpu_count() or 1
    by_id = {s.id: s for s in samples}
    files = {(name, i): tfrecords.shard_name(name, i, n) for name, n in shard_counts.items() for i in range(n)}
    writers = {key: tf.io.TFRecordWriter(str(out_dir / name)) for key, name in files.items()}
    result = ConversionResult({}, {}, Counter(), 0.0, defaultdict(list))
    pairs = ((by_id[i], data) for i, data in iam_format.iter_images(archive, set(by_id)))
    start = time.perf_counter()
    bar = tqdm(total=len(samples), desc="preprocess", unit="img", disable=not progress, mininterval=1.0)
    shown: dict[str, list[tuple[str, bytes]]] = defaultdict(list)  # the records the sample grids show
    try:
        for sample, record, reason, size in StreamConverter(height, width, workers)(pairs):
            bar.update(1)
            if record is None:
                result.dropped[reason] += 1
                continue
            writers[(sample.split, sample.shard)].write(record)
            result.written[sample.id] = files[(sample.split, sample.shard)]
            result.sizes[sample.id] = size
            if len(shown[sample.split]) < previews:
                shown[sample.split].append((sample.text, record))
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    # Parsed back from the written bytes, all in one call: one at a time they cost ~1 ms each of this thread.
    for split, items in shown.items():
        images = tfrecords.parse_many(tf.constant([r for _, r in items]), height, width)["image"].numpy()
        result.previews[split] = [(text, image) for (text, _), image in zip(items, images)]
    result.seconds = time.perf_counter() - start
    result.dropped["missing_image"] = len(samples) - len(result.written) - sum(result.dropped.values())
    return result
