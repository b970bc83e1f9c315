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
from steps.evaluation import metrics
from steps.inference import ctc, imaging
from steps.inference.calibration import Calibration, isotonic
from steps.inference.charset import Charset
from steps.inference.lite import LiteNetwork
from steps.inference.recognizer import CALIBRATION, CHARSET, LITE, SAVED_MODEL, HandwritingModel
from steps.training import lite
from steps.training import model as modelib
from steps.workflow import config

# How much higher a validation CER the network with int8 weights may have than with float weights, and still ship:
# 0.002, or 2% of the float CER when that is more. int8 weights change a few readings either way (README,
# "Performance": 6-9 of ~800 validation words on the sample), more in a model that is still unsure of many words.
MAX_INT8_CER_LOSS = 0.002
MAX_INT8_CER_LOSS_RELATIVE = 0.02
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


def check_words(info: DatasetInfo, count: int = 2000) -> tuple[np.ndarray, list[str]]:
    """Up to `count` labelled canvases (uint8 [N, H, W, 1], texts) to weigh int8 weights on: validation words,
    else training words."""
    split = "val" if info.samples.get("val") else "train"
    images, texts = [np.zeros((0, info.image_height, info.image_width, 1), np.uint8)], []
    for batch in records(info, split).take(count).batch(256):
        images.append(batch["image"].numpy())
        texts += [t.decode("utf-8") for t in batch["text"].numpy()]
    return np.concatenate(images), texts


def greedy_cer(blob: bytes, canvases: np.ndarray, texts: list[str], characters: tuple[str, ...]) -> float:
    """The CER of a Lite network's greedy readings of `canvases` against `texts`."""
    read, _ = ctc.greedy_numpy(LiteNetwork(blob).logits(canvases), characters)
    return metrics.error_rates(texts, read)["cer"]


def int8_allowance(float_cer: float) -> float:
    """How much higher a validation CER than `float_cer` the network with int8 weights may have and still ship."""
    return max(MAX_INT8_CER_LOSS, MAX_INT8_CER_LOSS_RELATIVE * float_cer)


def save_int8_weights(
    model: tf.keras.Model, canvases: np.ndarray, texts: list[str], characters: tuple[str, ...], out_dir: Path
) -> tuple[str, dict[str, float]]:
    """Replace the float Lite network that save_lite wrote into `out_dir` by one with int8 weights (faster where
    the CPU has int8 dot products: lite.to_lite) when its greedy CER on the labelled `canvases` is at most int8_allowance above
    the float network's -> (what happened, for the run's log; both CERs, as metrics)."""
    keeps = "the TensorFlow Lite network keeps float weights"
    if not len(canvases):
        return f"{keeps}: no labelled words to check int8 weights on", {}
    try:
        blob = lite.convert(model, int8_weights=True)
    except Exception as e:  # the float network is shipped already: int8 weights are only faster
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        return f"{keeps}: converting with int8 weights failed ({type(e).__name__}: {reason})", {}
    float_cer = greedy_cer((out_dir / LITE).read_bytes(), canvases, texts, characters)
    int8_cer = greedy_cer(blob, canvases, texts, characters)
    figures = {"lite_float_check_cer": float_cer, "lite_int8_check_cer": int8_cer}
    compared = f"CER {int8_cer:.4f} with them against {float_cer:.4f} on {len(texts)} validation words"
    allowed = int8_allowance(float_cer)
    if not int8_cer <= float_cer + allowed:  # (NaN too)
        return f"{keeps}: int8 weights read worse ({compared}, {allowed:.4f} more allowed)", figures
    (out_dir / LITE).write_bytes(blob)
    return f"the TensorFlow Lite network has int8 weights ({len(blob) / 1e6:.1f} MB; {compared})", figures


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


def calibrate(
    model: tf.keras.Model, canvases: tf.data.Dataset, charset: Charset, network: LiteNetwork | None = None
) -> Calibration:
    """Fit the confidence calibration on validation examples ({text, image} batches): raw score -> P(exact).

    The raw scores are those of the network the model ships: its Lite copy when there is one (`network`, whose
    int8 weights move the scores a little), else the Keras model's."""
    chars = tf.constant(list(charset.characters), tf.string)
    read = tf.function(lambda images: ctc.decode(modelib.read_canvases(model, images), chars))
    scores, correct = [], []
    for batch in canvases:
        if network is not None:
            texts, raw = ctc.greedy_numpy(network.logits(batch["image"].numpy()), charset.characters)
            texts = [t.encode("utf-8") for t in texts]
        else:
            texts, raw = (t.numpy() for t in read(batch["image"]))
        scores.extend(np.asarray(raw).tolist())
        correct.extend(t == r for t, r in zip(texts, batch["text"].numpy()))
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
