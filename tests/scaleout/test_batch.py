"""Batch transcription on Spark, for real: `python -m steps.batch` in Spark local mode over a tiny registered
model, on a directory with broken images among good ones and on a table of paths, checked against `infer`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import model_fixture

pytestmark = [pytest.mark.slow, pytest.mark.engines]

REPO = model_fixture.REPO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> model_fixture.TinyModel:
    return model_fixture.tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def scans(tiny, tmp_path_factory) -> Path:
    """scans/*.png and scans/sub/*.png (good), scans/broken.png (truncated), scans/sub/notes.png (text),
    scans/readme.txt (not an image name: skipped, as infer skips it)."""
    root = tmp_path_factory.mktemp("batch") / "scans"
    (root / "sub").mkdir(parents=True)
    for i, image in enumerate(tiny.images):
        shutil.copy(image, root / ("sub" if i % 2 else ".") / image.name)
    good = tiny.images[0].read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "sub" / "notes.png").write_text("not an image\n")
    (root / "readme.txt").write_text("ignored\n")
    return root


def run(tiny, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *args]
    return subprocess.run(command, cwd=REPO, env=model_fixture.env(tiny), capture_output=True, text=True, timeout=1200)


def rows(output: Path) -> dict[str, dict]:
    """Parquet rows keyed by the local path (Spark names local files file:/...)."""
    return {r["path"].removeprefix("file:"): r for r in pq.read_table(output).to_pylist()}


@pytest.fixture(scope="module")
def inferred(tiny, scans) -> dict[str, dict]:
    proc = run(tiny, "steps.infer", "--model-uri", tiny.champion_uri, "--image-path", str(scans), "--output", "jsonl")
    assert proc.returncode == 1, proc.stderr[-3000:]  # two bad images
    return {r["path"]: r for r in map(json.loads, proc.stdout.splitlines())}


def test_a_directory_gives_the_same_rows_as_infer(tiny, scans, inferred, tmp_path):
    out = tmp_path / "transcripts.parquet"
    proc = run(tiny, "steps.batch", "--images", str(scans), "--output", str(out), "--master", "local[2]")
    assert proc.returncode == 1, proc.stderr[-3000:]  # some images failed; the rest are written
    assert proc.stdout.strip() == str(out), proc.stderr[-3000:]
    assert f"{len(tiny.images) + 2} image(s) transcribed into {out}; 2 failed" in proc.stderr
    got = rows(out)
    assert set(got) == set(inferred)  # the same files: readme.txt skipped, the two bad images kept
    assert pq.read_table(out).schema.names == ["path", "text", "confidence", "error"]
    for path, want in inferred.items():
        row = got[path]
        if "error" in want:
            assert row["error"] == want["error"] and row["text"] is None and row["confidence"] is None
        else:
            assert row["error"] is None and row["text"] == want["text"]
            assert row["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
    # results are never overwritten
    again = run(tiny, "steps.batch", "--images", str(scans), "--output", str(out))
    assert again.returncode == 1 and "exists: batch never overwrites results" in again.stderr


def test_a_table_of_paths_and_a_missing_file(tiny, scans, inferred, tmp_path):
    good = sorted(p for p, r in inferred.items() if "error" not in r)[:3]
    missing = str(scans / "gone.png")
    table = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"path": good + [missing], "page": list(range(4))}), table)
    out = tmp_path / "out.parquet"
    proc = run(tiny, "steps.batch", "--images", str(table), "--output", str(out), "--master", "local[2]")
    assert proc.returncode == 1, proc.stderr[-3000:]
    got = rows(out)
    assert set(got) == set(good) | {missing}
    assert got[missing]["error"] == "cannot read: No such file or directory" and got[missing]["text"] is None
    assert all(got[p]["text"] == inferred[p]["text"] for p in good)
