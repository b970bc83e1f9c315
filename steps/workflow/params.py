"""Parameter values checked before any work: each parameter's type (from MLproject) and range (the table here),
then the combinations that cannot work (ratios that leave a split empty, a canvas too small for the model).

One function, `check(values_by_step)`, serves `main` (every step at once, before download starts) and each step
run alone (`runs.start_step` calls it with that step's values). A combination rule runs when all the values it
reads are known: `main` knows them all; a step alone knows its own (train alone checks its canvas against the
dataset once it has it, in training/fit.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

from steps.workflow import config


class ParamError(ValueError):
    """A parameter value that cannot work; the message names the parameter and the fix."""


@dataclass(frozen=True)
class Rule:
    """What a value must be, beyond its MLproject type: bounds (inclusive unless open), a format, or choices."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    form: str = ""  # "ints": comma-separated positive integers; "bool": true/false
    choices: tuple[str, ...] = ()

    def describe(self, kind: str) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) if not c else c for c in self.choices)
        if self.form == "ints":
            return "comma-separated positive integers like 32,64"
        if self.form == "bool":
            return "true or false"
        what = {"int": "an integer", "float": "a number"}.get(kind, "a value")
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return what + (" " + " and ".join(bounds) if bounds else "")


POSITIVE = Rule(low=1)
RATIO = Rule(low=0, high=1, low_open=True, high_open=True)
BOOL = Rule(form="bool")
INTS = Rule(form="ints")

# Ranges by parameter name (a name means the same in every step that declares it); types come from MLproject.
RULES: dict[str, Rule] = {
    "num_words": POSITIVE,
    "num_writers": POSITIVE,
    "seed": Rule(low=0, high=2**32 - 1),
    "split": Rule(choices=("writer", "random")),
    "train_ratio": RATIO,
    "val_ratio": Rule(low=0, high=1, high_open=True),
    "image_height": Rule(low=8, high=512),
    "image_width": Rule(low=8, high=4096),
    "max_label_length": POSITIVE,
    "level": Rule(choices=tuple(config.LEVELS)),
    "line_height": Rule(low=8, high=512),
    "line_width": Rule(low=8, high=8192),
    "max_line_length": POSITIVE,
    "num_lines": POSITIVE,
    "keep_err": BOOL,
    "shard_size": POSITIVE,
    "workers": Rule(low=0),
    "batch_size": POSITIVE,
    "epochs": POSITIVE,
    "learning_rate": Rule(low=0, low_open=True),
    "patience": Rule(low=0),
    "min_epoch_steps": POSITIVE,
    "augment": BOOL,
    "conv_filters": INTS,
    "width_pools": Rule(low=0),
    "column_pool": BOOL,
    "dense_units": POSITIVE,
    "rnn_units": INTS,
    "dropout": Rule(low=0, high=1, high_open=True),
    "shortcut": Rule(low=0),
    "eval_split": Rule(choices=config.SPLITS),
    "beam_width": Rule(low=0, high=1000),
    "max_cer": Rule(low=0),
    "rerun_from": Rule(choices=("", "download", "preprocess", "train", "evaluate", "register")),
}


def _types(step: str) -> dict[str, str]:
    return {name: str(spec.get("type", "string")) for name, spec in config.entry_point(step).items()}


def parse(step: str, name: str, raw: object) -> object:
    """One value of one step's parameter, typed and range-checked; ParamError names it and the fix."""
    kind, rule = _types(step).get(name, "string"), RULES.get(name, Rule())
    text = str(raw).strip()
    default = config.defaults(step).get(name)

    def bad(got: str = "") -> ParamError:
        example = f", e.g. -P {name}={default}" if default not in (None, "") else ""
        return ParamError(
            f"{name}={raw!s}: {name} must be {rule.describe(kind)}{got}; set -P {name}=<{rule.describe(kind)}>{example}"
        )

    value: object = text
    if kind in ("int", "float"):
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            raise bad() from None
        if kind == "float" and not math.isfinite(value):
            raise bad()
    if rule.choices and text not in rule.choices:
        raise bad()
    if rule.form == "bool":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise bad()
        value = text.lower() in ("true", "1", "yes")
    if rule.form == "ints":
        try:
            value = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise bad() from None
        if not value or min(value) < 1:
            raise bad()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
            raise bad()
        if rule.high is not None and (value > rule.high or (rule.high_open and value == rule.high)):
            raise bad()
    return value


# ---------------------------------------------------------------- combinations


