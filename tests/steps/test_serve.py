"""The REST server, for real: `python -m steps.serve` as a subprocess on loopback over a tiny trained model,
called with the README's curl commands, requests in every input form, and every kind of bad input."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

from steps.serving.app import create_app
from steps.serving.limits import Limits
from tests import model_fixture
from tests.servers import free_port, stop, wait_healthy

pytestmark = pytest.mark.slow  # real `mlflow run` steps, servers or training

REPO = model_fixture.REPO
CURL = shutil.which("curl") or "/usr/bin/curl"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> model_fixture.TinyModel:
    return model_fixture.tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def launched(tiny, tmp_path_factory):
    """Start every server process of this module at once, so their slow start-ups (TF, model load) overlap:
    `python -m steps.serve` (most tests), `mlflow run . -e serve` (the launch path) and a serve with an
    unknown model URI (must fail). Yields {name: (process, log file, base URL)}; all are stopped at the end."""
    logs = tmp_path_factory.mktemp("serve")
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    commands = {
        "serve": [sys.executable, "-m", "steps.serve", "--model-uri", tiny.champion_uri],
        # its own process group: mlflow run starts the server as a child, and both must go at the end
        "mlflow-run": [
            mlflow_cli,
            "run",
            ".",
            "-e",
            "serve",
            "--env-manager",
            "local",
            "-P",
            f"model_uri={tiny.version_uri}",
        ],
        "unknown": [sys.executable, "-m", "steps.serve", "--model-uri", "models:/NoSuchModel@champion"],
        # MLflow's own scoring server must be able to serve the same logged model (issue: pyfunc contract)
        "mlflow-models-serve": [
            mlflow_cli,
            "models",
            "serve",
            "-m",
            tiny.version_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
        ],
    }
    started = {}
    try:
        for name, command in commands.items():
            port = free_port()
            port_args = {"mlflow-run": ["-P", f"port={port}"], "mlflow-models-serve": ["-p", str(port)]}.get(
                name, ["--port", str(port)]
            )
            log = logs / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    command + port_args,
                    cwd=REPO,
                    env=model_fixture.env(tiny),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started[name] = (proc, log, f"http://127.0.0.1:{port}")
        yield started
    finally:
        for proc, _, _ in started.values():
            stop(proc, group=True)


@pytest.fixture(scope="module")
def server(launched):
    """Base URL of `python -m steps.serve --model-uri models:/HandwritingRecognitionModel@champion`."""
    proc, log, url = launched["serve"]
    wait_healthy(url, proc, log)
    yield url
    assert "Traceback" not in log.read_text()  # no request ever hit an unexpected server error


@pytest.fixture(scope="module")
def png(tiny) -> bytes:
    return tiny.images[0].read_bytes()


@pytest.fixture(scope="module")
def expected(server, png) -> dict:
    """The answer to one plain multipart request for `png`: what every other input form must reproduce."""
    r = requests.post(server + "/predict", files={"image": ("word.png", png, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"text", "confidence"}
    assert isinstance(body["text"], str) and 0.0 <= body["confidence"] <= 1.0
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixel_bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width x height white pixels: ~50 kB on disk, 400 megapixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def assert_json_error(r: requests.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status
    for word in words:
        assert word in body["error"].lower(), body
    assert "Traceback" not in r.text and 'File "' not in r.text


# ------------------------------------------------------------------------------------------ happy paths


def test_readme_curl_commands(server, png, expected, tmp_path):
    (tmp_path / "word.png").write_bytes(png)
    port = server.rsplit(":", 1)[1]
    for command in (
        'curl -X POST -F "image=@word.png" http://localhost:5000/predict',
        'curl -X POST -F "image=$(base64 -w 0 word.png)" http://localhost:5000/predict',
    ):
        command = command.replace("curl ", f"{CURL} -s ", 1).replace(":5000", f":{port}")
        out = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == expected, command


def test_every_input_form_gives_the_same_answer(server, png, expected):
    url = server + "/predict"
    single = [
        requests.post(url, files={"image": ("w.png", png, "image/png")}),
        requests.post(url, files={"image": (None, b64(png))}),  # -F "image=<base64>"
        requests.post(url, data={"image": b64(png)}),  # urlencoded form
        requests.post(url, json={"image": b64(png)}),
        requests.post(url, json={"image": "data:image/png;base64," + b64(png)}),  # a browser's data: URL
        requests.post(url, data=png, headers={"Content-Type": "image/png"}),  # the raw file as body
        requests.post(url, json={"image": base64.encodebytes(png).decode()}),  # base64 with line breaks
    ]
    for r in single:
        assert r.status_code == 200, r.text
        assert r.json() == expected
    batches = [
        requests.post(url, json={"images": [b64(png)] * 3}),
        requests.post(url, files=[("image", ("a.png", png)), ("image", ("b.png", png)), ("image", ("c.png", png))]),
        requests.post(url, files=[("images", ("a.png", png)), ("images", ("b.png", png)), ("images", ("c.png", png))]),
    ]
    for r in batches:
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [expected] * 3}
    one = requests.post(url, files=[("images", ("a.png", png))])  # the `images` field always answers a list
    assert one.json() == {"predictions": [expected]}


def test_a_large_image_as_a_base64_form_field(server):
    """Form text fields have a 500 kB default limit in Werkzeug; a base64 image must get the request limit."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 1200), dtype=np.uint8)).save(buf, "PNG")
    big = buf.getvalue()
    assert len(base64.b64encode(big)) > 1_000_000
    as_file = requests.post(server + "/predict", files={"image": ("big.png", big)})
    as_field = requests.post(server + "/predict", files={"image": (None, b64(big))})
    assert as_file.status_code == as_field.status_code == 200, as_field.text
    assert as_file.json() == as_field.json()


