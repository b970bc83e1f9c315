"""Small real "own data" sources built in code: a TSV folder with broken rows, rendered pages with PAGE XML and
ALTO (polygons, words, reading order), hostile XML, and non-Latin text. Used by the source unit tests and by
the end-to-end `mlflow run` tests; nothing is mocked, the images are drawn with a real font.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "DejaVuSans.ttf"  # Debian fonts-dejavu-core: Latin, Greek and Cyrillic
GREEK = ("αλφα", "βήτα", "γάμμα", "δέλτα", "ζήτα", "θήτα", "κάππα", "λάμδα", "μι", "νι", "ξι", "όμικρον", "πι", "ρω")
CYRILLIC = ("мир", "дом", "кот", "лес", "сон", "чай", "день", "ночь", "река", "море", "гора", "поле")
LATIN = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "to", "sea", "old", "man")

PAGE_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
ALTO_V4 = "http://www.loc.gov/standards/alto/ns-v4#"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"><Page imageFilename="p.png">
<TextRegion id="r"><TextLine id="l"><Coords points="0,0 9,0 9,9 0,9"/><TextEquiv><Unicode>&lol3;</Unicode>
</TextEquiv></TextLine></TextRegion></Page></PcGts>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE alto [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Layout><Page WIDTH="9" HEIGHT="9"><PrintSpace>
<TextBlock><TextLine HPOS="0" VPOS="0" WIDTH="9" HEIGHT="9"><String CONTENT="&secret;" HPOS="0" VPOS="0"
WIDTH="9" HEIGHT="9"/></TextLine></TextBlock></PrintSpace></Page></Layout></alto>"""


def font(size: int = 28) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT, size)


def word_image(text: str, seed: int, size: int = 28) -> Image.Image:
    """A dark word on light paper, with a little per-writer jitter."""
    rng = random.Random(seed)
    f = font(size + rng.randint(-3, 3))
    left, top, right, bottom = f.getbbox(text)
    im = Image.new("L", (right - left + 16, bottom - top + 14), 235 + rng.randint(0, 15))
    ImageDraw.Draw(im).text((8 - left, 7 - top), text, fill=rng.randint(0, 50), font=f)
    return im.rotate(rng.uniform(-2, 2), fillcolor=240, expand=False)


def tsv_folder(root: Path, vocabulary: tuple[str, ...], writers: int, per_writer: int, seed: int = 0) -> dict:
    """A folder with images under <writer>/ and labels.tsv (path, text, writer), plus broken rows.

    Returns counts: good rows, and the broken rows by the reason download should give.
    """
    rng = random.Random(seed)
    rows = ["path\ttext\twriter"]
    for w in range(writers):
        (root / f"hand{w}").mkdir(parents=True, exist_ok=True)
        for i in range(per_writer):
            text = rng.choice(vocabulary)
            word_image(text, seed=w).save(root / f"hand{w}" / f"{i:03d}.png")
            rows.append(f"hand{w}/{i:03d}.png\t{text}\thand {w}")
    rows += [
        "hand0/nope.png\tmissing\thand 0",  # missing_image
        "hand0/000.png\tagain\thand 0",  # duplicate
        "hand0/001.png",  # short_row
    ]
    (root / "hand0" / "text.png").write_bytes(b"not a png")
    rows += ["hand0/text.png\tjunk\thand 0"]  # not_an_image
    data = ("\n".join(rows) + "\n").encode("utf-8") + b"hand0/002.png\t\xff\xfeoops\thand 0\n"
    (root / "labels.tsv").write_bytes(data)  # the last row is not UTF-8: undecodable_text
    return {
        "good": writers * per_writer,
        "broken": {"missing_image": 1, "duplicate": 1, "short_row": 1, "not_an_image": 1, "undecodable_text": 1},
    }


@dataclass
class RenderedPage:
    image: Image.Image
    lines: list[list[tuple[str, tuple[int, int, int, int]]]]  # per line: (word, box x0 y0 x1 y1)


def render_page(lines: list[list[str]], seed: int = 0, size: int = 30) -> RenderedPage:
    """A page image with the given lines of words, and every word's box."""
    rng = random.Random(seed)
    f = font(size)
    width, line_height = 900, int(size * 2.2)
    image = Image.new("L", (width, 60 + line_height * len(lines)), 245)
    draw = ImageDraw.Draw(image)
    boxes = []
    for n, words in enumerate(lines):
        x, y = 40 + rng.randint(0, 20), 30 + n * line_height
        row = []
        for word in words:
            left, top, right, bottom = draw.textbbox((x, y), word, font=f)
            draw.text((x, y), word, fill=20, font=f)
            row.append((word, (left - 4, top - 5, right + 4, bottom + 5)))
            x = right + int(size * 0.6)
        boxes.append(row)
    return RenderedPage(image, boxes)


