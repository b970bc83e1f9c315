"""Clean step logs: the known-harmless lines TensorFlow, Keras and MLflow print in a normal run, silenced at the
source, each with the reason it does not apply. Installed by `steps/__init__.py`, before any step imports them.

Found by reading what `mlflow run . -e main` of a tiny configuration prints (README, "Logs"); anything not
listed here still shows, so a new warning is noticed.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (logger, a piece of the message, why it is harmless here)
HARMLESS_LOGS = (
    (
        "mlflow.pyfunc",
        "Passing a Python object as `python_model`",
        "the model class is our own code, shipped with the model (training/export.py): no foreign pickle",
    ),
    ("mlflow.pyfunc", "Validating input example against model signature", "a progress note, not a finding"),
    (
        "mlflow.projects.utils",
        "for downloading remote URIs passed to arguments of type 'path'",
        "an empty storage directory for 'path' parameters, of which no step has any",
    ),
    (
        "mlflow.tracking._model_registry.fluent",
        "registering model based on models:/m-",
        "MLflow 3 keeps a model as a LoggedModel, not under the run's artifacts: runs:/ resolves to it as meant",
    ),
    ("tensorflow", "triggered tf.function retracing", "the recognizer traces once per batch shape, by design"),
)

HARMLESS_WARNINGS = (
    # Keras says the dataset must be shuffled by itself: it is (training/inputs.py shuffles the train split).
    (r"`shuffle=True` was passed, but will be ignored", UserWarning),
    # Setuptools' distutils shim, imported by dependencies: nothing of ours uses distutils.
    (r"Setuptools is replacing distutils", UserWarning),
)


class _Drop(logging.Filter):
    def __init__(self, pieces: tuple[str, ...]):
        super().__init__()
        self.pieces = pieces

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(piece in message for piece in self.pieces)


def install() -> None:
    """Silence the known-harmless lines; idempotent. Users can raise TF's C++ log level back (TF_CPP_MIN_LOG_LEVEL)."""
    # TF's C++ INFO/WARNING lines (CPU features, rendezvous aborts on a skipped corrupt image) and the oneDNN
    # "supports DT_BOOL only on platforms with AVX-512" line, which TF logs at ERROR although it only falls back
    # to Eigen. Real failures still reach us: TF raises them as Python exceptions with the message.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow Lite's, its converter's and XLA's lines ignore this level: steps/inference/lite.py takes the
    # known ones (HARMLESS_NATIVE_LINES) out of stderr around the calls that print them.
    if not sys.stderr.isatty():  # MLflow's artifact bars are \r frames in a log file; our own steps log sizes
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    by_logger: dict[str, list[str]] = {}
    for name, piece, _why in HARMLESS_LOGS:
        by_logger.setdefault(name, []).append(piece)
    for name, pieces in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(tuple(pieces)))
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
