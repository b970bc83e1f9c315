"""steps.inference.recognizer and steps.training.export: the logged pyfunc model (bytes in, text out) must agree with the training path.

The model is the one trained by tests/steps/test_model.py's overfit() (cached for the session), so
the texts compared are real words, not the noise of an untrained net. It is exported, logged to a
temporary sqlite tracking store, and loaded back through mlflow.pyfunc.load_model, as serve does.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from steps.inference import ctc, imaging, loading, recognizer
from steps.inference.calibration import Calibration
from steps.inference.charset import Charset, CharsetError
from steps.training import export
from steps.workflow import config
from tests.steps.training.test_model import H, Overfit, W, overfit, render_word


@dataclass
class Logged:
    run: Overfit
    model_uri: str
    pyfunc: mlflow.pyfunc.PyFuncModel
    root: Path

    @property
    def python_model(self) -> recognizer.HandwritingModel:
        return self.pyfunc.unwrap_python_model()


@pytest.fixture(scope="module")
def logged(tmp_path_factory, _empty_mlflow_db):
    """Overfit model -> exported.save -> exported.log_model into a fresh sqlite store -> pyfunc.load_model."""
    run = overfit()
    root = tmp_path_factory.mktemp("exported")
    shutil.copyfile(_empty_mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        experiment_id = mlflow.create_experiment("exported", artifact_location=(root / "artifacts").as_uri())
        export_dir = export.save(run.net, run.chars, Calibration.identity(), H, W, root / "export")
        canvases = np.stack([imaging.preprocess_bytes(tf.constant(p), H, W).numpy() for p in run.pngs])
        assert "also TensorFlow Lite" in export.save_lite(run.net, canvases, export_dir)  # as train ships it
        with mlflow.start_run(experiment_id=experiment_id):
            info = export.log_model(export_dir, run.pngs[0], config.MODEL_ARTIFACT, {"level": "words"})
        yield Logged(run, info.model_uri, mlflow.pyfunc.load_model(info.model_uri), root)
        mlflow.set_tracking_uri(None)


def training_path(run: Overfit, data: bytes) -> tuple[str, float]:
    """What train/evaluate compute for these bytes: shared preprocessing -> Keras model -> ctc.decode."""
    canvas = imaging.preprocess_bytes(tf.constant(data), H, W)[tf.newaxis]
    logits = run.net(imaging.to_model_input(canvas), training=False)
    text, confidence = ctc.decode(logits, tf.constant(list(run.chars.characters)))
    return text.numpy()[0].decode("utf-8"), float(confidence.numpy()[0])


def to_format(png: bytes, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, format=fmt)
    return buf.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid little PNG whose header claims width x height (a decompression bomb's calling card)."""
    data = bytearray(render_word("a"))
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


# --- no training/serving skew ---------------------------------------------------------------------


def test_pyfunc_predict_gives_the_training_path_text_for_every_image(logged):
    run = logged.run
    for word, png in zip(run.words, run.pngs):
        out = logged.pyfunc.predict(pd.DataFrame({"image": [png]}))
        assert list(out.columns) == ["text", "confidence"] and len(out) == 1
        text, confidence = training_path(run, png)
        assert out["text"][0] == text, word
        assert out["confidence"][0] == pytest.approx(confidence, abs=1e-4)
    # Non-trivial: the overfit model reads most of the words, so agreeing is not agreeing on "".
    recognised = logged.pyfunc.predict(pd.DataFrame({"image": run.pngs}))["text"].tolist()
    assert sum(t == w for t, w in zip(recognised, run.words)) >= 6, recognised


def test_int8_weights_read_the_trained_words_as_the_training_path_does(logged, tmp_path):
    """train's default: the Lite network with int8 weights, shipped because it reads as well as the float one."""
    run = logged.run
    export_dir = tmp_path / "export"
    shutil.copytree(logged.root / "export", export_dir)
    canvases = np.stack([imaging.preprocess_bytes(tf.constant(p), H, W).numpy() for p in run.pngs])
    said, figures = export.save_int8_weights(run.net, canvases, run.words, run.chars.characters, export_dir)
    assert said.startswith("the TensorFlow Lite network has int8 weights"), said
    assert figures["lite_int8_check_cer"] == figures["lite_float_check_cer"]
    model = recognizer.HandwritingModel()
    model._load(
        export_dir / recognizer.SAVED_MODEL, export_dir / recognizer.CHARSET, lite_path=export_dir / recognizer.LITE
    )
    assert model.engine == "tflite" and model.lite.int8_weights
    read = [r["text"] for r in model.recognize(run.pngs)]
    assert read == [training_path(run, p)[0] for p in run.pngs]
    assert sum(t == w for t, w in zip(read, run.words)) >= 6, read


