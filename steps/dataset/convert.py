"""Conversion: stream the words archive once, preprocess every planned sample, write the TFRecord shards.

The images fan out to worker processes that run imaging.preprocess_bytes, the preprocessing the
exported model runs too. What to convert was decided beforehand by plan.py.
"""

from __future__ import annotations

import io
import multiprocessing as mp
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

_preprocess = None  # per-worker compiled preprocessing, built once by _init_worker


def _init_worker(height: int, width: int) -> None:
    global _preprocess
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # One TF thread per process: the processes are the parallelism, oversubscription only slows them.
    # With workers=1 this runs in the caller's process, where TF may already be initialised (then the
    # thread pools are fixed and setting them raises RuntimeError): keep them as they are.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    _preprocess = tf.function(
        lambda data: imaging.preprocess_bytes(data, height, width), input_signature=[tf.TensorSpec([], tf.string)]
    )


def _convert_chunk(chunk: list[tuple[Sample, bytes]]) -> list[tuple[Sample, bytes | None, str | None, tuple[int, int]]]:
    """Worker: (sample, encoded bytes) -> (sample, serialized example or None, drop reason, original size)."""
    from PIL import Image  # only for the original size; decoding itself is the TF implementation

    out = []
    for sample, data in chunk:
        if not data:
            out.append((sample, None, "empty_image", (0, 0)))
            continue
        if imaging.sniff_format(data) is None:
            out.append((sample, None, "not_an_image", (0, 0)))
            continue
        try:
            canvas = _preprocess(data).numpy()
            with Image.open(io.BytesIO(data)) as im:
                size = (im.height, im.width)
        except Exception:  # TF raises InvalidArgumentError and friends for truncated/corrupt files
            out.append((sample, None, "corrupt_image", (0, 0)))
            continue
        if not canvas.any():
            out.append((sample, None, "blank_image", size))
            continue
        out.append((sample, tfrecords.serialize(sample.id, sample.writer, sample.text, canvas), None, size))
    return out


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
    """Stream `archive`, preprocess every planned sample with `workers` processes (0 = all cores), write shards."""
    import tensorflow as tf
    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    by_id = {s.id: s for s in samples}
    files = {(name, i): tfrecords.shard_name(name, i, n) for name, n in shard_counts.items() for i in range(n)}
    writers = {key: tf.io.TFRecordWriter(str(out_dir / name)) for key, name in files.items()}
    result = ConversionResult({}, {}, Counter(), 0.0, defaultdict(list))
    pairs = ((by_id[i], data) for i, data in iam_format.iter_images(archive, set(by_id)))
    start = time.perf_counter()
    bar = tqdm(total=len(samples), desc="preprocess", unit="img", disable=not progress, mininterval=1.0)
    if workers == 1:
        _init_worker(height, width)
        pool, results = None, map(_convert_chunk, _chunks(pairs, 64))
    else:
        # spawn, not fork: forking a process that has TF loaded can deadlock its thread pools.
        pool = mp.get_context("spawn").Pool(workers, _init_worker, (height, width))
        results = pool.imap(_convert_chunk, _chunks(pairs, 64), chunksize=1)
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
        if pool is not None:
            pool.terminate()
    result.seconds = time.perf_counter() - start
    result.dropped["missing_image"] = len(samples) - len(result.written) - sum(result.dropped.values())
    return result