def _ratios(v: Mapping[str, object]) -> str | None:
    train, val = v["train_ratio"], v["val_ratio"]
    if train + val >= 1:
        return (
            f"train_ratio={train:g} + val_ratio={val:g} leaves nothing for the test split: keep their sum below 1 "
            "(e.g. -P train_ratio=0.75 -P val_ratio=0.15)"
        )
    return None


def _split_sizes(v: Mapping[str, object]) -> str | None:
    if v["dataset"] != "synthetic" or _ratios(v):
        return None
    need = 3 if v["val_ratio"] > 0 else 2  # the writer split gives each split a writer once there are enough
    if v["split"] == "writer" and v["num_writers"] < need:
        return (
            f"num_writers={v['num_writers']} cannot fill {need} writer-independent splits: "
            f"set -P num_writers={need} or more (or -P split=random)"
        )
    test = 1 - v["train_ratio"] - v["val_ratio"]
    for name, ratio in (("val", v["val_ratio"]), ("test", test)):
        if v["split"] == "random" and 0 < ratio and v["num_words"] * ratio < 1:
            return (
                f"num_words={v['num_words']} at a {name} ratio of {ratio:g} leaves the {name} split empty: "
                f"set -P num_words={math.ceil(1 / ratio)} or more"
            )
    return None


def _canvas(v: Mapping[str, object]) -> str | None:
    h_name, w_name, len_name = config.LEVELS[str(v["level"])].canvas_params  # words: image_*, lines: line_*
    blocks, pools, height, width = len(v["conv_filters"]), v["width_pools"], v[h_name], v[w_name]
    if pools > blocks:
        return (
            f"width_pools={pools} exceeds the {blocks} conv blocks of conv_filters: set -P width_pools={blocks} or less"
        )
    if height % 2**blocks:
        return (
            f"conv_filters has {blocks} blocks, each halving the height, too many for {h_name}={height}: "
            f"use a {h_name} divisible by {2**blocks} (e.g. -P {h_name}={max(1, height // 2**blocks) * 2**blocks}) "
            "or fewer conv_filters"
        )
    if width % 2**pools:
        return f"{w_name}={width} is not divisible by 2**width_pools={2**pools}: pick a multiple of {2**pools}"
    steps, longest = width // 2**pools, v[len_name]
    if steps < longest:
        return (
            f"{w_name}={width} gives {steps} time steps (width / 2**width_pools), fewer than the "
            f"{len_name}={longest} characters a label may have, and CTC needs one step per "
            f"character: set -P {w_name}={longest * 2**pools} or more, or lower {len_name}"
        )
    return None


def _batch(v: Mapping[str, object]) -> str | None:
    if v["dataset"] != "synthetic" or _ratios(v):
        return None
    count = "num_lines" if v.get("level") == "lines" else "num_words"
    about = int(v[count] * v["train_ratio"])
    if v["batch_size"] > about:
        return (
            f"batch_size={v['batch_size']} is larger than the about {about} training samples of {count}="
            f"{v[count]} at train_ratio={v['train_ratio']:g}: lower -P batch_size or raise -P {count}"
        )
    return None


# (names read, rule): each runs when every name it reads has a value
COMBINATIONS: tuple[tuple[tuple[str, ...], Callable[[Mapping[str, object]], str | None]], ...] = (
    (("train_ratio", "val_ratio"), _ratios),
    (("dataset", "split", "num_words", "num_writers", "train_ratio", "val_ratio"), _split_sizes),
    (
        ("conv_filters", "width_pools", "level", *(n for lv in config.LEVELS.values() for n in lv.canvas_params)),
        _canvas,
    ),
    (("dataset", "num_words", "num_lines", "train_ratio", "val_ratio", "batch_size"), _batch),
)


def check(values_by_step: Mapping[str, Mapping[str, object]]) -> None:
    """Check every value of every step given, then every combination whose values are all known.

    A name declared by several steps (seed, train_ratio) is read, for combinations, from the first step given
    that declares it (the one upstream, whose value shaped the data).
    """
    typed: dict[str, object] = {}
    for step, values in values_by_step.items():
        declared = config.entry_point(step)  # main's pass-through values are checked by the steps they reach
        for name, raw in values.items():
            if name in declared:
                typed.setdefault(name, parse(step, name, raw))
    for names, rule in COMBINATIONS:
        if all(n in typed for n in names) and (why := rule(typed)):
            raise ParamError(why)


def effective(step: str, given: Mapping[str, object]) -> dict[str, object]:
    """A step's values as it will run: its MLproject defaults overridden by `given`."""
    return {**config.defaults(step), **given}
