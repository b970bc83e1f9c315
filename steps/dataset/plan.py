"""Planning a dataset from the word (or line) list alone: filters, writer-independent split, charset, shard assignment.

Every decision is made and counted before a single image is decoded.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

from steps.dataset import splits
from steps.dataset.iam_format import Line, Word
from steps.dataset.info import DatasetError
from steps.inference.charset import Charset
from steps.workflow import config


@dataclass(frozen=True)
class PreprocessConfig:
    """What a preprocess run computes; no defaults here (they are preprocess's MLproject parameters)."""

    level: str  # words | lines (config.LEVELS)
    split: str  # writer | random
    train_ratio: float
    val_ratio: float
    seed: int
    image_height: int  # the level's canvas (from its config.LEVELS canvas_params)
    image_width: int
    max_label_length: int
    keep_err: bool  # keep words.txt lines flagged err
    shard_size: int
    workers: int  # 0 = all cores

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> "PreprocessConfig":
        """From preprocess's parameters as MLproject and `mlflow run` spell them (every one needed).

        The canvas and label length are read from the parameters the level names in config.LEVELS.
        """
        level = str(params["level"])
        if level not in config.LEVELS:
            raise DatasetError(f"level must be one of {sorted(config.LEVELS)}, got {level!r}")
        height, width, length = config.LEVELS[level].canvas_params
        return cls(
            level=level,
            split=str(params["split"]),
            train_ratio=float(params["train_ratio"]),
            val_ratio=float(params["val_ratio"]),
            seed=int(params["seed"]),
            image_height=int(params[height]),
            image_width=int(params[width]),
            max_label_length=int(params[length]),
            keep_err=str(params["keep_err"]).strip().lower() in ("true", "1", "yes"),
            shard_size=int(params["shard_size"]),
            workers=int(params["workers"]),
        )


@dataclass(frozen=True)
class Sample:
    id: str
    writer: str
    text: str
    split: str
    shard: int


def plan(
    words: list[Word] | list[Line], writers: dict[str, str], cfg: PreprocessConfig
) -> tuple[list[Sample], Charset, Counter, dict[str, int]]:
    """Decide which words (or lines) go where -> (samples, charset, dropped counts by reason, shards per split).

    The charset is that of the training split; val/test words with characters outside it are
    dropped (a model can never emit them, and their loss cannot be computed) and counted.
    """
    if cfg.split not in splits.SPLIT_METHODS:
        raise DatasetError(f"split must be one of {splits.SPLIT_METHODS}, got {cfg.split!r}")
    dropped: Counter = Counter()
    kept = []
    for w in words:
        if not w.ok and not cfg.keep_err:
            dropped["err_flag"] += 1
        elif not w.text:
            dropped["empty_text"] += 1
        elif len(w.text) > cfg.max_label_length:
            dropped["too_long"] += 1
        else:
            kept.append(w)
    writer_of = {w.id: writers.get(w.form, w.form) for w in kept}
    units = [writer_of[w.id] if cfg.split == "writer" else w.id for w in kept]
    unit_split = splits.assign(units, cfg.train_ratio, cfg.val_ratio, cfg.seed)
    split_of = {w.id: unit_split[u] for w, u in zip(kept, units)}
    charset = Charset.from_texts(w.text for w in kept if split_of[w.id] == "train")
    if not charset.characters:
        raise DatasetError("the training split is empty: not enough usable words")
    by_split: dict[str, list[Word]] = defaultdict(list)
    for w in kept:
        if charset.covers(w.text):
            by_split[split_of[w.id]].append(w)
        else:
            dropped["out_of_charset"] += 1
    samples, shard_counts = [], {}
    rng = random.Random(cfg.seed)
    for name in config.SPLITS:
        members = by_split.get(name, [])
        count = max(1, math.ceil(len(members) / cfg.shard_size))
        shard_counts[name] = count
        # Shuffled round robin: each shard mixes writers, so a reader interleaving a few shards sees variety.
        order = list(range(len(members)))
        rng.shuffle(order)
        for rank, i in enumerate(order):
            w = members[i]
            samples.append(Sample(w.id, writer_of[w.id], w.text, name, rank % count))
    return samples, charset, dropped, shard_counts


def unseen_characters(texts: Iterable[str], charset: Charset) -> dict[str, int]:
    """Characters of `texts` missing from the (training split's) charset -> their counts, most frequent first.

    These are what a model trained on the split can never write; their val/test words are dropped.
    """
    known = set(charset.characters)
    counts = Counter(c for t in texts for c in t if c not in known)
    return dict(counts.most_common())
