"""The bundled offline sample's text lines, written in exactly the IAM lines layout.

Used by `mlflow run . -e download -P level=lines` (dataset synthetic). The sentences, writers, hands and
distortions are the word sample's (steps/sources/synthetic.py: the same token stream from the bundled word
list, the same fonts and per-writer styles, each word drawn by its ink_mask and scanned by its scan), and
lines add what a written line has that a word crop does not:
- word spacing: each gap drawn per word around the writer's habit (tight before punctuation);
- baseline drift: the line wanders in a slow wave and tilts a little, and each word sits on it;
- line-height variation: each line is written a little larger or smaller than the writer's habit;
- descenders crossing: sometimes ink of the lines above and below reaches into the crop.

Outputs, in `out_dir`:
- `lines.txt`: IAM's 9 fields, `a01-000u-00 ok 154 5 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell` = id,
  ok/err segmentation flag, grey level, components (here: words), bounding box x y w h on the (virtual)
  page, the words joined by `|` (punctuation a word of its own, as in IAM). About 10% are `err`: mis-cropped.
- `lines.tgz`: members `lines/a01/a01-000u/a01-000u-00.png`; a few 0-byte images and one truncated PNG.
- `forms.txt`: form -> hand, as for words, so the writer-independent split is font-held-out.

Deterministic: the same (num_lines, num_writers, seed) gives byte-identical files, whatever the number of
worker processes (each line rendered from an RNG seeded by (seed, its index)).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import multiprocessing
import os
import tarfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from steps.sources import synthetic
from steps.sources.synthetic import Job, Writer
from steps.workflow import config
from steps.workflow.progress import bar as tqdm  # one redrawn line in a terminal, whole lines in a log

_LINE_SALT, _LINE_PLAN_SALT = 11, 13
WORDS_PER_LINE = (3, 9)  # tokens per line, uniform: shorter than IAM's ~9, so a CPU canvas stays legible
LINES_PER_FORM = (7.0, 11.0)  # IAM forms hold about 9 lines
INK = 40  # mask level counted as ink when cropping


@dataclasses.dataclass(frozen=True)
class LineJob:
    """One line image to render: its words (as word Jobs of one writer), the gap before each, its flags."""

    index: int
    id: str
    words: tuple[Job, ...]
    gaps: tuple[int, ...]  # pixels before each word at the writer's habitual size (the first is 0)
    grey: int
    err: bool
    kind: str  # "normal", "empty" or "corrupt"
    seed: int

    @property
    def writer(self) -> Writer:
        return self.words[0].writer

    @property
    def text(self) -> str:
        """The transcription as lines.txt spells it: words joined by `|`."""
        return "|".join(j.text for j in self.words)


def plan(
    num_lines: int, num_writers: int, seed: int, fonts: Sequence[str], vocabulary: Sequence[str]
) -> tuple[list[Writer], list[LineJob]]:
    """Decide every writer, form, line, its words and gaps, flag and special (empty/corrupt) image."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_writers < 1 or num_writers > synthetic.MAX_WRITERS:
        raise ValueError(f"num_writers must be between 1 and {synthetic.MAX_WRITERS}, got {num_writers}")
    if num_lines < num_writers:
        raise ValueError(
            f"num_lines ({num_lines}) must be at least num_writers ({num_writers}): every writer writes a line"
        )
    writers = synthetic.make_writers(num_writers, seed, fonts)
    rng = synthetic._rng(seed, _LINE_PLAN_SALT)
    tokens = synthetic._token_stream(rng, vocabulary)
    planned: list[LineJob] = []
    words = 0
    for writer, count in zip(writers, synthetic._allocate(num_lines, num_writers, rng, spread=0.4)):
        num_forms = max(1, round(count / rng.uniform(*LINES_PER_FORM)))
        if num_forms > 1000:
            raise ValueError(f"{count} lines for one writer need more than 1000 forms: add writers")
        numbers = np.sort(rng.choice(1000, size=num_forms, replace=False))
        for number, form_count in zip(numbers, synthetic._allocate(count, num_forms, rng, spread=0.3)):
            suffix = ("", "", "", "u", "x", "a", "b")[rng.integers(7)]
            form = f"{writer.group}-{number:03d}{suffix}"
            for line in range(form_count):
                jobs, gaps = [], []
                for k in range(int(rng.integers(WORDS_PER_LINE[0], WORDS_PER_LINE[1] + 1))):
                    text, _ = next(tokens)
                    jobs.append(Job(words, text, writer, False, "normal", seed))
                    tight = not text[0].isalnum()
                    gaps.append(0 if k == 0 else int(rng.integers(2, 10) if tight else rng.integers(16, 52)))
                    words += 1
                grey = int(np.clip((writer.paper + writer.ink) / 2 + rng.normal(0, 8), 0, 255))
                err = bool(rng.random() < synthetic.ERR_RATE)
                planned.append(
                    LineJob(len(planned), f"{form}-{line:02d}", tuple(jobs), tuple(gaps), grey, err, "normal", seed)
                )
    num_special = min(num_lines, max(1, round(synthetic.EMPTY_RATE * num_lines)) + 1)
    for rank, i in enumerate(rng.choice(num_lines, size=num_special, replace=False)):
        planned[i] = dataclasses.replace(planned[i], kind="corrupt" if rank == 0 else "empty")
    return writers, planned


