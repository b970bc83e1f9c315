"""The description of a preprocessed dataset, read once: what train, evaluate and the benchmarks need to know.

`data_dir` may be a local path or any URI tf.io.gfile reads (s3://, gs://, hdfs://, az:// through
tensorflow-io), so remote data is described and streamed, never copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from steps.inference.charset import Charset
from steps.workflow import config


class DatasetError(ValueError):
    """A dataset directory that is missing files or is inconsistent."""


@dataclass(frozen=True)
class DatasetInfo:
    """stats.json and charset.json of a dataset/ folder, typed."""

    data_dir: str
    image_height: int
    image_width: int
    max_label_length: int
    samples: dict[str, int]  # split -> number of samples
    writers: dict[str, int]  # split -> number of distinct writers
    shards: dict[str, int]  # split -> number of shard files
    digest: str  # content digest of shards + charset: equal digests, same data
    split_method: str
    charset: Charset
    level: str = "words"  # datasets made before lines existed are word datasets

    @property
    def charset_size(self) -> int:
        """Characters in the charset (the model has one more output, the blank)."""
        return len(self.charset.characters)

    @classmethod
    def load(cls, data_dir: str) -> "DatasetInfo":
        stats = _read(data_dir, config.STATS_FILE)
        charset = Charset.from_json(_read_text(data_dir, config.CHARSET_FILE))  # CharsetError if malformed
        try:
            # writers, shards, digest and split method are descriptive: older or hand-made datasets may lack them
            info = cls(
                data_dir.rstrip("/"),
                int(stats["image_height"]),
                int(stats["image_width"]),
                int(stats["max_label_length"]),
                dict(stats["samples"]),
                dict(stats.get("writers", {})),
                dict(stats.get("shards", {})),
                str(stats.get("digest", "")),
                str(stats.get("split_method", "")),
                charset,
                str(stats.get("level", "words")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{config.STATS_FILE} of {data_dir} is incomplete ({e}): preprocess it again") from None
        if info.charset_size != stats.get("charset_size", info.charset_size):
            raise DatasetError(
                f"{config.STATS_FILE} and {config.CHARSET_FILE} of {data_dir} disagree on the charset size"
            )
        return info


def _read_text(data_dir: str, name: str) -> str:
    import tensorflow as tf  # gfile reads s3://, gs://, hdfs://...; imported late so step CLIs start fast

    path = f"{data_dir.rstrip('/')}/{name}"
    if not tf.io.gfile.exists(path):
        raise DatasetError(f"{name} not found in {data_dir}: `data` must be a preprocess run's dataset/ folder")
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def _read(data_dir: str, name: str) -> dict:
    try:
        return json.loads(_read_text(data_dir, name))
    except ValueError as e:
        raise DatasetError(f"{name} in {data_dir} is not valid JSON ({e}): preprocess it again") from None
