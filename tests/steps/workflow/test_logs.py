"""Clean logs: with stderr going to a file, steps print whole lines (no carriage-return frames of progress bars)
and none of the known-harmless TensorFlow/Keras/MLflow lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from steps.workflow import config

# What a normal run printed before steps/workflow/quiet.py (and what must never come back). The `mlflow run`
# CLI's own "=== Created directory ... for downloading remote URIs" line is its process's, out of our reach.
HARMLESS = (
    "oneDNN",
    "tensorflow/core",  # TF C++ log lines: "I tensorflow/core/...", "E tensorflow/core/util/util.cc..."
    "shuffle=True` was passed",
    "Passing a Python object as `python_model`",
    "Validating input example",
    "Setuptools is replacing distutils",
    "triggered tf.function retracing",
    "Downloading artifacts",
    "has no artifacts at artifact path",
)


def _run_to_file(args: list[str], log: Path, env: dict[str, str]) -> str:
    with open(log, "w") as f:
        proc = subprocess.run(args, cwd=config.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=f, timeout=900)
    text = log.read_bytes().decode("utf-8", "replace")  # read_text() would turn a "\r" into "\n"
    assert proc.returncode == 0, text[-3000:]
    return text


def test_a_progress_bar_in_a_log_file_is_whole_lines(tmp_path):
    code = (
        "import time\n"
        "from steps.workflow import progress\n"
        "with progress.bar(total=30, desc='words', unit='word') as bar:\n"
        "    for _ in range(30):\n"
        "        time.sleep(0.02); bar.update(1)\n"
    )
    env = dict(os.environ, HWR_PROGRESS_SECONDS="0.2")
    text = _run_to_file([sys.executable, "-c", code], tmp_path / "log.txt", env)
    lines = text.splitlines()
    assert "\r" not in text
    assert 2 <= len(lines) <= 6 and all(line.startswith("words:") for line in lines)  # periodic, not per update
    assert lines[-1].startswith("words: 100%") and "30/30" in lines[-1]


def test_the_synthetic_samples_log_whole_lines_to_a_file(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from steps.sources import synthetic, synthetic_lines\n"
        "synthetic.generate(Path(sys.argv[1]) / 'w', 40, 3, 1)\n"
        "synthetic_lines.generate(Path(sys.argv[1]) / 'l', 12, 3, 1)\n"
    )
    env = dict(os.environ, HWR_PROGRESS_SECONDS="0.2")
    text = _run_to_file([sys.executable, "-c", code, str(tmp_path)], tmp_path / "log.txt", env)
    assert "\r" not in text
    assert "synthetic words: 100%" in text and "synthetic lines: 100%" in text


@pytest.mark.slow
def test_steps_logging_to_a_file_print_no_frames_and_no_harmless_warnings(mlflow_store, tmp_path):
    env = dict(os.environ, HWR_PROGRESS_SECONDS="1", TMPDIR=str(tmp_path))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    mlflow = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "--env-manager", "local"]
    text = ""
    for step, params in (
        ("download", ["num_words=240", "num_writers=8"]),
        ("preprocess", ["shard_size=60", "workers=1"]),
        (
            "train",
            ["epochs=1", "batch_size=8", "conv_filters=16,32", "rnn_units=32", "dense_units=32", "min_epoch_steps=1"],
        ),
        ("evaluate", ["beam_width=2"]),
    ):
        args = mlflow + ["-e", step, "--storage-dir", str(tmp_path / "storage")]
        for p in params:
            args += ["-P", p]
        text += _run_to_file(args, tmp_path / f"{step}.log", env)
    assert "\r" not in text
    found = [h for h in HARMLESS if h in text]
    assert found == [], [line for line in text.splitlines() if any(h in line for h in found)][:10]
    assert "synthetic words: 100%" in text and "preprocess: 100%" in text  # progress is still reported
    assert "epoch 1: step " in text  # a line within the epoch