# ---------------------------------------------------------------------------------------------------
# Rendering one line (runs in worker processes; depends only on its LineJob)


def _ink_columns(mask: np.ndarray) -> tuple[int, int]:
    cols = np.flatnonzero(mask.max(axis=0) > INK)
    return (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)


def _compose(line: LineJob, rng: np.random.Generator) -> np.ndarray:
    """The line's ink mask (uint8, ink high): its words side by side on a drifting baseline, neighbours' ink."""
    scale = rng.uniform(0.85, 1.15)  # this line a little larger or smaller than the writer's habit
    writer = dataclasses.replace(line.writer, body=line.writer.body * scale, stroke=line.writer.stroke * scale)
    drawn = [synthetic.ink_mask(dataclasses.replace(job, writer=writer), rng) for job in line.words]
    body = writer.body
    amplitude, period = body * rng.uniform(0.0, 0.15), body * rng.uniform(10.0, 25.0)
    phase, tilt = rng.uniform(0, 2 * math.pi), rng.normal(0.0, 0.015)

    def drift(x: float) -> float:
        return amplitude * math.sin(phase + 2 * math.pi * x / period) + tilt * x

    placed, x = [], 0.0  # (word mask, left, top) with the baseline at row 0
    for (image, baseline), gap in zip(drawn, line.gaps):
        mask = np.asarray(image)
        left, right = _ink_columns(mask)
        x += gap * scale * rng.uniform(0.8, 1.25) if placed else 0.0
        top = drift(x + (right - left) / 2) - baseline
        placed.append((mask[:, left:right], int(round(x)), int(round(top))))
        x += right - left
    top = min(t for _, _, t in placed)
    bottom = max(t + m.shape[0] for m, _, t in placed)
    pad = 8  # paper left and right of the ink, for the crop's margins
    width = max(left + m.shape[1] for m, left, _ in placed) + 2 * pad
    own = np.zeros((bottom - top, width), np.uint8)
    for mask, left, t in placed:
        region = own[t - top : t - top + mask.shape[0], pad + left : pad + left + mask.shape[1]]
        np.maximum(region, mask, out=region)
    rows = np.flatnonzero(own.max(axis=1) > INK)
    if len(rows) == 0:
        return own
    margin = rng.integers(2, 8, size=2)
    r0, r1 = max(int(rows[0]) - margin[0], 0), min(int(rows[-1]) + 1 + margin[1], own.shape[0])
    canvas = own[r0:r1].copy()
    # The lines above and below: their descenders and ascenders reach into a tight line crop, as in IAM.
    pitch = body * rng.uniform(2.0, 2.8)
    for direction in (-1, 1):
        if rng.random() < 0.35:
            mask, _, t = placed[int(rng.integers(len(placed)))]
            dy = int(round(t - top - r0 + direction * pitch))
            dx = int(rng.integers(0, max(canvas.shape[1] - mask.shape[1], 0) + 1))
            y0, y1 = max(dy, 0), min(dy + mask.shape[0], canvas.shape[0])
            x1 = min(dx + mask.shape[1], canvas.shape[1])
            if y1 > y0:
                region = canvas[y0:y1, dx:x1]
                np.maximum(region, mask[y0 - dy : y1 - dy, : x1 - dx], out=region)
    return canvas


