"""Names shared by every step, declared once, and the parameter defaults read from MLproject.

Parameter defaults are not written here: they live in MLproject, and `defaults(entry_point)` reads them
so that a step's CLI and `mlflow run` can never disagree. Artifact and file names are spelled only here.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data"

# Artifact names: the only place these strings are spelled.
RAW_ARTIFACT = "raw"  # download -> preprocess
DOWNLOAD_INFO = "download.json"
DATASET_ARTIFACT = "dataset"  # preprocess -> train/evaluate
MODEL_ARTIFACT = "handwriting_recognition_model"  # train -> evaluate/register/serve/infer
PREDICTIONS_FILE = "predictions.parquet"

# Canonical raw layout, whatever the source: IAM's words.txt plus the words archive untouched
# (members like a01/a01-000u/a01-000u-00-00.png), read in place by preprocess.
WORDS_TXT = "words.txt"
WORDS_ARCHIVE = "words.tgz"
FORMS_TXT = "forms.txt"  # optional: form id -> writer id (official IAM ascii.tgz, synthetic)
# Lines: IAM's lines.txt (`a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop`) and lines.tgz with members
# like lines/a01/a01-000u/a01-000u-00.png, beside the same forms.txt.
LINES_TXT = "lines.txt"
LINES_ARCHIVE = "lines.tgz"

# Files inside dataset/.
CHARSET_FILE = "charset.json"
MANIFEST_FILE = "manifest.parquet"
STATS_FILE = "stats.json"
SPLITS = ("train", "val", "test")
# What a training process sets before it imports TensorFlow (steps/train.py; the benchmarks' training
# phases). TensorFlow turns oneDNN's CPU kernels on by default only on CPUs with AVX-512 VNNI, BF16 or AMX;
# on an AVX2-only CPU it computes with Eigen's, and oneDNN's trained the default model 1.2-1.35x faster per
# step (README, "Performance"). Serving keeps TensorFlow's default: oneDNN was slower at batch 1 there.
TRAINING_ENV = {"TF_ENABLE_ONEDNN_OPTS": "1"}
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"

# Tags that the pipeline's run cache and lineage rely on.
TAG_CODE_DIGEST = "hwr.code_digest"
TAG_STEP = "hwr.step"
TAG_PID = "hwr.pid"  # the process that runs the step, and its host: a RUNNING run whose process is gone is stale
TAG_HOST = "hwr.host"
TAG_PARENT_MODEL = "hwr.parent_model"  # train -P init_model: the model it was fine-tuned from (also on the version)


@dataclass(frozen=True)
class Level:
    """What a level of text (words, lines) changes, as data: its raw files, its canvas parameters, its model name."""

    text_file: str  # the transcription list in raw/
    archive: str  # the image archive in raw/
    canvas_params: tuple[str, str, str]  # preprocess's parameters holding its canvas height, width, max label length
    model_suffix: str  # appended to register's model_name, so word and line models never share a registered model
    unit: str  # what one sample is called in logs and plots: "word", "line"
    windowed: bool  # the model reads each batch in the window its ink needs, not the whole canvas (inputs.py)


LEVELS = {
    "words": Level(WORDS_TXT, WORDS_ARCHIVE, ("image_height", "image_width", "max_label_length"), "", "word", False),
    "lines": Level(LINES_TXT, LINES_ARCHIVE, ("line_height", "line_width", "max_line_length"), "-lines", "line", True),
}

# Default IAM sources.
IAM_MIRROR_URL = "https://github.com/sayakpaul/Handwriting-Recognizer-in-Keras/releases/download/v1.0.0/IAM_Words.zip"
IAM_OFFICIAL_BASE = "https://fki.tic.heia-fr.ch/DBs/iamDB/data/"


@functools.cache
def _mlproject() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())


def entry_point(name: str) -> dict[str, dict]:
    """The MLproject parameter declarations of one entry point: {name: {type, default}}."""
    return _mlproject()["entry_points"][name].get("parameters", {}) or {}


def defaults(step: str) -> dict[str, object]:
    """Parameter defaults of one MLproject entry point (parameters without a default are omitted)."""
    params = entry_point(step)
    return {name: spec["default"] for name, spec in params.items() if "default" in spec}


def parameters(entry_point: str) -> list[str]:
    """Names of the parameters an entry point declares."""
    return list(_mlproject()["entry_points"][entry_point].get("parameters", {}))


# The registry names are register's MLproject defaults; serve and infer default to the champion of that model.
REGISTERED_MODEL = str(defaults("register")["model_name"])
CHAMPION_ALIAS = str(defaults("register")["alias"])
CHAMPION_URI = f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}"


def registered_name(model_name: str, level: str) -> str:
    """The registered model a level's models go to: `HandwritingRecognitionModel`, `...-lines`."""
    return model_name + LEVELS[level].model_suffix


def champion_uri(level: str) -> str:
    """What serve and infer load by default for a level: the champion of that level's registered model."""
    return f"models:/{registered_name(REGISTERED_MODEL, level)}@{CHAMPION_ALIAS}"


def cache_dir() -> Path:
    """Where downloads and resumable training state are kept: $HWR_CACHE_DIR, else ~/.cache/handwriting-recognition."""
    return Path(os.environ.get("HWR_CACHE_DIR") or Path.home() / ".cache" / "handwriting-recognition")


def code_digest() -> str:
    """sha256 over the code that defines what a step computes (steps/**, pipeline.py, MLproject).

    Finer than the git commit: uncommitted edits change it too, and README edits do not.
    """
    h = hashlib.sha256()
    files = sorted(p for p in (ROOT / "steps").rglob("*") if p.suffix in (".py", ".html") and p.is_file())
    for f in files + [ROOT / "pipeline.py", ROOT / "MLproject"]:
        if f.exists():
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
