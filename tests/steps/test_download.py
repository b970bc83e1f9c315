"""The download step's CLI and MLflow wiring: in process, and end to end through `mlflow run`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from steps import download
from steps.workflow import config
from tests import own_data
from tests.steps.sources.test_http import PASSWORD, USER, mirror_zip, official_dir, sha, words_txt

METRICS = {"bytes_downloaded", "download_seconds", "throughput", "words", "images"}


def only_run(client):
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    return run


def artifact_files(client, run_id: str) -> set[str]:
    names = set()
    for top in client.list_artifacts(run_id):
        names |= {a.path for a in client.list_artifacts(run_id, top.path)} if top.is_dir else {top.path}
    return names


def download_info(client, run_id: str, tmp_path: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, config.DOWNLOAD_INFO, str(tmp_path))).read_text())


def test_official_layout_with_credentials_in_process(http_server, mlflow_store, monkeypatch, tmp_path):
    official_dir(http_server.root / "data")
    http_server.auth = (USER, PASSWORD)
    monkeypatch.setenv("IAM_USER", USER)
    monkeypatch.setenv("IAM_PASSWORD", PASSWORD)
    monkeypatch.setenv("IAM_AUTH_HOST", "127.0.0.1")  # the loopback server speaks plain http
    result = CliRunner().invoke(download.main, ["--dataset", "iam", "--source", http_server.url + "data/"])
    assert result.exit_code == 0, result.output
    run = only_run(mlflow_store)
    assert run.info.status == "FINISHED"
    assert artifact_files(mlflow_store, run.info.run_id) == {
        "raw/words.txt",
        "raw/words.tgz",
        "raw/forms.txt",
        config.DOWNLOAD_INFO,
    }
    info = download_info(mlflow_store, run.info.run_id, tmp_path)
    assert info["dataset"] == "iam" and info["words"] == 3 and info["images"] == 3
    assert info["source"] == http_server.url + "data/"
    assert info["fetched"]["words.tgz"]["sha256"] == sha(http_server.root / "data" / "words.tgz")
    assert METRICS <= set(run.data.metrics) and run.data.metrics["words"] == 3
    assert (
        run.data.tags[config.TAG_STEP] == "download" and run.data.tags[config.TAG_CODE_DIGEST] == config.code_digest()
    )
    assert run.data.params["dataset"] == "iam" and run.data.params["num_words"] == str(
        config.defaults("download")["num_words"]
    )
    recorded = json.dumps([info, run.data.params, run.data.tags, result.output])
    assert PASSWORD not in recorded and USER not in recorded


def test_credentials_in_the_url_are_not_recorded(http_server, mlflow_store, tmp_path):
    mirror_zip(http_server.root / "IAM_Words.zip")
    url = http_server.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "IAM_Words.zip"
    result = CliRunner().invoke(download.main, ["--dataset", "iam", "--source", url])
    assert result.exit_code == 0, result.output
    run = only_run(mlflow_store)
    recorded = json.dumps(
        [download_info(mlflow_store, run.info.run_id, tmp_path), run.data.params, run.data.tags, result.output]
    )
    assert PASSWORD not in recorded and USER not in recorded
    assert run.data.params["source"] == http_server.url + "IAM_Words.zip"


def test_credentials_in_the_url_are_used_as_basic_auth_and_the_user_told_to_use_the_env(
    http_server, mlflow_store, monkeypatch, tmp_path
):
    import base64

    mirror_zip(http_server.root / "IAM_Words.zip")
    http_server.auth = (USER, PASSWORD)
    monkeypatch.setenv("IAM_AUTH_HOST", "127.0.0.1")
    url = http_server.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "IAM_Words.zip"
    result = CliRunner().invoke(download.main, ["--dataset", "iam", "--source", url])
    assert result.exit_code == 0, result.output
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert [h.get("Authorization") for _, h in http_server.requests] == [f"Basic {token}"]
    assert "set IAM_USER/IAM_PASSWORD instead" in result.output
    run = only_run(mlflow_store)
    recorded = json.dumps(
        [download_info(mlflow_store, run.info.run_id, tmp_path), run.data.params, run.data.tags, result.output]
    )
    assert PASSWORD not in recorded


def test_a_401_says_whether_credentials_were_sent(http_server, mlflow_store, monkeypatch):
    official_dir(http_server.root / "data")
    http_server.auth = (USER, PASSWORD)
    monkeypatch.setenv("IAM_USER", USER)
    monkeypatch.setenv("IAM_PASSWORD", "wrong-" + PASSWORD)
    source = ["--dataset", "iam", "--source", http_server.url + "data/"]
    withheld = CliRunner().invoke(download.main, source)  # plain http, host not named: not sent
    assert withheld.exit_code == 1 and "are set but were not sent" in withheld.output
    monkeypatch.setenv("IAM_AUTH_HOST", "127.0.0.1")
    refused = CliRunner().invoke(download.main, source)
    assert refused.exit_code == 1 and "were sent and refused: check them" in refused.output
    assert PASSWORD not in withheld.output + refused.output


@pytest.mark.parametrize(
    "case, expected",
    [("404", "HTTP 404"), ("html", "HTML page"), ("sha256", "sha256 mismatch"), ("synthetic+source", "apply to")],
)
def test_errors_exit_nonzero_with_one_message(http_server, mlflow_store, case, expected):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    (http_server.root / "login.zip").write_text("<html><body>Login</body></html>")
    args = {
        "404": ["--dataset", "iam", "--source", http_server.url + "gone.zip"],
        "html": ["--dataset", "iam", "--source", http_server.url + "login.zip"],
        "sha256": ["--dataset", "iam", "--source", str(z), "--sha256", "0" * 64],
        "synthetic+source": ["--source", str(z)],
    }[case]
    result = CliRunner().invoke(download.main, args)
    assert result.exit_code == 1 and expected in result.output and "Traceback" not in result.output
    run = only_run(mlflow_store)
    assert run.info.status == "FAILED" and not mlflow_store.list_artifacts(run.info.run_id)


def test_mlflow_run_end_to_end(http_server, mlflow_store, mlflow_run, tmp_path):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    proc = mlflow_run(
        "-e",
        "download",
        "--env-manager",
        "local",
        "-P",
        "dataset=iam",
        "-P",
        f"source={http_server.url}IAM_Words.zip",
        "-P",
        f"sha256={sha(z)}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(mlflow_store)
    assert run.info.status == "FINISHED"
    assert {"raw/words.txt", "raw/words.tgz", config.DOWNLOAD_INFO} <= artifact_files(mlflow_store, run.info.run_id)
    assert METRICS <= set(run.data.metrics) and run.data.metrics["bytes_downloaded"] == z.stat().st_size
    assert run.data.tags[config.TAG_STEP] == "download"
    raw = Path(mlflow_store.download_artifacts(run.info.run_id, config.RAW_ARTIFACT, str(tmp_path)))
    assert (raw / config.WORDS_TXT).read_bytes() == words_txt()
    assert download_info(mlflow_store, run.info.run_id, tmp_path)["fetched"]["IAM_Words.zip"]["sha256"] == sha(z)


def test_mlflow_run_synthetic(mlflow_store, mlflow_run, tmp_path):
    proc = mlflow_run("-e", "download", "--env-manager", "local", "-P", "num_words=200", "-P", "num_writers=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(mlflow_store)
    assert run.info.status == "FINISHED" and run.data.params["dataset"] == "synthetic"
    info = download_info(mlflow_store, run.info.run_id, tmp_path)
    assert info["dataset"] == "synthetic" and info["words"] == 200 and info["synthetic"]["writers"] == 5
    assert run.data.metrics["words"] == 200 and run.data.metrics["images"] == 200
    assert {"raw/words.txt", "raw/words.tgz"} <= artifact_files(mlflow_store, run.info.run_id)


def test_a_folder_downloads_as_lines_when_asked_and_pages_without_words_say_so(mlflow_store, mlflow_run, tmp_path):
    src = tmp_path / "own"
    own_data.tsv_folder(src, ("a line of text", "another line"), writers=2, per_writer=3)
    proc = mlflow_run(
        "-e", "download", "--env-manager", "local", "-P", "level=lines", "-P", "dataset=folder", "-P", f"source={src}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(mlflow_store)
    assert run.data.metrics["lines"] == 6 and run.data.params["level"] == "lines"
    assert {"raw/lines.txt", "raw/lines.tgz"} <= artifact_files(mlflow_store, run.info.run_id)
    assert "raw/words.txt" not in artifact_files(mlflow_store, run.info.run_id)
    pages = tmp_path / "pages"
    own_data.page_folder(pages, "page", pages=1, lines=2, vocabulary=own_data.GREEK)
    xml = pages / "page0.xml"
    xml.write_text(re.sub(r"<Word .*?</Word>", "", xml.read_text(encoding="utf-8")), encoding="utf-8")  # lines only
    proc = mlflow_run("-e", "download", "--env-manager", "local", "-P", "dataset=page", "-P", f"source={pages}")
    assert proc.returncode != 0
    assert "holds no words (2 lines): ask for -P level=lines" in proc.stderr


@pytest.mark.slow
def test_a_step_stopped_by_sigterm_ends_killed_and_leaves_no_artifacts(mlflow_store, tmp_path):
    """SIGTERM mid-generation: the run is KILLED (not left RUNNING), nothing is logged, no temp dir stays."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "steps.download", "--num-words", "60000", "--num-writers", "60"],
        cwd=config.ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not mlflow_store.search_runs([os.environ["MLFLOW_EXPERIMENT_ID"]]) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # well into the generation
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    run = only_run(mlflow_store)
    assert run.info.status == "KILLED" and "ends as KILLED" in stderr
    assert artifact_files(mlflow_store, run.info.run_id) == set()
    assert not list(tmp_path.glob("hwr-download-*"))  # the step's temporary directory was removed
