"""Bundled offline "synthetic" handwriting dataset, written in exactly the IAM words layout.

Used by `mlflow run . -e download -P dataset=synthetic` (the default dataset), so the whole pipeline
runs without network access or IAM's research-only licence. Everything downstream reads the output
exactly as it reads real IAM.

Inputs (in the repository, with their licences and provenance):
- `data/fonts/*.ttf|*.otf|*.woff`: handwriting fonts from Debian and Fontsource (SIL OFL, Apache), see
  data/fonts/README.md.
- `data/words/english.txt`: common English words from Debian wamerican/SCOWL, see data/words/README.md.

Outputs, in `out_dir`:
- `words.txt`: IAM's header comment lines, then one line per word with IAM's 9 fields,
  `a01-000u-00-00 ok 154 408 768 27 51 AT A` = id, ok/err segmentation flag, grey level of the line,
  bounding box x y w h on the (virtual) form page (w, h = the image size), grammatical tag, text.
  About 10% of the lines are flagged `err`; those images are deliberately mis-cropped, as IAM's are.
- `words.tgz`: gzip tar with members `a01/a01-000u/a01-000u-00-00.png`: grayscale PNG crops of dark
  ink on light paper. Like real IAM (a01-117-05-02, r06-022-03-05 are 0 bytes) about 0.2% of the
  images are empty files and one is a truncated, undecodable PNG, so consumers' skip-and-count path
  is exercised.

Writers: a synthetic writer is one font plus a persistent style (letter height, slant, stroke width, ink
and paper level, letter spacing, baseline wobble, elastic warp strength, blur, noise, JPEG quality),
varied a little per word. Writer k owns the form group `<letter><NN>` (a01, a02, ..., a99, b01, ...)
exclusively and writes one or more forms `<group>-<NNN>[suffix]` in it. `forms.txt` records form -> hand
in IAM's format, where the hand is the font family: writers who share a family are one "writer" there,
so preprocess's writer-independent split is font-held-out (no font, in any style, in two splits).

Deterministic: the same (num_words, num_writers, seed) gives byte-identical words.txt and words.tgz
(plan drawn from one seeded RNG, each image from an RNG seeded by (seed, index), fixed tar/gzip
metadata), whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import math
import multiprocessing
import os
import tarfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from steps.workflow import config
from steps.workflow.progress import bar as tqdm  # one redrawn line in a terminal, whole lines in a log

FONTS_DIR = config.DATA_DIR / "fonts"
WORDLIST = config.DATA_DIR / "words" / "english.txt"

# IAM's word-level character set (79 symbols); every generated text uses only these.
IAM_CHARSET = "!\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

ERR_RATE = 0.10  # IAM has ~16% err; ours are real mis-crops, so keep them a bit rarer
EMPTY_RATE = 0.002  # share of 0-byte images (at least one), plus exactly one truncated PNG
GROUP_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_WRITERS = len(GROUP_LETTERS) * 99
PARALLEL_MIN_WORDS = 400  # below this, starting worker processes costs more than it saves

# Fonts whose glyphs join up (script): draw the word in one call so joins and contextual forms survive.
CONNECTED_FONTS = (
    "DancingScript",
    "KaushanScript",
    "Ecolier",
    "AlexBrush",
    "Allura",
    "Birthstone",
    "Calligraffitti",
    "Caramel",
    "CedarvilleCursive",
    "Cookie",
    "Damion",
    "DawningOfANewDay",
    "GreatVibes",
    "HomemadeApple",
    "Hurricane",
    "Italianno",
    "LaBelleAurore",
    "Licorice",
    "MrDafoe",
    "MsMadi",
    "NothingYouCouldDo",
    "OoohBaby",
    "Pacifico",
    "Parisienne",
    "Qwigley",
    "Rochester",
    "Sacramento",
    "Satisfy",
    "SendFlowers",
    "SquarePeg",
    "Vibur",
    "Yellowtail",
)
# Fonts already slanted by design: less extra shear, so the total lean stays human.
SLANTED_FONTS = (
    "Italic",
    "DancingScript",
    "KaushanScript",
    "Kristi",
    "AlexBrush",
    "Allura",
    "BadScript",
    "Birthstone",
    "Calligraffitti",
    "Caramel",
    "Caveat",
    "CedarvilleCursive",
    "Damion",
    "DawningOfANewDay",
    "EduTASBeginner",
    "EduVICWANTBeginner",
    "GrapeNuts",
    "GreatVibes",
    "HomemadeApple",
    "Hurricane",
    "Italianno",
    "Kalam",
    "LaBelleAurore",
    "Licorice",
    "MarckScript",
    "MrDafoe",
    "MsMadi",
    "NothingYouCouldDo",
    "OoohBaby",
    "Pacifico",
    "Parisienne",
    "Qwigley",
    "Satisfy",
    "SedgwickAve",
    "SendFlowers",
    "SquarePeg",
    "Sriracha",
    "Yellowtail",
)
FONT_SUFFIXES = (".ttf", ".otf", ".woff")

# Frequent English words, most frequent first, with LOB-like tags (IAM's tag set): real text is
# Zipfian, so function words must be far more frequent than a uniform draw from the word list makes them.
FUNCTION_WORDS = {
    "the": "ATI",
    "of": "IN",
    "and": "CC",
    "to": "TO",
    "a": "AT",
    "in": "IN",
    "is": "BEZ",
    "that": "CS",
    "it": "PP3",
    "was": "BEDZ",
    "he": "PP3A",
    "for": "IN",
    "on": "IN",
    "are": "BER",
    "as": "CS",
    "with": "IN",
    "his": "PP$",
    "they": "PP3AS",
    "I": "PP1A",
    "at": "IN",
    "be": "BE",
    "this": "DT",
    "have": "HV",
    "from": "IN",
    "or": "CC",
    "one": "CD1",
    "had": "HVD",
    "by": "IN",
    "but": "CC",
    "not": "XNOT",
    "what": "WDT",
    "all": "ABN",
    "were": "BED",
    "we": "PP1AS",
    "when": "CS",
    "your": "PP$",
    "can": "MD",
    "said": "VBD",
    "there": "EX",
    "an": "AT",
    "which": "WDT",
    "she": "PP3A",
    "do": "DO",
    "their": "PP$",
    "if": "CS",
    "will": "MD",
    "would": "MD",
    "been": "BEN",
    "has": "HVZ",
    "more": "AP",
    "her": "PP3O",
    "him": "PP3O",
    "who": "WPR",
    "so": "RB",
    "no": "ATI",
    "into": "IN",
    "up": "RP",
    "out": "RP",
    "its": "PP$",
    "them": "PP3OS",
    "than": "CS",
    "then": "RN",
    "some": "DTI",
}
TITLES = ("Mr.", "Mrs.", "Dr.", "St.")  # IAM keeps the full stop of these inside the word
SENTENCE_ENDS = ((".", 0.78), ("?", 0.08), ("!", 0.05), (";", 0.05), (":", 0.04))
RARE_PUNCT = ("-", "(", ")", "&", "/", "#", "+", "*")

_IMAGE_SALT, _WRITER_SALT, _PLAN_SALT = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Writer:
    """Persistent style of one synthetic writer (lengths in pixels unless noted)."""

    index: int
    group: str  # form group owned by this writer, e.g. "a01"
    font: str  # file name in FONTS_DIR
    body: float  # letter height: (2 * height of 'x' + height of 'H') / 3
    slant: float  # horizontal shear (dx per dy), > 0 leans right
    rotation_sd: float  # degrees, per word
    stroke: float  # target stroke thickness
    spacing: float  # extra letter spacing, as a fraction of the body height
    wobble: float  # per-letter baseline jitter, as a fraction of the body height
    elastic: float  # smooth random displacement amplitude, as a fraction of the body height
    elastic_cell: float  # its correlation length, as a fraction of the body height
    ink: float  # grey level of the ink
    paper: float  # grey level of the background
    blur: float  # Gaussian blur radius of the strokes
    noise: float  # sd of pixel noise
    texture: float  # amplitude of low-frequency paper unevenness
    jpeg: int  # JPEG quality the writer's scanner compresses with (0: lossless scan)


@dataclasses.dataclass(frozen=True)
class Job:
    """One word image to render: everything a worker process needs, and nothing else."""

    index: int
    text: str
    writer: Writer
    err: bool  # mis-crop the image, as IAM's err segmentations are
    kind: str  # "normal" PNG, "empty" (0 bytes) or "corrupt" (truncated PNG)
    seed: int


@dataclasses.dataclass(frozen=True)
class PlannedWord:
    """A words.txt line before its image size (and so its bounding box) is known."""

    id: str
    flag: str
    grey: int
    x0: int  # x where its line starts on the page (for the first word of a line)
    y: int  # centre line of its text line on the page
    gap: int  # space before this word on its line
    first_in_line: bool
    tag: str
    job: Job


# ---------------------------------------------------------------------------------------------------
# Resources


def list_fonts(fonts_dir: Path = FONTS_DIR) -> list[Path]:
    """The bundled font files, sorted so that writer->font assignment does not depend on the filesystem."""
    fonts = sorted(p for p in fonts_dir.iterdir() if p.suffix.lower() in FONT_SUFFIXES)
    if not fonts:
        raise FileNotFoundError(f"no .ttf/.otf/.woff fonts in {fonts_dir}: the synthetic dataset needs data/fonts/")
    return fonts


@functools.cache
def load_vocabulary(path: Path = WORDLIST) -> tuple[str, ...]:
    """The word list, minus anything outside IAM's character set or with spaces."""
    words = tuple(w for w in path.read_text(encoding="utf-8").split("\n") if w and set(w) <= set(IAM_CHARSET))
    if not words:
        raise FileNotFoundError(f"empty word list {path}")
    return words


