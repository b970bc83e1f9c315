"""`dataset=page` and `dataset=alto`: page images with PAGE XML or ALTO transcriptions, cropped into lines and words.

Each XML file is parsed safely (defusedxml with DTDs refused: no entity expansion, no external entities),
read by steps/sources/pagexml.py or steps/sources/alto.py into a `Page` of lines (polygon, text, words),
and every line (and word, when the file has Word/String elements) is cropped from the page image: the
polygon's bounding box, clipped to the page, with the pixels outside the polygon painted white. A line
given only by its baseline gets a band around it as tall as the page's other lines. The page is the
group (the writer) for splitting; lines are numbered in reading order.

Counted, not fatal: files that are not of the format or not well-formed, refused XML (DTD or entities),
pages whose image is missing, lines outside the page or without coordinates, and empty lines.
"""

from __future__ import annotations

import io
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import defusedxml
import defusedxml.ElementTree as SafeET
from PIL import Image, ImageDraw, UnidentifiedImageError

from steps.sources.errors import DownloadError
from steps.sources.layout import Collected, Item
from steps.sources.tree import IMAGE_SUFFIXES

Point = tuple[float, float]


@dataclass(frozen=True)
class Region:
    """A line or a word: its outline on the page (polygon, or a baseline when that is all there is) and text."""

    id: str
    text: str
    polygon: tuple[Point, ...] = ()
    baseline: tuple[Point, ...] = ()


@dataclass(frozen=True)
class Line(Region):
    words: tuple[Region, ...] = ()


@dataclass
class Page:
    image: str  # the image file name the XML gives ("" = not given)
    lines: list[Line] = field(default_factory=list)
    scale: tuple[float, float] | None = (1.0, 1.0)  # XML units -> pixels; None = unknown until the image is open
    size: tuple[float, float] | None = None  # the page size in XML units, when given


class NotThisFormat(ValueError):
    """The XML is well-formed but is not a page of the expected format."""


def parse_xml(data: bytes) -> ET.Element:
    """Well-formed XML with no DTD -> its root; defusedxml's errors for DTDs and entities, ParseError else."""
    return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def local(tag: str) -> str:
    """`{namespace}TextLine` -> `TextLine`: PAGE 2013/2019 and ALTO v2-v4 differ only in their namespaces."""
    return tag.rsplit("}", 1)[-1]


def points(text: str) -> tuple[Point, ...]:
    """ "x,y x,y ..." or "x y x y ..." -> ((x, y), ...); ValueError when malformed."""
    numbers = [float(v) for v in text.replace(",", " ").split()]
    if len(numbers) % 2:
        raise ValueError(f"odd number of coordinates in {text[:40]!r}")
    return tuple(zip(numbers[0::2], numbers[1::2]))