def test_batched_predict_equals_one_by_one(logged):
    run = logged.run
    batch = logged.pyfunc.predict(pd.DataFrame({"image": run.pngs}))
    assert batch["text"].tolist() == [training_path(run, p)[0] for p in run.pngs]
    assert np.all((batch["confidence"] > 0) & (batch["confidence"] <= 1))


def test_new_images_unseen_in_training_also_agree(logged):
    run = logged.run
    for word in ["hello", "cat", "mlflow"]:
        png = render_word(word, size=22)  # another size: a different canvas than the trained one
        assert logged.pyfunc.predict(pd.DataFrame({"image": [png]}))["text"][0] == training_path(run, png)[0]


def test_saved_model_preprocessing_is_bit_identical_to_imaging(logged):
    module = logged.python_model.module
    for png in logged.run.pngs[:3]:
        np.testing.assert_array_equal(
            module.preprocess(tf.constant(png)).numpy(), imaging.preprocess_bytes(tf.constant(png), H, W).numpy()
        )


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "GIF"])
def test_other_formats_of_the_same_image_give_the_same_text_as_png(logged, fmt):
    pngs = logged.run.pngs[:4]
    same = logged.pyfunc.predict(pd.DataFrame({"image": [to_format(p, fmt) for p in pngs]}))
    assert same["text"].tolist() == logged.pyfunc.predict(pd.DataFrame({"image": pngs}))["text"].tolist()


def test_beam_search_param_agrees_on_a_confident_model(logged):
    run = logged.run
    greedy = logged.pyfunc.predict(pd.DataFrame({"image": run.pngs}))
    beam = logged.pyfunc.predict(pd.DataFrame({"image": run.pngs}), params={"beam_width": 5})
    # Where the greedy path reads the word, beam search reads it too. (The overfit model does not read
    # every word in every run: threads make its 250 steps differ slightly, and beam may then do better.)
    read = greedy["text"] == pd.Series(run.words)
    assert read.sum() >= 6, greedy
    assert beam["text"][read].tolist() == greedy["text"][read].tolist()


# --- bad input ----------------------------------------------------------------------------------