@functools.cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@functools.cache
def _font_metrics(path: str) -> tuple[float, float]:
    """(body height, stroke thickness) per pixel of font size, measured so fonts can be normalised.

    Fonts differ a lot at the same nominal size (Ecolier's x-height is half Comic Neue's), so writers
    choose a physical letter size and stroke, and each font is scaled and thickened to match them.
    The body height, a mean of the heights of 'x' (weight 2) and 'H' (weight 1), keeps both small
    letters (most of the ink) and capitals in IAM's range (its capital A in a01-000u-00-00 is 51 px).
    """
    size = 100
    font = _font(path, size)
    xheight, capital = -font.getbbox("x", anchor="ls")[1], -font.getbbox("H", anchor="ls")[1]
    body = (2 * xheight + capital) / 3 / size
    left, top, right, bottom = font.getbbox("mnohx")
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), "mnohx", font=font, fill=255)
    ink = np.asarray(img) > 127
    edges = (ink[1:] != ink[:-1]).sum() + (ink[:, 1:] != ink[:, :-1]).sum()
    stroke = 2.0 * ink.sum() / max(int(edges), 1)  # area / half perimeter ~ mean stroke width
    return body, stroke / size


# ---------------------------------------------------------------------------------------------------
# Planning: writers, forms, lines, texts (cheap, sequential, one RNG)


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *salt]))