def collect(root: Path, parse: Callable[[ET.Element], Page], kind: str) -> Collected:
    """Every page XML under `root` -> cropped line and word items, with what was skipped and why."""
    out = Collected()
    files = sorted(p for p in root.rglob("*.xml") if p.is_file())
    if not files:
        raise DownloadError(f"{root} holds no .xml files: dataset={kind} needs {kind} files beside their page images")
    images = {p.name: p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
    for xml in files:
        rel = xml.relative_to(root).as_posix()
        try:
            page = parse(parse_xml(xml.read_bytes()))
        except defusedxml.DefusedXmlException as e:
            out.skip("unsafe_xml", f"{rel}: refused ({type(e).__name__}: DTDs and entities are not read)")
            continue
        except ET.ParseError as e:
            out.skip("malformed_xml", f"{rel}: not well-formed XML ({e})")
            continue
        except NotThisFormat as e:
            out.skip("not_" + kind, f"{rel}: {e}")
            continue
        image = _find_image(xml, page.image, images)
        if image is None:
            out.skip("missing_image", f"{rel}: page image {page.image or xml.stem + '.*'} not found")
            out.skipped["missing_image_lines"] += len(page.lines)
            continue
        try:
            with Image.open(image) as im:
                picture = im.convert("L")
        except (UnidentifiedImageError, OSError) as e:
            out.skip("unreadable_image", f"{rel}: page image {image.name} is not readable ({type(e).__name__})")
            continue
        _crop_page(page, picture, rel[: -len(".xml")], out)
    return out


def _find_image(xml: Path, name: str, images: dict[str, Path]) -> Path | None:
    """The XML's own image: the name it gives (beside it, or by base name anywhere), else its stem's image."""
    if name:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        for candidate in (xml.parent / name, xml.parent / base):
            if candidate.is_file() and candidate.suffix.lower() in IMAGE_SUFFIXES:
                return candidate
        if base in images:
            return images[base]
    for suffix in IMAGE_SUFFIXES:
        for candidate in (xml.with_suffix(suffix), xml.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def _crop_page(page: Page, picture: Image.Image, group: str, out: Collected) -> None:
    if page.scale is None:  # units other than pixels: the page size in those units maps them onto the image
        if not page.size:
            out.skip("unknown_units", f"{group}: coordinates are not pixels and the page size is not given")
            return
        page.scale = (picture.width / page.size[0], picture.height / page.size[1])
    boxes = [_box(r.polygon, page.scale) for r in page.lines if r.polygon]
    heights = [y1 - y0 for _, y0, _, y1 in boxes]
    band = statistics.median(heights) if heights else picture.height / 30
    for number, line in enumerate(page.lines):
        where = f"{group} line {line.id or number}"
        crop = _crop(line, picture, page.scale, band, where, out)
        if crop is not None:
            out.lines.append(Item(group, line.text, *crop, where, number))
        for word in line.words:
            crop = _crop(word, picture, page.scale, band, f"{where} word {word.id}", out)
            if crop is not None:
                out.words.append(Item(group, word.text, *crop, f"{where} word {word.id}", number))


def _box(polygon: tuple[Point, ...], scale: tuple[float, float]) -> tuple[float, float, float, float]:
    xs, ys = [x * scale[0] for x, _ in polygon], [y * scale[1] for _, y in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def _crop(
    region: Region, picture: Image.Image, scale: tuple[float, float], band: float, where: str, out: Collected
) -> tuple[bytes, str, tuple[int, int]] | None:
    """The region cut out of the page -> (PNG bytes, suffix, (width, height)), or None (skipped and counted)."""
    if not region.text.strip():
        out.skip("empty_text", f"{where}: no transcription")
        return None
    if region.polygon:
        polygon = [(x * scale[0], y * scale[1]) for x, y in region.polygon]
    elif region.baseline:
        x0, y0, x1, y1 = _box(region.baseline, scale)
        polygon = [(x0, y0 - 0.75 * band), (x1, y0 - 0.75 * band), (x1, y1 + 0.25 * band), (x0, y1 + 0.25 * band)]
    else:
        out.skip("no_coordinates", f"{where}: neither Coords/Shape nor a baseline")
        return None
    x0, y0, x1, y1 = _box(tuple(polygon), (1.0, 1.0))
    cx0, cy0 = max(0, int(x0)), max(0, int(y0))
    cx1, cy1 = min(picture.width, int(round(x1)) + 1), min(picture.height, int(round(y1)) + 1)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        out.skip("outside_page", f"{where}: its box ({x0:.0f},{y0:.0f})-({x1:.0f},{y1:.0f}) is off the page")
        return None
    if (cx0, cy0) != (int(x0), int(y0)) or cx1 < int(round(x1)) + 1 or cy1 < int(round(y1)) + 1:
        out.adjusted["clipped_to_page"] += 1
    crop = picture.crop((cx0, cy0, cx1, cy1))
    if len(polygon) > 4 or not _axis_aligned(polygon):
        mask = Image.new("L", crop.size, 0)
        ImageDraw.Draw(mask).polygon([(x - cx0, y - cy0) for x, y in polygon], fill=255)
        crop = Image.composite(crop, Image.new("L", crop.size, 255), mask)
    buf = io.BytesIO()
    crop.save(buf, "PNG")
    return buf.getvalue(), ".png", crop.size


def _axis_aligned(polygon: list[Point]) -> bool:
    return len({round(x) for x, _ in polygon}) <= 2 and len({round(y) for _, y in polygon}) <= 2