def render(line: LineJob) -> tuple[bytes, int, int]:
    """Render one line -> (file bytes, width, height). Pure: the result depends on the job only."""
    rng = synthetic._rng(line.seed, _LINE_SALT, line.index)
    mask = synthetic._crop(_compose(line, rng), line.err, rng).astype(np.float32) / 255.0
    return synthetic.scan(mask, line.writer, line.kind, rng)


# ---------------------------------------------------------------------------------------------------
# Writing the dataset

HEADER = """\
#--- lines.txt ---------------------------------------------------------------#
#
# synthetic handwriting line information, in the layout of the IAM database
# generated by steps/sources/synthetic_lines.py: {lines} lines, {writers} writers, seed {seed}
#
# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from
#
#     a01-000u-00  -> line id: line 00 of form a01-000u
#     ok           -> result of word segmentation (err: the line's box can be bad)
#     154          -> graylevel to binarize the line
#     19           -> number of components (synthetic: the number of words)
#     408 746 1663 91 -> bounding box around this line in x,y,w,h format
#     A|MOVE|...   -> the transcription, words separated by |
#
"""


def _write_archive(
    path: Path, planned: Sequence[LineJob], results: Iterator[tuple[bytes, int, int]], progress: bool
) -> list[str]:
    """Stream rendered lines into a reproducible lines.tgz; return the lines.txt data lines."""
    out = []
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        bar = tqdm(zip(planned, results), total=len(planned), desc="synthetic lines", unit="line", disable=not progress)
        for line, (data, width, height) in bar:
            number = int(line.id.rsplit("-", 1)[1])
            x, y = 250 + line.index % 97, 700 + 130 * number
            flag = "err" if line.err else "ok"
            out.append(f"{line.id} {flag} {line.grey} {len(line.words)} {x} {y} {width} {height} {line.text}\n")
            form = line.id.rsplit("-", 1)[0]
            member = f"lines/{form.split('-')[0]}/{form}/{line.id}.png"
            tar.addfile(synthetic._tar_member(member, len(data)), io.BytesIO(data))
    return out


def generate(out_dir: Path, num_lines: int, num_writers: int, seed: int, progress: bool = True) -> dict:
    """Write out_dir/lines.txt, out_dir/lines.tgz and out_dir/forms.txt; return counts.

    Counts: lines, words, writers, forms, ok, err, fonts, hands, empty, corrupt. Files appear atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fonts = [p.name for p in synthetic.list_fonts()]
    writers, planned = plan(num_lines, num_writers, seed, fonts, synthetic.load_vocabulary())
    names = (config.LINES_TXT, config.LINES_ARCHIVE, config.FORMS_TXT)
    txt_tmp, tgz_tmp, forms_tmp = (out_dir / f".{n}.partial" for n in names)
    words = sum(len(p.words) for p in planned)
    processes = synthetic._workers(words)
    pool = multiprocessing.get_context("spawn").Pool(processes) if processes > 1 else None
    try:
        # imap keeps job order, so the archive's bytes never depend on scheduling.
        results = pool.imap(render, planned, chunksize=4) if pool else map(render, planned)
        lines = _write_archive(tgz_tmp, planned, results, progress)
        txt_tmp.write_text(
            HEADER.format(lines=num_lines, writers=num_writers, seed=seed) + "".join(lines), encoding="utf-8"
        )
        forms = sorted({p.id.rsplit("-", 1)[0] for p in planned})
        forms_tmp.write_text(synthetic.forms_text(forms, writers), encoding="utf-8")
        for tmp, name in zip((forms_tmp, txt_tmp, tgz_tmp), (config.FORMS_TXT, config.LINES_TXT, config.LINES_ARCHIVE)):
            os.replace(tmp, out_dir / name)
    except BaseException:
        if pool:
            pool.terminate()
        for partial in (txt_tmp, tgz_tmp, forms_tmp):
            partial.unlink(missing_ok=True)
        raise
    finally:
        if pool:
            pool.close()
            pool.join()
    flags = [p.err for p in planned]
    return {
        "lines": len(planned),
        "words": words,
        "writers": len(writers),
        "forms": len({p.id.rsplit("-", 1)[0] for p in planned}),
        "ok": flags.count(False),
        "err": flags.count(True),
        "fonts": len({w.font for w in writers}),
        "hands": len({synthetic.font_family(w.font) for w in writers}),
        "empty": sum(p.kind == "empty" for p in planned),
        "corrupt": sum(p.kind == "corrupt" for p in planned),
    }
