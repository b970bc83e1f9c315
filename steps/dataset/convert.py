"""Conversion: stream the words archive once, preprocess every planned sample, write the TFRecord shards.

The images go through imaging's decode and resize_pad (the preprocessing the exported model runs too) in
a parallel tf.data map inside this process. What to convert was decided beforehand by plan.py.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from steps.dataset import iam_format, tfrecords
from steps.dataset.plan import Sample
from steps.inference import imaging

CHUNK = 256  # images per tf.data map: enough to keep every core busy, small enough to bound memory


class ChunkConverter:
    """Preprocesses chunks of (sample, encoded bytes) in this process, `parallel` images at a time.

    A tf.data map runs imaging's decode and resize_pad on TensorFlow's thread pool (the ops release the
    GIL), so all cores work without worker processes, which each spent 3-4 s importing TensorFlow. The
    map is deterministic, so the output order and bytes do not depend on `parallel`. A file TensorFlow
    cannot decode is dropped by ignore_errors and found missing by its index: corrupt, counted.
    """

    def __init__(self, height: int, width: int, parallel: int):
        import tensorflow as tf

        self.parallel = parallel

        def preprocess(index, data):
            image = imaging.decode_grayscale(data)
            return index, imaging.resize_pad(image, height, width), tf.shape(image)[:2]

        self._preprocess = preprocess

    def __call__(
        self, chunk: list[tuple[Sample, bytes]]
    ) -> list[tuple[Sample, bytes | None, str | None, tuple[int, int]]]:
        """-> (sample, serialized example or None, drop reason, original (height, width)) per item, in order."""
        import tensorflow as tf

        out: list = [None] * len(chunk)
        todo = []
        for i, (sample, data) in enumerate(chunk):
            if not data:
                out[i] = (sample, None, "empty_image", (0, 0))
            elif imaging.sniff_format(data) is None:
                out[i] = (sample, None, "not_an_image", (0, 0))
            else:
                todo.append(i)
        if todo:
            ds = tf.data.Dataset.from_tensor_slices((todo, [chunk[i][1] for i in todo]))
            ds = ds.map(self._preprocess, num_parallel_calls=self.parallel, deterministic=True).ignore_errors()
            for i, canvas, size in ds.as_numpy_iterator():
                sample = chunk[i][0]
                size = (int(size[0]), int(size[1]))
                if not canvas.any():
                    out[i] = (sample, None, "blank_image", size)
                else:
                    out[i] = (sample, tfrecords.serialize(sample.id, sample.writer, sample.text, canvas), None, size)
        return [o if o is not None else (chunk[i][0], None, "corrupt_image", (0, 0)) for i, o in enumerate(out)]


def _chunks(pairs: Iterable[tuple[Sample, bytes]], size: int) -> Iterator[list[tuple[Sample, bytes]]]:
    chunk = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
    """Stream `archive`, preprocess every planned sample `workers` at a time (0 = all cores), write shards."""
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
    results = map(ChunkConverter(height, width, workers), _chunks(pairs, CHUNK))
    try:
        for chunk in results:
            for sample, record, reason, size in chunk:
                bar.update(1)
                if record is None:
                    result.dropped[reason] += 1
                    continue
                writers[(sample.split, sample.shard)].write(record)
                result.written[sample.id] = files[(sample.split, sample.shard)]
                result.sizes[sample.id] = size
                if len(result.previews[sample.split]) < previews:
                    parsed = tfrecords.parse(tf.constant(record), height, width)
                    result.previews[sample.split].append((sample.text, parsed["image"].numpy()))
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    result.seconds = time.perf_counter() - start
    result.dropped["missing_image"] = len(samples) - len(result.written) - sum(result.dropped.values())
    return result