def test_recognize_isolates_bad_images(logged):
    run = logged.run
    good_a, good_b = run.pngs[0], run.pngs[1]
    results = logged.python_model.recognize([good_a, b"", b"<html>404</html>", good_a[: len(good_a) // 2], good_b])
    assert results[0] == {
        "text": training_path(run, good_a)[0],
        "confidence": pytest.approx(training_path(run, good_a)[1], abs=1e-4),
    }
    assert results[1] == {"error": "empty file"}
    assert "not an image in a supported format" in results[2]["error"] and "TIFF" in results[2]["error"]
    assert results[3] == {"error": "corrupt PNG image"}
    assert results[4]["text"] == training_path(run, good_b)[0]


def test_predict_names_the_bad_rows(logged):
    frame = pd.DataFrame({"image": [logged.run.pngs[0], b"nonsense", logged.run.pngs[1]]})
    with pytest.raises(ValueError, match="row 1: not an image"):
        logged.pyfunc.predict(frame)


def test_max_pixels_limit_is_enforced_with_a_clear_message(logged):
    model = logged.python_model
    png = logged.run.pngs[0]
    width, height = Image.open(io.BytesIO(png)).size
    results = model.recognize([png, png], max_pixels=width * height - 1)
    assert (
        results[0]
        == results[1]
        == {"error": f"image of {width}x{height} pixels exceeds the limit of {width * height - 1} pixels"}
    )
    assert "text" in model.recognize([png], max_pixels=width * height)[0]


def test_default_max_pixels_refuses_a_decompression_bomb_before_decoding(logged):
    bomb = png_claiming_size(30_000, 30_000)  # 900 Mpixels claimed, a few hundred bytes on disk
    assert len(bomb) < 10_000
    (result,) = logged.python_model.recognize([bomb])
    assert result == {
        "error": f"image of 30000x30000 pixels exceeds the limit of {recognizer.DEFAULT_MAX_PIXELS} pixels"
    }


# --- the charset travels with the model -------------------------------------------------------------


@pytest.fixture
def downloaded(logged, tmp_path) -> Path:
    """A local copy of the logged model's artifacts/ (saved_model/ and charset.json)."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.model_uri, dst_path=str(tmp_path)))
    artifacts = local / "artifacts"
    assert (artifacts / recognizer.SAVED_MODEL).is_dir() and (artifacts / recognizer.CHARSET).is_file()
    return artifacts


def test_logged_model_carries_the_training_charset(logged, downloaded):
    assert Charset.load(downloaded / recognizer.CHARSET) == logged.run.chars
    model = recognizer.HandwritingModel()
    model._load(downloaded / recognizer.SAVED_MODEL, downloaded / recognizer.CHARSET)
    assert model.recognize([logged.run.pngs[2]])[0]["text"] == training_path(logged.run, logged.run.pngs[2])[0]


def test_tampered_charset_is_refused(downloaded):
    path = downloaded / recognizer.CHARSET
    doc = json.loads(path.read_text(encoding="utf-8"))
    chars = doc["characters"]
    chars[0], chars[1] = chars[1], chars[0]  # same characters, another order: keras-io PR 915's bug
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(CharsetError, match="does not match"):
        recognizer.HandwritingModel()._load(downloaded / recognizer.SAVED_MODEL, path)


def test_missing_charset_is_refused(downloaded):
    (downloaded / recognizer.CHARSET).unlink()
    with pytest.raises(CharsetError, match="not found"):
        recognizer.HandwritingModel()._load(downloaded / recognizer.SAVED_MODEL, downloaded / recognizer.CHARSET)


# --- loading --------------------------------------------------------------------------------------


def test_load_returns_a_working_model(logged):
    model = loading.load(logged.model_uri)
    assert isinstance(model, recognizer.HandwritingModel)
    assert model.recognize([logged.run.pngs[3]])[0]["text"] == training_path(logged.run, logged.run.pngs[3])[0]


@pytest.mark.parametrize(
    "uri",
    [
        "models:/NoSuchModel/1",
        "models:/NoSuchModel@champion",
        "runs:/0123456789abcdef0123456789abcdef/handwriting_recognition_model",
    ],
)
def test_load_of_an_unknown_uri_raises_lookup_error(logged, uri):
    with pytest.raises(LookupError, match=re.escape(f"cannot load model {uri!r}")) as error:
        loading.load(uri)
    assert "not found" in str(error.value)


def test_load_of_a_missing_path_raises_lookup_error(logged, tmp_path):
    missing = str(tmp_path / "no-model-here")
    with pytest.raises(LookupError, match="cannot load model"):
        loading.load(missing)


def test_a_blank_image_is_refused_not_read_as_punctuation(logged):
    buf = io.BytesIO()
    Image.new("L", (120, 40), 230).save(buf, "PNG")  # paper, no ink
    assert logged.python_model.recognize([buf.getvalue(), logged.run.pngs[0]])[0] == {
        "error": "the image holds no ink: nothing to read"
    }


def test_preprocessing_in_the_calling_thread_gives_the_same_canvases_and_errors(logged):
    """serve's mode (preprocess_in_calling_thread) against the default: every format, colour over alpha, a
    blank page and a corrupt file, batched and one at a time."""
    png = logged.run.pngs[0]
    tinted, transparent, paper = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").point(lambda v: v // 2).save(tinted, "JPEG")
    ink = Image.open(io.BytesIO(png)).convert("L").point(lambda v: 255 - v)
    Image.merge("RGBA", (ink, ink, ink, ink)).save(transparent, "PNG")  # black ink, clear paper
    Image.new("L", (120, 40), 230).save(paper, "PNG")
    images = [*logged.run.pngs[:3], *(to_format(png, f) for f in ("TIFF", "BMP", "GIF")), tinted.getvalue()]
    images += [transparent.getvalue(), paper.getvalue(), png[: len(png) // 2]]
    default, inline = loading.load(logged.model_uri), loading.load(logged.model_uri)
    inline.preprocess_in_calling_thread()
    for batch in (images, *([image] for image in images)):
        for a, b in zip(default.canvases_of_checked(batch), inline.canvases_of_checked(batch), strict=True):
            if isinstance(a, Exception):
                assert type(a) is type(b) and str(a) == str(b)
            else:
                np.testing.assert_array_equal(a, b)
    assert inline.recognize([png])[0]["text"] == training_path(logged.run, png)[0]
