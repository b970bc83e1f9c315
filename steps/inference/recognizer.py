"""The loaded recogniser: encoded image bytes in, text and confidence out, bad images isolated.

`HandwritingModel` is the pyfunc model logged by train (`handwriting_recognition_model`): its artifacts
are a SavedModel that holds the network together with imaging.preprocess_bytes, the charset and
ctc.decode (see steps/training/export.py), charset.json and calibration.json. serve, infer, evaluate and
`mlflow models serve` all run it, so they run exactly the preprocessing and decoding that training used.
Loading checks that the embedded charset and charset.json agree. The confidence is the raw score mapped
through the model's calibration (steps/inference/calibration.py): the estimated probability that the
word is read exactly right. Models logged before calibration existed report the raw score uncalibrated.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

from steps.inference import ctc, imaging
from steps.inference.calibration import Calibration
from steps.inference.charset import Charset, CharsetError
from steps.inference.inline import InlineFunction
from steps.inference.lite import LiteNetwork

SAVED_MODEL = "saved_model"  # names of the pyfunc model's artifacts
CHARSET = "charset.json"
CALIBRATION = "calibration.json"
LITE = "network.tflite"  # optional: the network as TensorFlow Lite (word models since session 14)
DEFAULT_MAX_PIXELS = imaging.DEFAULT_MAX_PIXELS
BATCH_DECODE_PIXELS = 1_000_000  # images up to this size (a word, a line) are decoded in one call per batch
NO_INK = "the image holds no ink: nothing to read"


class HandwritingModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: a DataFrame with a binary column `image` -> columns `text`, `confidence`."""

    def load_context(self, context) -> None:
        calibration, lite = context.artifacts.get(CALIBRATION), context.artifacts.get(LITE)
        self._load(
            Path(context.artifacts[SAVED_MODEL]),
            Path(context.artifacts[CHARSET]),
            calibration and Path(calibration),
            lite and Path(lite),
        )

    def _load(
        self, saved_model: Path, charset_path: Path, calibration_path: Path | None = None, lite_path: Path | None = None
    ) -> None:
        imaging.tiff_op()  # the SavedModel's TIFF branch needs IO>DecodeTiff registered before loading

        self.module = tf.saved_model.load(str(saved_model))
        self.charset = Charset.load(charset_path)
        embedded = tuple(c.decode("utf-8") for c in self.module.charset().numpy())
        if embedded != self.charset.characters:
            raise CharsetError(
                f"charset.json ({len(self.charset.characters)} characters) does not match the "
                f"charset the model was trained with ({len(embedded)}): refusing to decode with it"
            )
        self.characters = tf.constant(list(self.charset.characters), tf.string)
        self.calibration = Calibration.load(calibration_path) if calibration_path else Calibration.identity()
        # The network's logits come from its TensorFlow Lite copy when the model has one (twice as fast on a
        # CPU, the same readings: steps/training/lite.py), else from the SavedModel.
        self.lite = LiteNetwork(lite_path.read_bytes()) if lite_path else None
        self.engine = "tflite" if self.lite else "savedmodel"
        self._decoders: dict = {}
        # Called as its one concrete function: the restored tf.function's dispatch costs 0.3-0.4 ms a call.
        self._preprocess_one = self.module.preprocess.get_concrete_function(tf.TensorSpec([], tf.string))
        self._inline: tuple[InlineFunction, InlineFunction] | None = None  # preprocess_in_calling_thread's

    def preprocess_in_calling_thread(self, intra_op_threads: int = 1) -> None:
        """From now on preprocess with all kernels in the thread that asks (steps/inference/inline.py): for
        serve, whose one model thread computes everything. Other callers keep TensorFlow's pools, which
        decode a large batch's images side by side."""
        self._inline = (
            InlineFunction(self._preprocess_one, intra_op_threads),
            InlineFunction(self._preprocess_batch, intra_op_threads),
        )

    def confidence(self, raw: Sequence[float] | np.ndarray) -> list[float]:
        """Raw scores (ctc.decode's) -> calibrated confidences in [0, 1]."""
        return [float(c) for c in self.calibration(raw)]

    def canvas(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Encoded bytes -> uint8 canvas, or the imaging.ImageError saying why the bytes are not usable."""
        imaging.check(data, max_pixels)
        return self._checked_canvas(data)

    def _checked_canvas(self, data: bytes) -> np.ndarray:
        try:
            canvas = self._inline[0](data) if self._inline else self._preprocess_one(tf.constant(data)).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            raise imaging.CorruptImage(f"corrupt {imaging.sniff_format(data)} image") from None
        if not canvas.any():
            raise imaging.BlankImage(NO_INK)
        return canvas

    def canvases(
        self, images: Sequence[bytes], max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> list[np.ndarray | imaging.ImageError]:
        """One canvas per image, or its ImageError: a bad image never fails the others."""
        out: list = []
        small = []  # decoded together; larger images one at a time, so that no batch holds many large decodes
        for data in images:
            try:
                pixels = imaging.inspect(bytes(data), max_pixels).pixels
                out.append(bytes(data))
                if pixels <= BATCH_DECODE_PIXELS:
                    small.append(len(out) - 1)
                else:
                    out[-1] = self.canvases_of_checked([out[-1]])[0]
            except imaging.ImageError as e:
                out.append(e)
        for i, canvas in zip(small, self.canvases_of_checked([out[i] for i in small])):
            out[i] = canvas
        return out

    def canvases_of_checked(self, images: Sequence[bytes]) -> list[np.ndarray | imaging.ImageError]:
        """Images that passed imaging.check -> their canvases, all decoded in one graph call (a parallel map).

        A corrupt image fails the whole call; the batch is then redone one image at a time, so that it
        fails alone. A canvas with no ink is a BlankImage.
        """
        if not images:
            return []
        if len(images) == 1:  # the endpoint itself: a map of one costs more than the image
            try:
                return [self._checked_canvas(images[0])]
            except imaging.ImageError as e:
                return [e]
        try:
            if self._inline:
                canvases, inked = self._inline[1](list(images))
            else:
                canvases, inked = (t.numpy() for t in self._preprocess_batch(tf.constant(list(images), tf.string)))
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            return [c for data in images for c in self.canvases_of_checked([data])]
        return [c if ok else imaging.BlankImage(NO_INK) for c, ok in zip(canvases, inked)]

    @functools.cached_property
    def _preprocess_batch(self):
        """tf.function: encoded images [B] -> (uint8 canvases [B, H, W, 1], has ink [B]), the SavedModel's own
        preprocess endpoint mapped over the batch (its iterations run in parallel)."""
        height, width = self.module.logits.concrete_functions[0].structured_input_signature[0][0].shape[1:3]
        preprocess = self.module.preprocess
        spec = tf.TensorSpec([height, width, 1], tf.uint8)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def prepare(images):
            canvases = tf.map_fn(preprocess, images, fn_output_signature=spec)
            return canvases, tf.reduce_any(canvases > 0, axis=[1, 2, 3])

        return prepare.get_concrete_function()  # called directly: no dispatch cost per call

    def read(
        self, items: Sequence[bytes | np.ndarray], beam_width: int = 0, lexicon: ctc.Lexicon | None = None
    ) -> list[tuple[str, float] | imaging.ImageError]:
        """Checked encoded images or ready canvases, mixed -> (text, confidence) or ImageError per item.

        The batched path of serve: raw bytes are preprocessed inside this call, together.
        """
        prepared: list = list(items)
        raw = [i for i, x in enumerate(items) if isinstance(x, (bytes, bytearray))]
        for i, canvas in zip(raw, self.canvases_of_checked([bytes(items[i]) for i in raw])):
            prepared[i] = canvas
        good = [i for i, c in enumerate(prepared) if not isinstance(c, imaging.ImageError)]
        if good:
            texts = self.recognize_canvases(np.stack([prepared[i] for i in good]), beam_width, lexicon)
            for i, result in zip(good, texts):
                prepared[i] = result
        return prepared

    def recognize_canvases(
        self, canvases: np.ndarray, beam_width: int = 0, lexicon: ctc.Lexicon | None = None
    ) -> list[tuple[str, float]]:
        """uint8 canvases [B, H, W, 1] -> [(text, confidence)]. Greedy reading of a SavedModel network runs wholly
        inside the SavedModel; of Lite logits, in NumPy (ctc.greedy_numpy); beam search by ctc.decode in one
        graph call.

        With a lexicon, the best of `beam_width` (at least 10) beam paths that is a lexicon word wins.
        """
        if lexicon is not None:
            texts, raw = ctc.decode_lexicon(self.logits(canvases), self.characters, lexicon, max(beam_width, 10))
            return list(zip(texts, self.confidence(raw)))
        if beam_width == 0 and self.lite is not None:  # the served path: no TensorFlow call after preprocessing
            texts, raw = ctc.greedy_numpy(self.lite.logits(canvases), self.charset.characters)
            return list(zip(texts, self.confidence(raw)))
        read = self.module.recognize_canvas(tf.constant(canvases)) if beam_width == 0 and not self.lite else {}
        if "score" in read:
            out, raw = read["text"], read["score"]
        else:  # Lite logits, beam search, or a model exported before the raw score: decode as the SavedModel would
            out, raw = self._decode(beam_width)(self.logits(canvases))
        texts = [t.decode("utf-8") for t in out.numpy()]
        return list(zip(texts, self.confidence(raw.numpy())))

    def logits(self, canvases: np.ndarray) -> tf.Tensor:
        """uint8 canvases [B, H, W, 1] -> the network's logits [B, T, C], from the Lite copy if there is one."""
        if self.lite is not None:
            return tf.constant(self.lite.logits(canvases))
        return self.module.logits(tf.constant(canvases))

    def _decode(self, beam_width: int):
        """ctc.decode as one graph call per batch for `beam_width` (eagerly it is a dozen calls)."""
        if beam_width not in self._decoders:
            self._decoders[beam_width] = tf.function(
                lambda logits: ctc.decode(logits, self.characters, beam_width),
                input_signature=[tf.TensorSpec([None, None, None], tf.float32)],  # one trace for every batch size
            )
        return self._decoders[beam_width]

    def recognize(
        self,
        images: Sequence[bytes],
        beam_width: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        lexicon: ctc.Lexicon | None = None,
    ) -> list[dict]:
        """Encoded images -> [{"text", "confidence"} or {"error"}], one entry per image, bad ones isolated."""
        prepared = self.canvases(images, max_pixels)
        good = [i for i, c in enumerate(prepared) if not isinstance(c, imaging.ImageError)]
        results: list[dict] = [{"error": str(c)} if isinstance(c, imaging.ImageError) else {} for c in prepared]
        if good:
            read = self.recognize_canvases(np.stack([prepared[i] for i in good]), beam_width, lexicon)
            for i, (text, conf) in zip(good, read):
                results[i] = {"text": text, "confidence": conf}
        return results

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        images = [v if isinstance(v, (bytes, bytearray)) else bytes(v) for v in model_input["image"]]
        results = self.recognize(images, int((params or {}).get("beam_width", 0)))
        bad = [f"row {i}: {r['error']}" for i, r in enumerate(results) if "error" in r]
        if bad:
            raise ValueError("; ".join(bad))
        return pd.DataFrame({"text": [r["text"] for r in results], "confidence": [r["confidence"] for r in results]})