def font_family(name: str) -> str:
    """`ComicNeue-BoldItalic.otf` -> `ComicNeue`: weights and italics of one design are one family."""
    return name.rsplit(".", 1)[0].split("-")[0]


def make_writers(num_writers: int, seed: int, fonts: Sequence[str]) -> list[Writer]:
    """Draw each writer's style.

    Fonts are dealt family by family in a shuffled round, then variant by variant within a family,
    so one family with many variants (Comic Neue has six) does not dominate the hands.
    """
    rng = _rng(seed, _WRITER_SALT)
    families = sorted({font_family(f) for f in fonts})
    family_order = [families[i] for i in rng.permutation(len(families))]
    shuffled = [fonts[i] for i in rng.permutation(len(fonts))]
    variants = {fam: [f for f in shuffled if font_family(f) == fam] for fam in families}
    writers = []
    for k in range(num_writers):
        rng = _rng(seed, _WRITER_SALT, k)
        family = variants[family_order[k % len(families)]]
        font = family[(k // len(families)) % len(family)]
        slanted = any(s in font for s in SLANTED_FONTS)
        connected = any(s in font for s in CONNECTED_FONTS)
        body = rng.uniform(28.0, 46.0)
        paper = rng.uniform(212.0, 252.0)
        writers.append(
            Writer(
                index=k,
                group=f"{GROUP_LETTERS[k // 99]}{k % 99 + 1:02d}",
                font=font,
                body=body,
                # Most people lean right a little; a few upright or left.
                slant=float(np.clip(rng.normal(0.02 if slanted else 0.14, 0.13), -0.25, 0.45)),
                rotation_sd=rng.uniform(0.3, 2.0),
                stroke=body * rng.uniform(0.06, 0.13),
                spacing=0.0 if connected else rng.uniform(-0.03, 0.12),
                wobble=rng.uniform(0.0, 0.015) if connected else rng.uniform(0.0, 0.05),
                elastic=rng.uniform(0.015, 0.06),
                elastic_cell=rng.uniform(0.6, 1.2),
                ink=rng.uniform(0.0, min(75.0, paper - 120.0)),
                paper=paper,
                blur=rng.uniform(0.0, 0.8),
                noise=rng.uniform(0.0, 5.0),
                texture=rng.uniform(0.0, 8.0),
                # Many archives hold JPEG scans: blocky artefacts around strokes, at a quality per scanner.
                jpeg=int(rng.integers(20, 80)) if rng.random() < 0.4 else 0,
            )
        )
    return writers


def _allocate(total: int, parts: int, rng: np.random.Generator, spread: float) -> list[int]:
    """Split `total` into `parts` positive counts, unevenly (weights 1 +- spread), summing exactly."""
    weights = rng.uniform(1.0 - spread, 1.0 + spread, parts)
    share = (total - parts) * weights / weights.sum()
    counts = np.floor(share).astype(int)
    # Largest remainders get the leftovers, so the sum is exact.
    for i in np.argsort(-(share - counts), kind="stable")[: total - parts - counts.sum()]:
        counts[i] += 1
    return [int(c) + 1 for c in counts]


def _number(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.4:
        return str(rng.integers(1900, 2000))  # years, as in IAM's 1960s newspaper texts
    if kind < 0.8:
        return str(rng.integers(1, 100))
    return str(rng.integers(100, 10000))


def _sentence(rng: np.random.Generator, vocabulary: Sequence[str]) -> list[tuple[str, str]]:
    """One sentence as (text, tag) tokens with IAM-like punctuation, capitals, numbers and 's."""
    tokens: list[tuple[str, str]] = []
    function_words = list(FUNCTION_WORDS)
    zipf = 1.0 / np.arange(2, len(function_words) + 2)  # "the" ~5% of all tokens, as in English text
    zipf /= zipf.sum()
    quote_open = False
    for position in range(int(rng.integers(3, 16))):
        r = rng.random()
        if r < 0.02:
            text, tag = _number(rng), "CD"
        elif r < 0.03:
            text, tag = TITLES[rng.integers(len(TITLES))], "NPT"
        elif r < 0.38:
            text = function_words[rng.choice(len(function_words), p=zipf)]
            tag = FUNCTION_WORDS[text]
        else:
            text = vocabulary[rng.integers(len(vocabulary))]
            tag = "NP" if text[0].isupper() else "NN"
            if rng.random() < 0.01 and len(text) <= 6:
                text, tag = text.upper(), "NP"  # headline capitals, as in IAM's a01 forms
        if position == 0 and text[0].islower():
            text = text[0].upper() + text[1:]
        if rng.random() < 0.01:
            tokens.append(('"', '"'))
            quote_open = not quote_open
        tokens.append((text, tag))
        r = rng.random()
        if r < 0.03 and text[-1].isalpha():
            tokens.append(("'s", "$"))
        elif r < 0.11:
            tokens.append((",", ","))
        elif r < 0.12:
            tokens.append(("-", "-"))
        elif r < 0.125:
            p = RARE_PUNCT[rng.integers(len(RARE_PUNCT))]
            tokens.append((p, p))
    end = rng.choice(len(SENTENCE_ENDS), p=[p for _, p in SENTENCE_ENDS])
    tokens.append((SENTENCE_ENDS[end][0],) * 2)
    if quote_open:
        tokens.append(('"', '"'))
    return tokens


def _token_stream(rng: np.random.Generator, vocabulary: Sequence[str]) -> Iterator[tuple[str, str]]:
    while True:
        yield from _sentence(rng, vocabulary)


def plan(
    num_words: int, num_writers: int, seed: int, fonts: Sequence[str], vocabulary: Sequence[str]
) -> tuple[list[Writer], list[PlannedWord]]:
    """Decide every writer, form, line, word text, flag and special (empty/corrupt) image."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_writers < 1 or num_writers > MAX_WRITERS:
        raise ValueError(f"num_writers must be between 1 and {MAX_WRITERS}, got {num_writers}")
    if num_words < num_writers:
        raise ValueError(
            f"num_words ({num_words}) must be at least num_writers ({num_writers}): "
            "every writer writes at least one word"
        )
    writers = make_writers(num_writers, seed, fonts)
    rng = _rng(seed, _PLAN_SALT)
    tokens = _token_stream(rng, vocabulary)
    planned: list[PlannedWord] = []
    for writer, count in zip(writers, _allocate(num_words, num_writers, rng, spread=0.4)):
        # IAM forms hold ~50-80 words; a writer with more words fills more forms.
        num_forms = max(1, round(count / rng.uniform(30.0, 70.0)))
        if num_forms > 1000:
            raise ValueError(f"{count} words for one writer need more than 1000 forms: add writers")
        numbers = np.sort(rng.choice(1000, size=num_forms, replace=False))
        for number, form_count in zip(numbers, _allocate(count, num_forms, rng, spread=0.3)):
            suffix = ("", "", "", "u", "x", "a", "b")[rng.integers(7)]
            form = f"{writer.group}-{number:03d}{suffix}"
            line, written = 0, 0
            while written < form_count:
                n = min(int(rng.integers(4, 11)), form_count - written)
                grey = int(np.clip((writer.paper + writer.ink) / 2 + rng.normal(0, 8), 0, 255))
                x0, y = int(rng.integers(250, 420)), 700 + 130 * line + int(rng.integers(-12, 13))
                for w in range(n):
                    text, tag = next(tokens)
                    # Tight gaps before punctuation, as IAM crops a "," right after its word.
                    gap = int(rng.integers(2, 12)) if not text[0].isalnum() else int(rng.integers(18, 60))
                    job = Job(len(planned), text, writer, bool(rng.random() < ERR_RATE), "normal", seed)
                    planned.append(
                        PlannedWord(
                            f"{form}-{line:02d}-{w:02d}", "err" if job.err else "ok", grey, x0, y, gap, w == 0, tag, job
                        )
                    )
                written += n
                line += 1
    # A few unreadable images, flagged ok or err at random like IAM's, marked on the planned jobs.
    num_special = min(num_words, max(1, round(EMPTY_RATE * num_words)) + 1)
    for rank, i in enumerate(rng.choice(num_words, size=num_special, replace=False)):
        word = planned[i]
        err = bool(rng.random() < 0.5)
        job = dataclasses.replace(word.job, err=err, kind="corrupt" if rank == 0 else "empty")
        planned[i] = dataclasses.replace(word, flag="err" if err else "ok", job=job)
    return writers, planned


# ---------------------------------------------------------------------------------------------------
# Rendering one word (runs in worker processes; depends only on its Job)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: float, amplitude: float) -> np.ndarray:
    """Random (dx, dy) per pixel, shape (2, H, W): Gaussian on a coarse lattice, bicubic in between.

    Smoothness matters: independent per-pixel jitter would shred strokes, a smooth field bends them
    the way an unsteady hand does.
    """
    height, width = shape
    lattice = (int(math.ceil(height / cell)) + 2, int(math.ceil(width / cell)) + 2)
    coarse = rng.normal(0.0, amplitude, (2, *lattice)).astype(np.float32)
    return np.stack(
        [np.asarray(Image.fromarray(c, mode="F").resize((width, height), Image.Resampling.BICUBIC)) for c in coarse]
    )


def _warp(
    mask: Image.Image, slant: float, angle: float, field_amp: float, field_cell: float, rng: np.random.Generator
) -> np.ndarray:
    """Shear (slant), rotate and elastically bend the ink mask in one bilinear remap (numpy, float32).

    One resampling instead of three keeps the strokes sharp.
    """
    src = np.pad(np.asarray(mask, dtype=np.float32), 1)  # zero border: samples outside read as paper
    height, width = mask.size[1], mask.size[0]
    # Forward map: rotation @ shear, shear x' = x - slant*(y - cy) (the top moves right). Inverted by
    # hand: np.linalg.inv on a 2x2 costs more than the rest of the warp (BLAS start-up).
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    m = ((cos, -cos * slant - sin), (sin, -sin * slant + cos))
    det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
    inv = ((m[1][1] / det, -m[0][1] / det), (-m[1][0] / det, m[0][0] / det))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs - width / 2, ys - height / 2
    field = _smooth_field(rng, (height, width), field_cell, field_amp)
    sx = inv[0][0] * dx + inv[0][1] * dy + width / 2 + field[0] + 1  # +1: the padding
    sy = inv[1][0] * dx + inv[1][1] * dy + height / 2 + field[1] + 1
    x0 = np.clip(np.floor(sx), 0, width).astype(np.intp)
    y0 = np.clip(np.floor(sy), 0, height).astype(np.intp)
    fx = np.clip(sx - x0, 0.0, 1.0)
    fy = np.clip(sy - y0, 0.0, 1.0)
    top = src[y0, x0] * (1 - fx) + src[y0, x0 + 1] * fx
    bottom = src[y0 + 1, x0] * (1 - fx) + src[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _ink_mask(job: Job, rng: np.random.Generator) -> Image.Image:
    """The word drawn as an ink-coverage mask (0 = paper, 255 = ink) in the writer's hand, uncropped."""
    return ink_mask(job, rng)[0]


def ink_mask(job: Job, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """`_ink_mask` and the row of its baseline (where line rendering aligns words; the warp keeps it near)."""
    w = job.writer
    path = str(FONTS_DIR / w.font)
    body_ratio, stroke_ratio = _font_metrics(path)
    body = w.body * rng.uniform(0.94, 1.06)
    size = max(8, round(body / body_ratio))
    font = _font(path, size)
    # Thicken with FreeType's stroker, or thin by erosion, towards the writer's stroke width.
    delta = w.stroke * rng.uniform(0.9, 1.1) - stroke_ratio * size
    stroke_width = max(0, round(delta / 2))
    erode = delta < -1.6 and stroke_ratio * size - 2 >= 2.0
    spacing = w.spacing * body
    wobble = w.wobble * body
    slant = w.slant + rng.normal(0, 0.04)
    angle = rng.normal(0, w.rotation_sd)
    elastic = w.elastic * body

    # Canvas: the text's true ink box (swashes may leave the ascent/descent lines) plus just enough
    # margin for the slant, rotation and warp below; a tight canvas keeps the per-pixel work small.
    left, top, right, bottom = font.getbbox(job.text, anchor="ls", stroke_width=stroke_width)
    length = font.getlength(job.text) + spacing * max(len(job.text) - 1, 0)
    left, right = min(left, 0), max(right, math.ceil(length) + stroke_width)
    turn = abs(math.sin(math.radians(angle)))
    margin = 3 * elastic + stroke_width + 6
    pad_x = int((abs(slant) + turn) * (bottom - top) / 2 + margin)
    pad_y = int(turn * (right - left) / 2 + 3 * wobble + margin)
    canvas = Image.new("L", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), 0)
    draw = ImageDraw.Draw(canvas)
    origin, baseline = pad_x - left, pad_y - top
    if any(s in w.font for s in CONNECTED_FONTS) or len(job.text) == 1:
        draw.text(
            (origin, baseline), job.text, font=font, fill=255, anchor="ls", stroke_width=stroke_width, stroke_fill=255
        )
    else:
        # Letter by letter at the font's own (kerned) advances plus the writer's spacing, each on a
        # slightly wandering baseline.
        phase, period = rng.uniform(0, 2 * math.pi), rng.uniform(3.0, 7.0)
        for i, ch in enumerate(job.text):
            x = origin + font.getlength(job.text[:i]) + spacing * i
            dy = wobble * math.sin(phase + 2 * math.pi * i / period) + rng.normal(0, 0.3 * wobble)
            draw.text(
                (x, baseline + dy), ch, font=font, fill=255, anchor="ls", stroke_width=stroke_width, stroke_fill=255
            )
    if erode:
        canvas = canvas.filter(ImageFilter.MinFilter(3))
    warped = _warp(canvas, slant, angle, elastic, max(w.elastic_cell * body, 6.0), rng)
    canvas = Image.fromarray(np.clip(np.rint(warped), 0, 255).astype(np.uint8), mode="L")
    blur = w.blur * rng.uniform(0.7, 1.3)
    if blur > 0.2:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
    return canvas, baseline


def _crop(mask: np.ndarray, err: bool, rng: np.random.Generator) -> np.ndarray:
    """Tight crop around the ink with a small margin; err words get a bad segmentation, as in IAM."""
    rows = np.flatnonzero(mask.max(axis=1) > 40)
    cols = np.flatnonzero(mask.max(axis=0) > 40)
    if len(rows) == 0:  # nothing visible (cannot happen with the bundled fonts); keep a blank crop
        return mask[:8, :8]
    m = rng.integers(1, 6, size=4)
    top, bottom = max(rows[0] - m[0], 0), min(rows[-1] + 1 + m[1], mask.shape[0])
    left, right = max(cols[0] - m[2], 0), min(cols[-1] + 1 + m[3], mask.shape[1])
    if err:
        width, height = right - left, bottom - top
        cut = rng.uniform(0.1, 0.3)
        side = rng.integers(4)
        if side == 0:
            left += int(cut * width)
        elif side == 1:
            right -= int(cut * width)
        elif side == 2:
            bottom -= int(cut * height)
        else:  # a too-generous box that grabs empty page
            right = min(right + int(cut * width) + 4, mask.shape[1])
        left, right = min(left, right - 2), max(right, left + 2)
        top, bottom = min(top, bottom - 2), max(bottom, top + 2)
    return mask[top:bottom, left:right]


def render(job: Job) -> tuple[bytes, int, int]:
    """Render one word -> (file bytes, width, height). Pure: the result depends on the job only."""
    rng = _rng(job.seed, _IMAGE_SALT, job.index)
    w = job.writer
    mask = _crop(np.asarray(_ink_mask(job, rng)), job.err, rng).astype(np.float32) / 255.0
    return scan(mask, w, job.kind, rng)


def scan(mask: np.ndarray, w: Writer, kind: str, rng: np.random.Generator) -> tuple[bytes, int, int]:
    """An ink mask (float, 1 = ink) as the writer's paper, ink, noise and scanner make it -> (file bytes, width, height).

    `kind` "empty" gives 0 bytes and "corrupt" a truncated PNG, as IAM's unreadable images.
    """
    height, width = mask.shape
    paper = w.paper + rng.normal(0, 3)
    ink = float(np.clip(w.ink + rng.normal(0, 6), 0, paper - 100))  # keep contrast: legibility first
    # Low-frequency paper unevenness (scanner shading) + sensor noise.
    texture = Image.fromarray(rng.normal(0, w.texture, (3, 3)).astype(np.float32), mode="F")
    texture = np.asarray(texture.resize((width, height), Image.Resampling.BICUBIC))
    pixels = paper + texture - (paper - ink) * mask + rng.normal(0, w.noise, mask.shape)
    img = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    if w.jpeg:
        scanned = io.BytesIO()
        img.save(scanned, format="JPEG", quality=int(np.clip(w.jpeg + rng.integers(-8, 9), 10, 95)))
        img = Image.open(scanned)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    data = buffer.getvalue()
    if kind == "empty":
        data = b""
    elif kind == "corrupt":
        data = data[: max(len(data) // 2, 60)]  # signature and header intact, pixel data cut off
    return data, width, height


# ---------------------------------------------------------------------------------------------------
# Writing the dataset


HEADER = """\
#--- words.txt ---------------------------------------------------------------#
#
# synthetic handwriting word information, in the layout of the IAM database
# generated by steps/synthetic.py: {words} words, {writers} writers, seed {seed}
#
# format: a01-000u-00-00 ok 154 408 768 27 51 AT A
#
#     a01-000u-00-00  -> word id for line 00 in form a01-000u
#     ok              -> result of word segmentation
#                            ok: word was correctly
#                            err: segmentation of word can be bad
#
#     154             -> graylevel to binarize the line containing this word
#     408 768 27 51   -> bounding box around this word in x,y,w,h format
#     AT              -> the grammatical tag for this word
#     A               -> the transcription for this word
#
#     writer          -> one writer per form group: the writer of a01-000u is a01
#
"""


def _tar_member(name: str, size: int) -> tarfile.TarInfo:
    # Fixed metadata: the archive must not depend on when or by whom it was made.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_archive(
    path: Path, planned: Sequence[PlannedWord], results: Iterator[tuple[bytes, int, int]], progress: bool
) -> list[str]:
    """Stream rendered images into a reproducible words.tgz; return the words.txt data lines."""
    lines, x = [], 0
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        bar = tqdm(zip(planned, results), total=len(planned), desc="synthetic words", unit="word", disable=not progress)
        for word, (data, width, height) in bar:
            # Words of a line sit side by side on the page: the box is where this crop came from.
            x = word.x0 if word.first_in_line else x + word.gap
            lines.append(
                f"{word.id} {word.flag} {word.grey} {x} {word.y - height // 2} "
                f"{width} {height} {word.tag} {word.job.text}\n"
            )
            x += width
            form = word.id.rsplit("-", 2)[0]
            tar.addfile(_tar_member(f"{form.split('-')[0]}/{form}/{word.id}.png", len(data)), io.BytesIO(data))
    return lines


def forms_text(forms: Sequence[str], writers: Sequence[Writer]) -> str:
    """forms.txt in IAM's format (form id, writer id, ...), where the writer id is the hand.

    The hand is the font family: writers sharing a family (and a family's weights and italics) are one
    writer for the split, so no font is ever in two splits.
    """
    hands = sorted({font_family(w.font) for w in writers})
    hand_of_group = {w.group: hands.index(font_family(w.font)) for w in writers}
    return "# form-id writer-id (synthetic: the writer id is the hand, i.e. the font family)\n" + "".join(
        f"{f} {hand_of_group[f[:3]]:03d} 1 prt 1 1 1 1\n" for f in forms
    )


def _workers(num_words: int) -> int:
    if num_words < PARALLEL_MIN_WORDS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


def generate(out_dir: Path, num_words: int, num_writers: int, seed: int, progress: bool = True) -> dict:
    """Write out_dir/words.txt, out_dir/words.tgz and out_dir/forms.txt (writer ids); return counts.

    Counts: words, writers, forms, ok, err, fonts (distinct fonts used), empty, corrupt.
    Files appear atomically (written under temporary names, then renamed).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fonts = [p.name for p in list_fonts()]
    writers, planned = plan(num_words, num_writers, seed, fonts, load_vocabulary())
    jobs = [p.job for p in planned]

    txt_tmp = out_dir / f".{config.WORDS_TXT}.partial"
    tgz_tmp = out_dir / f".{config.WORDS_ARCHIVE}.partial"
    forms_tmp = out_dir / f".{config.FORMS_TXT}.partial"
    processes = _workers(num_words)
    pool = multiprocessing.get_context("spawn").Pool(processes) if processes > 1 else None
    try:
        # imap keeps job order, so the archive's member order (and bytes) never depend on scheduling.
        results = pool.imap(render, jobs, chunksize=16) if pool else map(render, jobs)
        lines = _write_archive(tgz_tmp, planned, results, progress)
        txt_tmp.write_text(
            HEADER.format(words=num_words, writers=num_writers, seed=seed) + "".join(lines), encoding="utf-8"
        )
        # forms.txt in IAM's format (form id, writer id, ...) so preprocess keeps every writer in one
        # split, exactly as it does for official IAM, whose ascii.tgz carries the same file.
        forms = sorted({p.id.rsplit("-", 2)[0] for p in planned})
        forms_tmp.write_text(forms_text(forms, writers), encoding="utf-8")
        os.replace(forms_tmp, out_dir / config.FORMS_TXT)
        os.replace(txt_tmp, out_dir / config.WORDS_TXT)
        os.replace(tgz_tmp, out_dir / config.WORDS_ARCHIVE)
    except BaseException:
        # Leave nothing half-written behind (an interrupted run must not look like a dataset).
        if pool:
            pool.terminate()
        for partial in (txt_tmp, tgz_tmp, forms_tmp):
            partial.unlink(missing_ok=True)
        raise
    finally:
        if pool:
            pool.close()
            pool.join()

    flags = [p.flag for p in planned]
    return {
        "words": len(planned),
        "writers": len(writers),
        "forms": len({p.id.rsplit("-", 2)[0] for p in planned}),
        "ok": flags.count("ok"),
        "err": flags.count("err"),
        "fonts": len({w.font for w in writers}),
        "hands": len({font_family(w.font) for w in writers}),
        "empty": sum(p.job.kind == "empty" for p in planned),
        "corrupt": sum(p.job.kind == "corrupt" for p in planned),
    }
