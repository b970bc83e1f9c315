"""Transcribe image files from the command line with a logged or registered handwriting model.

Run:
    mlflow run . -e infer --env-manager local -P model_uri="models:/HandwritingRecognitionModel@champion" \\
        -P image_path=word.png
    python -m steps.infer --image-path 'scans/*.png' --output jsonl
    mlflow run . -e infer --env-manager local -P level=lines -P image_path=data/examples/line.png

Inputs:
- `model_uri`: models:/Name@alias, models:/Name/<version>, runs:/<run_id>/handwriting_recognition_model, ...
  ('' = the champion of `level`: models:/HandwritingRecognitionModel@champion for words, ...-lines@champion
  for lines; a line model reads line images, a word model word images).
- `image_path`: one of
    a file                  -> that file, whatever its extension;
    a directory             -> every image file (.png .jpg .jpeg .bmp .gif .tif .tiff, any case) under it,
                               recursively (IAM nests words/a01/a01-000u/*.png), sorted by path;
    a glob ('scans/*.png')  -> every file it matches, sorted; `**` matches across directories.
  Quote a glob so the shell does not expand it. A relative path is relative to the directory you ran the
  command from, also under `mlflow run` (which starts the step in the project directory; $PWD tells
  where you were), falling back to the project directory.
- `output`: `text` or `jsonl`.

Outputs (stdout holds results only, one line per image, in input order; logs go to stderr):
    text:  <path>\\t<text>\\t<confidence:.3f>         (an unreadable image: <path>\\terror: <why> on stderr)
    jsonl: {"path": ..., "text": ..., "confidence": ...} or {"path": ..., "error": ...}
Exit code 0 if every image was transcribed, 1 if any failed (all the others are still transcribed)
or if nothing matched `image_path`.

Preprocessing and decoding happen inside the model (steps/exported.py), exactly as in training and serving.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, TextIO

import click

from steps.workflow import cli, config, runs

D = config.defaults("infer")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"})
BATCH_SIZE = 32  # images per model call: bounded memory, and the model's per-call overhead is shared
OUTPUTS = ("text", "jsonl")
_GLOB_CHARS = set("*?[")


def find_images(image_path: str) -> list[Path]:
    """The files `image_path` names (a file, a directory searched recursively, or a glob), sorted."""
    path = Path(image_path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if _GLOB_CHARS & set(image_path):
        # An explicit pattern means the user chose these files: keep them all, a non-image gets an error line.
        return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    return []


def batched(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def transcribe(model, paths: Iterable[Path], batch_size: int = BATCH_SIZE, lexicon=None) -> Iterator[dict]:
    """{"path", "text", "confidence"} or {"path", "error"} per path, in order, `batch_size` images per call."""
    for chunk in batched(list(paths), batch_size):
        images: list[bytes] = []
        results: dict[int, dict] = {}
        for i, p in enumerate(chunk):
            try:
                images.append(p.read_bytes())
            except OSError as e:
                images.append(b"")  # keeps positions aligned; its result is replaced below
                results[i] = {"error": f"cannot read: {e.strerror or e}"}
        for i, (p, result) in enumerate(zip(chunk, model.recognize(images, lexicon=lexicon))):
            yield {"path": str(p), **results.get(i, result)}


def format_result(result: dict, output: str) -> tuple[str, bool]:
    """(the line to print, whether it goes to stdout) for one transcription."""
    if output == "jsonl":
        return json.dumps(result, ensure_ascii=False), True
    if "error" in result:
        return f"{result['path']}\terror: {result['error']}", False
    return f"{result['path']}\t{result['text']}\t{result['confidence']:.3f}", True


def write_results(results: Iterable[dict], output: str, out: TextIO, err: TextIO) -> tuple[int, int]:
    """Print each result as it comes (flushed, so a pipe sees progress); returns (total, failed)."""
    total = failed = 0
    for result in results:
        total += 1
        failed += "error" in result
        line, to_stdout = format_result(result, output)
        print(line, file=out if to_stdout else err, flush=True)
    return total, failed


def from_caller(image_path: str) -> str:
    """A relative path as the user meant it: `mlflow run` starts us in the project directory, but the shell
    that ran it (whose directory $PWD still names) is where the user's relative paths start."""
    caller = os.environ.get("PWD")
    if caller and not Path(image_path).expanduser().is_absolute() and Path(caller).resolve() != Path.cwd():
        candidate = str(Path(caller) / image_path)
        if find_images(candidate):
            return candidate
    return image_path


class NoImages(LookupError):
    """image_path names no image file."""


@click.command(help=__doc__.split("\n\n")[0])
@cli.model_uri_option(D["model_uri"])
@cli.level_option(D["level"])
@click.option("--image-path", required=True, help="an image file, a directory (searched recursively) or a quoted glob")
@click.option("--output", type=click.Choice(OUTPUTS), default=D["output"], show_default=True)
@click.option(
    "--lexicon",
    default=D["lexicon"],
    show_default=True,
    help="a word list (one per line): prefer the best beam path that is one of its words ('' = off)",
)
@cli.user_errors(LookupError, ValueError)
@runs.side_step("infer", record=False)  # no run: transcribing files is not an experiment
def main(model_uri: str, level: str, image_path: str, output: str, lexicon: str) -> None:
    # Find the files before loading the model: a typo should fail in a second, not after TF starts.
    paths = find_images(from_caller(image_path))
    if not paths:
        raise NoImages(
            f"no image files match {image_path!r} (a file, a directory holding "
            f"{'/'.join(sorted(s[1:] for s in IMAGE_SUFFIXES))} files, or a quoted glob)"
        )
    from steps.inference import ctc, loading

    words = ctc.Lexicon.load(from_caller(lexicon)) if lexicon else None

    model_uri = model_uri or config.champion_uri(level)
    runs.log(f"{len(paths)} image(s) from {image_path!r}; loading {model_uri}")
    model = loading.load(model_uri)
    total, failed = write_results(transcribe(model, paths, lexicon=words), output, sys.stdout, sys.stderr)
    if failed:
        runs.log(f"{failed} of {total} image(s) could not be transcribed")
        sys.exit(1)
    runs.log(f"{total} image(s) transcribed")


if __name__ == "__main__":
    main()
