"""The infer CLI, for real: `python -m steps.infer` and `mlflow run . -e infer` as subprocesses over a tiny
trained model, on a file, a directory and globs, in text and jsonl modes, with broken images among good ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steps import infer
from tests import model_fixture

pytestmark = pytest.mark.slow  # real `mlflow run` steps, servers or training

REPO = model_fixture.REPO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> model_fixture.TinyModel:
    return model_fixture.tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def words(tiny, tmp_path_factory) -> Path:
    """words/a/*.png, words/b/sub/*.png (good), words/b/broken.png (truncated), words/a/notes.png (text),
    words/a/readme.txt (not an image name: skipped when a directory is searched)."""
    root = tmp_path_factory.mktemp("infer") / "words"
    (root / "a").mkdir(parents=True)
    (root / "b" / "sub").mkdir(parents=True)
    half = len(tiny.images) // 2
    for i, image in enumerate(tiny.images):
        shutil.copy(image, root / ("a" if i < half else "b/sub") / image.name)
    good = tiny.images[0].read_bytes()
    (root / "b" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "a" / "notes.png").write_text("not an image\n")
    (root / "a" / "readme.txt").write_text("ignored\n")
    return root


@pytest.fixture(scope="module")
def runs(tiny, words) -> dict[str, subprocess.CompletedProcess]:
    """Every infer invocation of this module, started together so their model loads overlap."""
    python = [sys.executable, "-m", "steps.infer", "--model-uri", tiny.champion_uri, "--image-path"]
    commands = {
        "file": python + [str(words / "a" / tiny.images[0].name)],  # default output: text
        "dir": python + [str(words), "--output", "jsonl"],
        # the glob case goes through MLproject: its quoting must hand the pattern over unexpanded
        "glob": [
            str(Path(sys.executable).parent / "mlflow"),
            "run",
            ".",
            "-e",
            "infer",
            "--env-manager",
            "local",
            "-P",
            f"model_uri={tiny.version_uri}",
            "-P",
            f"image_path={words}/*/*.png",
        ],
        "nothing": python + [str(words / "nothing" / "*.png")],
        # the README's launch: every image read, so `mlflow run` must exit 0 with nothing but results
        "mlflow-file": [
            str(Path(sys.executable).parent / "mlflow"),
            "run",
            ".",
            "-e",
            "infer",
            "--env-manager",
            "local",
            "-P",
            f"model_uri={tiny.version_uri}",
            "-P",
            f"image_path={words / 'a' / tiny.images[0].name}",
        ],
    }
    procs = {
        name: subprocess.Popen(
            command, cwd=REPO, env=model_fixture.env(tiny), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, command in commands.items()
    }
    results = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=240)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def all_pngs(words: Path) -> list[str]:
    return sorted(str(p) for p in words.rglob("*.png"))


def text_lines(stdout: str) -> list[tuple[str, str, str]]:
    rows = [tuple(line.split("\t")) for line in stdout.splitlines()]
    for row in rows:
        assert len(row) == 3 and Path(row[0]).is_file(), row  # nothing but results on stdout
        assert len(row[2]) == 5 and 0.0 <= float(row[2]) <= 1.0  # confidence:.3f
    return rows


def test_single_file_text_mode(runs, words, tiny):
    r = runs["file"]
    assert r.returncode == 0, r.stderr[-2000:]
    ((path, text, confidence),) = text_lines(r.stdout)
    assert path == str(words / "a" / tiny.images[0].name)


def test_directory_jsonl_recursive_with_bad_files(runs, words):
    r = runs["dir"]
    assert r.returncode == 1, r.stderr[-2000:]  # some images failed ...
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == all_pngs(words)  # ... yet every image has its line, sorted, recursive
    by_name = {Path(row["path"]).name: row for row in rows}
    assert "corrupt" in by_name["broken.png"]["error"]
    assert "not an image" in by_name["notes.png"]["error"]
    good = [row for name, row in by_name.items() if name not in ("broken.png", "notes.png")]
    assert len(good) == len(rows) - 2
    for row in good:
        assert set(row) == {"path", "text", "confidence"} and isinstance(row["text"], str)
    assert "2 of 10 image(s) could not be transcribed" in r.stderr


def test_glob_text_mode_through_mlflow_run_errors_go_to_stderr(runs, words):
    r = runs["glob"]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    rows = text_lines(r.stdout)
    expected = sorted(str(p) for p in words.glob("*/*.png"))
    assert [row[0] for row in rows] == [p for p in expected if not p.endswith(("broken.png", "notes.png"))]
    errors = [line for line in r.stderr.splitlines() if "\terror: " in line]
    assert sorted(line.split("\t")[0] for line in errors) == [
        str(words / "a" / "notes.png"),
        str(words / "b" / "broken.png"),
    ]


def test_mlflow_run_of_infer_exits_0_when_every_image_is_read(runs, tiny):
    """`mlflow run . -e infer` ends the run it made once more after the step exits: that must not fail."""
    r = runs["mlflow-file"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stdout == runs["file"].stdout and "succeeded" in r.stderr


def test_all_modes_agree(runs, words):
    """The same image gets the same transcription whichever way it was selected or printed."""
    as_json = {row["path"]: row for row in map(json.loads, runs["dir"].stdout.splitlines())}
    for path, text, confidence in text_lines(runs["glob"].stdout) + text_lines(runs["file"].stdout):
        assert as_json[path]["text"] == text
        assert f"{as_json[path]['confidence']:.3f}" == confidence


def test_find_images(words):
    """Which files each kind of image_path selects (in process: no model needed)."""
    one = words / "a" / "notes.png"
    assert infer.find_images(str(one)) == [one]
    assert [str(p) for p in infer.find_images(str(words))] == all_pngs(words)  # recursive, images only
    assert [str(p) for p in infer.find_images(f"{words}/**/*.png")] == all_pngs(words)
    assert infer.find_images(f"{words}/*/*.txt") == [words / "a" / "readme.txt"]  # a glob takes what it names
    assert infer.find_images(str(words / "missing.png")) == []
    assert infer.find_images(str(words / "zzz*")) == []


def test_format_result():
    ok = {"path": "w.png", "text": "the", "confidence": 0.98765}
    assert infer.format_result(ok, "text") == ("w.png\tthe\t0.988", True)
    assert json.loads(infer.format_result(ok, "jsonl")[0]) == ok
    bad = {"path": "x.png", "error": "empty file"}
    assert infer.format_result(bad, "text") == ("x.png\terror: empty file", False)
    assert infer.format_result(bad, "jsonl") == (json.dumps(bad), True)


def test_no_match_is_a_clear_error(runs, words):
    r = runs["nothing"]
    assert r.returncode != 0 and r.stdout == ""
    assert f"no image files match '{words / 'nothing' / '*.png'}'" in r.stderr
    assert "Traceback" not in r.stderr