def _poly(box: tuple[int, int, int, int], slant: int = 0) -> str:
    """A 6-point polygon around a box (not axis-aligned when slant > 0), PAGE's "x,y x,y" form."""
    x0, y0, x1, y1 = box
    mid = (x0 + x1) // 2
    return f"{x0 + slant},{y0} {mid},{y0 - slant} {x1},{y0} {x1 - slant},{y1} {mid},{y1 + slant} {x0},{y1}"


def _line_box(row) -> tuple[int, int, int, int]:
    return (min(b[0] for _, b in row), min(b[1] for _, b in row), max(b[2] for _, b in row), max(b[3] for _, b in row))


def page_xml(page: RenderedPage, image_name: str, namespace: str = PAGE_2019, extra_lines: str = "") -> str:
    """PAGE XML for a rendered page: two regions in reversed document order (ReadingOrder puts them right),
    polygons for lines and words, the line text in TextEquiv."""
    half = (len(page.lines) + 1) // 2
    regions = []
    for r, rows in enumerate((page.lines[:half], page.lines[half:])):
        body = []
        for n, row in enumerate(rows):
            words = "".join(
                f'<Word id="r{r}l{n}w{k}"><Coords points="{_poly(box, 2)}"/><TextEquiv><Unicode>{w}</Unicode>'
                "</TextEquiv></Word>"
                for k, (w, box) in enumerate(row)
            )
            text = " ".join(w for w, _ in row)
            body.append(
                f'<TextLine id="r{r}l{n}"><Coords points="{_poly(_line_box(row), 3)}"/>{words}'
                f"<TextEquiv><Unicode>{text}</Unicode></TextEquiv></TextLine>"
            )
        regions.append(f'<TextRegion id="r{r}"><Coords points="0,0 1,0 1,1 0,1"/>{"".join(body)}</TextRegion>')
    order = (
        '<ReadingOrder><OrderedGroup id="ro"><RegionRefIndexed index="0" regionRef="r0"/>'
        '<RegionRefIndexed index="1" regionRef="r1"/></OrderedGroup></ReadingOrder>'
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<PcGts xmlns="{namespace}"><Metadata><Creator>test</Creator>'
        f'</Metadata><Page imageFilename="{image_name}" imageWidth="{page.image.width}" '
        f'imageHeight="{page.image.height}">{order}{regions[1]}{regions[0]}{extra_lines}</Page></PcGts>\n'
    )


def alto_xml(page: RenderedPage, image_name: str, namespace: str = ALTO_V4, extra_lines: str = "") -> str:
    """ALTO for a rendered page: boxes for lines and Strings, a polygon Shape on each line."""
    lines = []
    for n, row in enumerate(page.lines):
        x0, y0, x1, y1 = _line_box(row)
        strings = "".join(
            f'<String ID="l{n}s{k}" CONTENT="{w}" HPOS="{b[0]}" VPOS="{b[1]}" WIDTH="{b[2] - b[0]}" '
            f'HEIGHT="{b[3] - b[1]}"/>' + ('<SP WIDTH="10"/>' if k < len(row) - 1 else "")
            for k, (w, b) in enumerate(row)
        )
        points = _poly((x0, y0, x1, y1), 3).replace(",", " ")
        lines.append(
            f'<TextLine ID="l{n}" HPOS="{x0}" VPOS="{y0}" WIDTH="{x1 - x0}" HEIGHT="{y1 - y0}">'
            f'<Shape><Polygon POINTS="{points}"/></Shape>{strings}</TextLine>'
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<alto xmlns="{namespace}"><Description><MeasurementUnit>pixel'
        f"</MeasurementUnit><sourceImageInformation><fileName>{image_name}</fileName></sourceImageInformation>"
        f'</Description><Layout><Page ID="p" WIDTH="{page.image.width}" HEIGHT="{page.image.height}">'
        f'<PrintSpace><TextBlock ID="b">{"".join(lines)}{extra_lines}</TextBlock></PrintSpace></Page></Layout>'
        "</alto>\n"
    )


def page_folder(root: Path, kind: str, pages: int, lines: int, vocabulary: tuple[str, ...], seed: int = 0) -> int:
    """`pages` rendered pages with PAGE XML (kind "page") or ALTO ("alto") in `root`; returns the words written."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for p in range(pages):
        text = [[rng.choice(vocabulary) for _ in range(rng.randint(2, 4))] for _ in range(lines)]
        total += sum(len(t) for t in text)
        page = render_page(text, seed=seed + p)
        page.image.save(root / f"page{p}.png")
        xml = page_xml(page, f"page{p}.png") if kind == "page" else alto_xml(page, f"page{p}.png")
        (root / f"page{p}.xml").write_text(xml, encoding="utf-8")
    return total
