"""Text lines end to end, for real: `mlflow run . -e main -P level=lines` on a tiny synthetic line set, then the
line model it registers served by `python -m steps.serve --level lines` and read by `python -m steps.infer`.

The model trains one epoch, so it reads badly: these tests check what users see of the line level (the registry
keeps word and line models apart, /version says the level, line images of any width get a text, an empty line
image gets a clear error, micro-batching mixed widths gives what single requests give), not reading quality.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from PIL import Image

from steps.sources import synthetic_lines
from steps.workflow import config
from tests.servers import free_port, stop, wait_healthy

pytestmark = pytest.mark.slow  # real `mlflow run` steps, a server and training

REPO = Path(__file__).resolve().parent.parent
LINES_MODEL = config.registered_name(config.REGISTERED_MODEL, "lines")
# A canvas and network small enough for one CPU epoch; width_pools=1 keeps 128 time steps for 60 characters.
TINY_LINES = {
    "level": "lines",
    "num_lines": "48",
    "num_writers": "6",
    "line_width": "256",
    "max_line_length": "60",
    "epochs": "1",
    "batch_size": "8",
    "conv_filters": "8,16",
    "width_pools": "1",
    "dense_units": "16",
    "rnn_units": "16",
    "workers": "1",
    "min_epoch_steps": "1",
    "max_cer": "2",  # a 1-epoch model reads nothing; these tests are about the level, not the bar
}


def _env(root: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    out.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        HWR_CACHE_DIR=str(root / "cache"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    return out


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The tiny line pipeline through `mlflow run . -e main` in a store of its own: (root, env, process)."""
    root = tmp_path_factory.mktemp("lines")
    env = _env(root)
    command = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "-e", "main", "--env-manager", "local"]
    for k, v in TINY_LINES.items():
        command += ["-P", f"{k}={v}"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, env, proc


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> list[Path]:
    """Readable line PNGs of other writers (seed 5), as a user would upload them."""
    root = tmp_path_factory.mktemp("line-images")
    synthetic_lines.generate(root, 12, 3, 5, progress=False)
    out = []
    with tarfile.open(root / config.LINES_ARCHIVE) as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            if data.startswith(b"\x89PNG") and len(data) > 200:
                try:
                    Image.open(io.BytesIO(data)).load()
                except OSError:  # the one truncated PNG
                    continue
                path = root / "png" / Path(m.name).name
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(data)
                out.append(path)
    return sorted(out)[:6]


@pytest.fixture(scope="module")
def server(pipeline_run):
    root, env, _ = pipeline_run
    port = free_port()
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "steps.serve", "--level", "lines", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop(proc)


def test_main_level_lines_registers_a_line_model_apart_from_word_models(pipeline_run):
    root, env, proc = pipeline_run
    assert re.search(r"test: CER \S+ .* over \d+ lines", proc.stderr), "evaluate counts lines, not words"
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert [m.name for m in client.search_registered_models()] == [LINES_MODEL]
    champion = client.get_model_version_by_alias(LINES_MODEL, config.CHAMPION_ALIAS)
    train = client.get_run(champion.run_id)
    assert train.data.tags["hwr.level"] == "lines"
    assert (train.data.params["image_height"], train.data.params["image_width"]) == ("32", "256")
    download = client.search_runs(["0"], f"tags.`{config.TAG_STEP}` = 'download'")[0]
    assert download.data.params["level"] == "lines"
    assert int(download.data.metrics["lines"]) == 48


def test_version_says_the_model_reads_lines(server):
    info = requests.get(server + "/version", timeout=10).json()
    assert (info["name"], info["alias"], info["level"], info["canvas"]) == (LINES_MODEL, "champion", "lines", [32, 256])


def test_a_line_image_gets_its_text(server, lines):
    reply = requests.post(server + "/predict", files={"image": lines[0].read_bytes()}, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert isinstance(body["text"], str) and 0.0 <= body["confidence"] <= 1.0


def test_a_line_wider_than_the_canvas_is_read_whole(server, lines):
    images = [np.asarray(Image.open(p).convert("L")) for p in lines[:3]]
    height = max(i.shape[0] for i in images)
    wide = np.concatenate([np.pad(i, ((0, height - i.shape[0]), (0, 20)), constant_values=230) for i in images], 1)
    assert wide.shape[1] > 4 * 256  # four times the canvas: shrunk to fit, never cut off
    reply = requests.post(server + "/predict", files={"image": _png(wide)}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert isinstance(reply.json()["text"], str)


def test_an_empty_line_image_is_a_clear_error(server):
    blank = np.full((90, 1400), 231, np.uint8)  # paper, no ink
    reply = requests.post(server + "/predict", files={"image": _png(blank)}, timeout=30)
    assert (reply.status_code, reply.json()["error"]) == (422, "the image holds no ink: nothing to read")
    reply = requests.post(server + "/predict", files={"image": ("line.png", b"")}, timeout=30)
    assert reply.status_code == 400 and "empty" in reply.json()["error"]


def test_micro_batching_lines_of_mixed_widths_gives_what_single_requests_give(server, lines):
    def ask(path: Path) -> tuple[str, float]:
        body = requests.post(server + "/predict", files={"image": path.read_bytes()}, timeout=60).json()
        return body["text"], round(body["confidence"], 4)

    widths = {Image.open(p).width for p in lines}
    assert len(widths) > 3  # the lines really differ in width
    alone = [ask(p) for p in lines]
    with concurrent.futures.ThreadPoolExecutor(len(lines) * 2) as pool:
        together = list(pool.map(ask, lines * 2))
    assert together == alone * 2


def test_infer_reads_a_directory_of_lines_with_the_line_champion(pipeline_run, server, lines):
    _, env, _ = pipeline_run
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "steps.infer",
            "--level",
            "lines",
            "--image-path",
            str(lines[0].parent),
            "--output",
            "jsonl",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert LINES_MODEL in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(list(lines[0].parent.glob("*.png")))
    served = requests.post(server + "/predict", files={"image": lines[0].read_bytes()}, timeout=30).json()
    assert next(r for r in rows if r["path"].endswith(lines[0].name))["text"] == served["text"]
