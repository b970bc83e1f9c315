"""The exported inference model: encoded image bytes in, text and confidence out.

A SavedModel holds the Keras network together with imaging.preprocess_bytes, the charset and
ctc.decode, so serve, infer and `mlflow models serve` run exactly the preprocessing and decoding
that training used. It is logged as a pyfunc model (`handwriting_recognition_model`) whose
artifacts are the SavedModel and charset.json; loading checks that the two agree.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Sequence

import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

from steps import ctc, imaging
from steps.charset import Charset, CharsetError

SAVED_MODEL = "saved_model"
CHARSET = "charset.json"
DEFAULT_MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs)


def save(model: tf.keras.Model, charset: Charset, height: int, width: int, out_dir: Path) -> Path:
    """Write the SavedModel and charset.json into `out_dir` (the pyfunc model's artifacts).

    Endpoints: preprocess (bytes -> canvas), logits (canvases -> logits), recognize_canvas
    (canvases -> text, confidence), recognize (bytes [B] -> text, confidence; also serving_default)
    and charset. keras.export.ExportArchive tracks every Keras variable (a plain tf.Module misses
    Keras 3's seed-generator state).
    """
    import keras

    out_dir.mkdir(parents=True, exist_ok=True)
    chars = tf.constant(list(charset.characters), tf.string)
    canvas_spec = tf.TensorSpec([None, height, width, 1], tf.uint8)

    def preprocess(image):
        return imaging.preprocess_bytes(image, height, width)

    def logits(canvas):
        return model(imaging.to_model_input(canvas), training=False)

    def recognize_canvas(canvas):
        text, confidence = ctc.decode(logits(canvas), chars)
        return {"text": text, "confidence": confidence}

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
    return out_dir


class HandwritingModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: a DataFrame with a binary column `image` -> columns `text`, `confidence`."""

    def load_context(self, context) -> None:
        self._load(Path(context.artifacts[SAVED_MODEL]), Path(context.artifacts[CHARSET]))

    def _load(self, saved_model: Path, charset_path: Path) -> None:
        # tensorflow-io registers its ops lazily; the SavedModel's TIFF branch needs IO>DecodeTiff loaded.
        from tensorflow_io.python.ops import core_ops

        core_ops.io_decode_tiff  # noqa: B018  (attribute access loads the op library)

        self.module = tf.saved_model.load(str(saved_model))
        self.charset = Charset.load(charset_path)
        embedded = tuple(c.decode("utf-8") for c in self.module.charset().numpy())
        if embedded != self.charset.characters:
            raise CharsetError(f"charset.json ({len(self.charset.characters)} characters) does not match the "
                               f"charset the model was trained with ({len(embedded)}): refusing to decode with it")
        self.characters = tf.constant(list(self.charset.characters), tf.string)

    def canvas(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Encoded bytes -> uint8 canvas, or ValueError saying why the bytes are not a usable image."""
        if not data:
            raise ValueError("empty file")
        fmt = imaging.sniff_format(data)
        if fmt is None:
            raise ValueError(f"not an image in a supported format ({', '.join(imaging.SUPPORTED_FORMATS)})")
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit below, with a clearer message
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except Exception:
            raise ValueError(f"corrupt {fmt} image") from None
        if width * height > max_pixels:
            raise ValueError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
        try:
            return self.module.preprocess(tf.constant(data)).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            raise ValueError(f"corrupt {fmt} image") from None

    def recognize_canvases(self, canvases: np.ndarray, beam_width: int = 0) -> list[tuple[str, float]]:
        """uint8 canvases [B, H, W, 1] -> [(text, confidence)]; greedy runs wholly inside the SavedModel."""
        if beam_width > 0:
            texts, conf = ctc.decode(self.module.logits(tf.constant(canvases)), self.characters, beam_width)
        else:
            out = self.module.recognize_canvas(tf.constant(canvases))
            texts, conf = out["text"], out["confidence"]
        return [(t.decode("utf-8"), float(c)) for t, c in zip(texts.numpy(), conf.numpy())]

    def recognize(self, images: Sequence[bytes], beam_width: int = 0,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict]:
        """Encoded images -> [{"text", "confidence"} or {"error"}], one entry per image, bad ones isolated."""
        results: list[dict] = [{} for _ in images]
        good, canvases = [], []
        for i, data in enumerate(images):
            try:
                canvases.append(self.canvas(bytes(data), max_pixels))
                good.append(i)
            except ValueError as e:
                results[i] = {"error": str(e)}
        if canvases:
            for i, (text, conf) in zip(good, self.recognize_canvases(np.stack(canvases), beam_width)):
                results[i] = {"text": text, "confidence": conf}
        return results

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        images = [v if isinstance(v, (bytes, bytearray)) else bytes(v) for v in model_input["image"]]
        results = self.recognize(images, int((params or {}).get("beam_width", 0)))
        bad = [f"row {i}: {r['error']}" for i, r in enumerate(results) if "error" in r]
        if bad:
            raise ValueError("; ".join(bad))
        return pd.DataFrame({"text": [r["text"] for r in results], "confidence": [r["confidence"] for r in results]})


def runtime_requirements() -> list[str]:
    """The pinned packages the model needs at inference, taken from requirements.txt (the one pin list)."""
    from steps.config import ROOT

    needed = {"tensorflow-cpu", "tensorflow-io", "keras", "mlflow", "numpy", "pandas", "pillow", "protobuf", "pyarrow"}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [l.strip() for l in lines if l.split("==")[0].strip().lower() in needed]


def log_model(artifacts_dir: Path, example_png: bytes, name: str) -> mlflow.models.model.ModelInfo:
    """Log the exported model as a pyfunc model of the active run, with signature and input example."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    from steps.config import ROOT

    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("string", "text"), ColSpec("double", "confidence")]),
        params=ParamSchema([ParamSpec("beam_width", "long", 0)]),
    )
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=HandwritingModel(),
        artifacts={SAVED_MODEL: str(artifacts_dir / SAVED_MODEL), CHARSET: str(artifacts_dir / CHARSET)},
        code_paths=[str(ROOT / "steps")],
        signature=signature,
        input_example=pd.DataFrame({"image": [example_png]}),
        pip_requirements=runtime_requirements(),
    )


def load(model_uri: str) -> HandwritingModel:
    """Load a logged model (models:/, runs:/, m-..., path) -> HandwritingModel, with a clear error if unknown."""
    # MLflow prepends the model's bundled copy of steps/ (code_paths) to sys.path for good. Our own
    # steps package is already imported here, so restore the path: otherwise worker processes spawned
    # later in this process would import the model's copy, which has no MLproject or data/.
    saved = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except mlflow.exceptions.MlflowException as e:
        raise LookupError(f"cannot load model {model_uri!r}: {e.message}") from None
    except OSError as e:
        raise LookupError(f"cannot load model {model_uri!r}: {e}") from None
    finally:
        sys.path[:] = saved

