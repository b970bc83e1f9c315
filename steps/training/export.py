"""Export a trained network as the inference model: one SavedModel holding preprocessing, network and decoding,
logged as the pyfunc model `handwriting_recognition_model` (see steps/inference/recognizer.py).

The logged model carries only `steps/inference` as its code: staged as `steps/inference` under a folder with
no `steps/__init__.py`, so in a process of its own `steps` is a namespace package holding just the inference
code, while in ours the repository's regular `steps` package still wins (a namespace portion earlier on
sys.path never shadows a regular package later on it). No sys.path repair is needed anywhere.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

from steps.dataset.info import DatasetInfo
from steps.dataset.reader import records
from steps.inference import ctc, imaging
from steps.inference.calibration import Calibration, isotonic
from steps.inference.charset import Charset
from steps.inference.recognizer import CALIBRATION, CHARSET, LITE, SAVED_MODEL, HandwritingModel
from steps.training import lite
from steps.training import model as modelib
from steps.workflow import config

INFERENCE_PACKAGE = config.ROOT / "steps" / "inference"
# What the model needs at inference, taken (pinned) from requirements.txt, the one pin list.
RUNTIME_PACKAGES = {
    "tensorflow-cpu",
    "tensorflow-io",
    "keras",
    "mlflow",
    "numpy",
    "pandas",
    "pillow",
    "protobuf",
    "pyarrow",
}


def save(
    model: tf.keras.Model, charset: Charset, calibration: Calibration, height: int, width: int, out_dir: Path
) -> Path:
    """Write the SavedModel, charset.json and calibration.json into `out_dir` (the pyfunc model's artifacts;
    save_lite adds the network as TensorFlow Lite).

    Endpoints: preprocess (bytes -> canvas), logits (canvases -> logits), recognize_canvas
    (canvases -> text, raw score), recognize (bytes [B] -> text, raw score; also serving_default)
    and charset. The raw score becomes the confidence through calibration.json, applied by the
    pyfunc model (steps/inference/recognizer.py). keras.export.ExportArchive tracks every Keras variable (a plain tf.Module misses
    Keras 3's seed-generator state).
    """
    import keras

    out_dir.mkdir(parents=True, exist_ok=True)
    chars = tf.constant(list(charset.characters), tf.string)
    canvas_spec = tf.TensorSpec([None, height, width, 1], tf.uint8)

    def preprocess(image):
        return imaging.preprocess_bytes(image, height, width)

    def logits(canvas):
        return modelib.read_canvases(model, canvas)

    def recognize_canvas(canvas):
        text, score = ctc.decode(logits(canvas), chars)
        return {"text": text, "score": score}

    def recognize(images):
        canvas = tf.map_fn(preprocess, images, fn_output_signature=tf.TensorSpec([height, width, 1], tf.uint8))
        return recognize_canvas(canvas)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("preprocess", preprocess, [tf.TensorSpec([], tf.string)])
    archive.add_endpoint("logits", logits, [canvas_spec])
    archive.add_endpoint("recognize_canvas", recognize_canvas, [canvas_spec])
    archive.add_endpoint("serve", recognize, [tf.TensorSpec([None], tf.string)])
    archive.add_endpoint("charset", lambda: chars, [])
    archive.write_out(str(out_dir / SAVED_MODEL), verbose=False)
    charset.save(out_dir / CHARSET)
    calibration.save(out_dir / CALIBRATION)
    return out_dir


def check_canvases(info: DatasetInfo, count: int = 64) -> np.ndarray:
    """Up to `count` canvases of a dataset to check an exported network on: validation words, else training words."""
    split = "val" if info.samples.get("val") else "train"
    batch = next(iter(records(info, split).batch(count).take(1)), None)
    return batch["image"].numpy() if batch else np.zeros((0, info.image_height, info.image_width, 1), np.uint8)


def save_lite(model: tf.keras.Model, canvases: np.ndarray, out_dir: Path) -> str:
    """Write the network as TensorFlow Lite into `out_dir` if lite.convert takes it and its logits on
    `canvases` (uint8 [N, H, W, 1], validation words) are the Keras model's to lite.MAX_LOGIT_DIFFERENCE;
    -> what happened, for the run's log."""
    if not len(canvases):
        return "the network stays TensorFlow only: no canvases to check a TensorFlow Lite copy on"
    try:
        blob = lite.convert(model)
        difference = lite.check(blob, model, canvases)
    except lite.LiteUnsupported as e:
        return f"the network stays TensorFlow only: {e}"
    except Exception as e:  # the converter's own failures: the Lite copy is optional, the trained model is not
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        return f"the network stays TensorFlow only: converting it failed ({type(e).__name__}: {reason})"
    if not difference <= lite.MAX_LOGIT_DIFFERENCE:  # (NaN too)
        return f"the network stays TensorFlow only: its TensorFlow Lite copy's logits differ by {difference:.2g}"
    (out_dir / LITE).write_bytes(blob)
    return f"the network is also TensorFlow Lite ({len(blob) / 1e6:.1f} MB; logits within {difference:.1g} on {len(canvases)} words)"


def calibrate(model: tf.keras.Model, canvases: tf.data.Dataset, charset: Charset) -> Calibration:
    """Fit the confidence calibration on validation examples ({text, image} batches): raw score -> P(exact)."""
    chars = tf.constant(list(charset.characters), tf.string)
    read = tf.function(lambda images: ctc.decode(modelib.read_canvases(model, images), chars))
    scores, correct = [], []
    for batch in canvases:
        texts, raw = read(batch["image"])
        scores.extend(raw.numpy().tolist())
        correct.extend(t == r for t, r in zip(texts.numpy(), batch["text"].numpy()))
    return isotonic(scores, correct)


def runtime_requirements() -> list[str]:
    """The pinned packages the model needs at inference, taken from requirements.txt (the one pin list)."""
    lines = (config.ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.split("==")[0].strip().lower() in RUNTIME_PACKAGES]


def example_png(canvas: np.ndarray) -> bytes:
    """A canvas as a dark-on-light PNG (what a user would upload), for the model's input example."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(255 - canvas[..., 0]).save(buf, "PNG")
    return buf.getvalue()


def metadata(info) -> dict:
    """What the logged model says about what it reads (serve's /version and register read it): level and canvas."""
    return {"level": info.level, "image_height": info.image_height, "image_width": info.image_width}


def log_model(artifacts_dir: Path, example: bytes, name: str, meta: dict) -> mlflow.models.model.ModelInfo:
    """Log the exported model as a pyfunc model of the active run, with signature, input example and its code."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("string", "text"), ColSpec("double", "confidence")]),
        params=ParamSchema([ParamSpec("beam_width", "long", 0)]),
    )
    with tempfile.TemporaryDirectory(prefix="hwr-code-") as stage:
        code = Path(stage) / "steps"  # no __init__.py here, on purpose (see the module docstring)
        shutil.copytree(INFERENCE_PACKAGE, code / "inference", ignore=shutil.ignore_patterns("__pycache__"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=HandwritingModel(),
            artifacts={
                name: str(artifacts_dir / name)
                for name in (SAVED_MODEL, CHARSET, CALIBRATION, LITE)
                if (artifacts_dir / name).exists()
            },
            code_paths=[str(code)],
            signature=signature,
            input_example=pd.DataFrame({"image": [example]}),
            pip_requirements=runtime_requirements(),
            metadata=meta,
        )