def test_a_bad_image_in_a_batch_fails_alone(server, png, expected):
    truncated = png[: len(png) // 2]
    r = requests.post(
        server + "/predict", json={"images": [b64(png), b64(b"hello, world"), "%%%", b64(truncated), b64(png)]}
    )
    assert r.status_code == 200, r.text
    first, text, base, trunc, last = r.json()["predictions"]
    assert first == last == expected
    assert "not an image" in text["error"] and text["status"] == 415
    assert "base64" in base["error"] and base["status"] == 400
    assert "corrupt" in trunc["error"] and trunc["status"] == 422
    r = requests.post(server + "/predict", files=[("image", ("a.png", png)), ("image", ("b.txt", b"text"))])
    assert r.status_code == 200
    good, bad = r.json()["predictions"]
    assert good == expected and "error" in bad


def test_beam_width(server, png, tiny):
    url = server + "/predict"
    answers = [
        requests.post(url + "?beam_width=5", files={"image": ("w.png", png)}),
        requests.post(url, files={"image": ("w.png", png)}, data={"beam_width": "5"}),
        requests.post(url, json={"image": b64(png), "beam_width": 5}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
    assert answers[0].json() == answers[1].json() == answers[2].json()
    for bad in ("-1", "101", "abc", "2.5"):
        assert_json_error(requests.post(url + f"?beam_width={bad}", files={"image": ("w.png", png)}), 400, "beam_width")
    assert_json_error(requests.post(url, json={"image": b64(png), "beam_width": True}), 400, "beam_width")


def test_health_version_and_page(server, tiny):
    assert requests.get(server + "/health").json() == {"status": "ok"}
    version = requests.get(server + "/version").json()
    assert version["name"] == tiny.name and str(version["version"]) == tiny.version
    assert version["alias"] == "champion" and version["model_uri"] == tiny.champion_uri
    assert version["run_id"] == tiny.run_id and version["model_id"].startswith("m-")
    assert version["charset_size"] > 10
    assert version["engine"] == "tflite"  # train ships word models with their network as TensorFlow Lite
    from mlflow.tracking import MlflowClient

    from steps.training.export import int8_allowance

    checked = MlflowClient(tiny.tracking_uri).get_run(tiny.run_id).data.metrics  # what train found on validation
    float_cer = checked["lite_float_check_cer"]
    as_well = checked["lite_int8_check_cer"] <= float_cer + int8_allowance(float_cer)
    assert version["int8_weights"] is as_well
    page = requests.get(server + "/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'type="file"' in page.text and 'fetch("/predict"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN or other external assets


def test_one_log_line_per_request(server, launched):
    requests.get(server + "/health?probe=log")
    requests.get(server + "/missing")
    log = launched["serve"][1].read_text()
    assert re.search(r"GET /health 200 \d+\.\dms", log)
    assert re.search(r"GET /missing 404 \d+\.\dms", log)
    assert re.search(r"POST /predict 200 \d+\.\dms", log)


def test_concurrent_requests_agree_with_a_single_one(server, tiny):
    images = [p.read_bytes() for p in tiny.images]
    alone = [requests.post(server + "/predict", files={"image": ("w.png", im)}).json() for im in images]

    def call(i: int) -> dict:
        r = requests.post(server + "/predict", files={"image": ("w.png", images[i % len(images)])}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(16)))
    for i, answer in enumerate(answers):
        assert answer["text"] == alone[i % len(images)]["text"]
        assert answer["confidence"] == pytest.approx(alone[i % len(images)]["confidence"], abs=1e-5)


# -------------------------------------------------------------------------------------------- bad input


def test_bad_requests_get_json_errors_and_the_server_survives(server, png):
    url = server + "/predict"
    cases = [
        (requests.post(url, files={"other": ("w.png", png)}), 400, ["no image"]),
        (requests.post(url, json={"picture": b64(png)}), 400, ["no image"]),
        (requests.post(url), 400, ["no image"]),
        (requests.post(url, data={"image": "not base64!!"}), 400, ["base64"]),
        (requests.post(url, json={"image": "@@@@"}), 400, ["base64"]),
        (requests.post(url, json={"image": 12}), 400, ["base64"]),
        (requests.post(url, json={"images": "x"}), 400, ["list"]),
        (requests.post(url, files={"image": ("notes.txt", b"just some text\n", "text/plain")}), 415, ["not an image"]),
        (requests.post(url, files={"image": ("w.png", png[: len(png) // 2])}), 422, ["corrupt"]),
        (requests.post(url, files={"image": ("w.png", png[:30])}), 422, ["corrupt"]),
        (requests.post(url, files={"image": ("empty.png", b"")}), 400, ["empty"]),
        (requests.post(url, data=b'{"image": ', headers={"Content-Type": "application/json"}), 400, ["json"]),
        (requests.post(url, data=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400, ["json"]),
        (requests.post(url, json=[1, 2]), 400, ["object"]),
        (requests.post(url, data=b"<xml/>", headers={"Content-Type": "text/xml"}), 415, ["content-type"]),
        (requests.post(url, data=b"plain words", headers={"Content-Type": ""}), 415, ["not json"]),
        (requests.post(url, files={"image": ("big.png", os.urandom(11 * 1024 * 1024))}), 413, ["larger"]),
        (requests.post(url, json={"image": b64(os.urandom(8 * 1024 * 1024))}), 413, ["larger"]),
        (requests.post(url, files={"image": ("bomb.png", pixel_bomb_png())}), 413, ["20000x20000", "limit"]),
        (requests.get(url), 405, ["not allowed"]),
        (requests.put(url, data=b"x"), 405, ["not allowed"]),
        (requests.get(server + "/no/such/path"), 404, ["no such path"]),
        (requests.post(server + "/health"), 405, ["not allowed"]),
    ]
    for r, status, words in cases:
        assert_json_error(r, status, *words)
    assert "POST" in cases[-4][0].headers["Allow"]
    assert requests.get(server + "/health").json() == {"status": "ok"}
    assert requests.post(url, files={"image": ("w.png", png)}).status_code == 200


def test_unknown_model_uri_is_one_clear_error(launched):
    proc, log, _ = launched["unknown"]
    assert proc.wait(120) == 1
    output = log.read_text()
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: cannot load model 'models:/NoSuchModel@champion': "), output[-2000:]
    assert "NoSuchModel not found" in last and "MLFLOW_TRACKING_URI" in last
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "env, pools",
    [({}, "1 1"), ({"TF_NUM_INTEROP_THREADS": "3", "TF_NUM_INTRAOP_THREADS": "2"}, "3 2")],
    ids=["default", "user's own"],
)
def test_tensorflow_pools_of_one_thread_unless_the_user_sized_them(env, pools):
    """serve sizes TensorFlow's pools before loading a model (run_server); a user's environment wins."""
    code = (
        "import os, tensorflow as tf\n"
        "from steps.serve import limit_tensorflow_threads\n"
        "limit_tensorflow_threads()\n"
        "tf.constant(1) + 1  # TensorFlow starts: its pools are made now\n"
        "limit_tensorflow_threads()  # a second server in the process changes nothing, and does not fail\n"
        "from tensorflow.python.eager import context\n"
        "c = context.context().config\n"
        "print(c.inter_op_parallelism_threads or os.environ.get('TF_NUM_INTEROP_THREADS'),"
        " c.intra_op_parallelism_threads or os.environ.get('TF_NUM_INTRAOP_THREADS'))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == pools


# ------------------------------------------------------------------------------ same answer as MLflow's


@pytest.fixture(scope="module")
def pyfunc_model(tiny):
    """The champion loaded in this process through MLflow's own pyfunc loader."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tiny.tracking_uri)
        mlflow.set_tracking_uri(tiny.tracking_uri)
        try:
            yield mlflow.pyfunc.load_model(tiny.champion_uri)
        finally:
            mlflow.set_tracking_uri(None)


def test_served_prediction_equals_mlflow_pyfunc(server, tiny, pyfunc_model):
    import pandas as pd

    images = [p.read_bytes() for p in tiny.images[:4]]
    frame = pyfunc_model.predict(pd.DataFrame({"image": images}))
    served = requests.post(server + "/predict", json={"images": [b64(im) for im in images]}).json()["predictions"]
    assert [s["text"] for s in served] == list(frame["text"])
    assert [s["confidence"] for s in served] == pytest.approx(list(frame["confidence"]), abs=1e-6)
    single = requests.post(server + "/predict", files={"image": ("w.png", images[0])}).json()
    assert single["text"] == frame["text"][0]


def test_concurrent_requests_share_model_calls(tiny, pyfunc_model):
    """create_app in process: 16 simultaneous requests (greedy and beam mixed) are answered by fewer, larger
    model calls, and each gets what the model gives that image with its own decoder."""
    model = pyfunc_model.unwrap_python_model()
    images = [p.read_bytes() for p in tiny.images]
    app = create_app(model, {"name": "in-process"}, 32, Limits(), max_wait_ms=50)
    batcher = app.extensions["hwr.batcher"]
    try:
        expected = {beam: [r["text"] for r in model.recognize(images, beam)] for beam in (0, 3)}
        start = threading.Barrier(16)

        def call(i: int) -> str:
            client = app.test_client()
            start.wait()
            beam = 3 if i % 4 == 0 else 0
            image = (io.BytesIO(images[i % len(images)]), "w.png")
            r = client.post(f"/predict?beam_width={beam}", data={"image": image})
            assert r.status_code == 200, r.get_data(as_text=True)
            return r.get_json()["text"]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            texts = list(pool.map(call, range(16)))
        assert texts == [expected[3 if i % 4 == 0 else 0][i % len(images)] for i in range(16)]
        assert batcher.images == 16 and 2 <= batcher.batches < 16, (batcher.batches, batcher.images)
    finally:
        batcher.close()


# --------------------------------------------------------------------------------- the mlflow run path


def test_mlflow_run_entry_point(launched, tiny, png):
    proc, log, url = launched["mlflow-run"]
    wait_healthy(url, proc, log, timeout=180)
    version = requests.get(url + "/version").json()
    assert version["name"] == tiny.name and str(version["version"]) == tiny.version
    assert version["alias"] is None and version["model_uri"] == tiny.version_uri
    r = requests.post(url + "/predict", files={"image": ("w.png", png)})
    assert r.status_code == 200 and set(r.json()) == {"text", "confidence"}
    stop(proc, group=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=2)


def test_mlflow_models_serve_serves_the_same_model(launched, png, expected):
    """`mlflow models serve` of the registered version answers /invocations with the same text as /predict."""
    proc, log, url = launched["mlflow-models-serve"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(url + "/ping", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    r = requests.post(
        url + "/invocations", json={"dataframe_split": {"columns": ["image"], "data": [[b64(png)]]}}, timeout=60
    )
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["predictions"]
    assert prediction["text"] == expected["text"]
    assert prediction["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)


def test_a_port_in_use_is_one_line_before_any_model_is_loaded():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "steps.serve", "--model-uri", "models:/NoSuchModel/1", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [errors[0]] and f"cannot listen on 127.0.0.1:{port}" in errors[0] and "-P port=" in errors[0]
    assert "Traceback" not in proc.stderr and "loading" not in proc.stderr
