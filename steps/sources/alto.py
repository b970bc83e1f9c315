"""ALTO (v2, v3 and v4, as OCR-D, Transkribus and library digitisation export) -> pages.Page.

`Description/sourceImageInformation/fileName` names the image; `TextLine` has `HPOS VPOS WIDTH HEIGHT`
and, in v3+, an optional `Shape/Polygon@POINTS`; its words are `String@CONTENT` (same geometry), and a
trailing `HYP@CONTENT` joins the last word. Coordinates are pixels unless `MeasurementUnit` says
mm10 or inch1200; then the `Page@WIDTH/HEIGHT` in those units maps them onto the image.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from steps.sources.pages import Line, NotThisFormat, Page, Region, local, points


def _polygon(element: ET.Element) -> tuple[tuple[float, float], ...]:
    """Shape/Polygon@POINTS when given, else the HPOS/VPOS/WIDTH/HEIGHT box; () when neither parses."""
    for shape in (c for c in element if local(c.tag) == "Shape"):
        for polygon in (c for c in shape if local(c.tag) == "Polygon"):
            try:
                return points(polygon.get("POINTS", ""))
            except ValueError:
                pass
    try:
        x, y, w, h = (float(element.get(k, "")) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
    except ValueError:
        return ()
    return ((x, y), (x + w, y), (x + w, y + h), (x, y + h))


def parse(root: ET.Element) -> Page:
    if local(root.tag).lower() != "alto":
        raise NotThisFormat(f"the root element is {local(root.tag)}, not ALTO's alto")
    elements = list(root.iter())
    unit = next(("".join(e.itertext()).strip() for e in elements if local(e.tag) == "MeasurementUnit"), "pixel")
    file_name = next(("".join(e.itertext()).strip() for e in elements if local(e.tag) == "fileName"), "")
    page = next((e for e in elements if local(e.tag) == "Page"), None)
    if page is None:
        raise NotThisFormat("no Page element")
    try:
        size = (float(page.get("WIDTH", "")), float(page.get("HEIGHT", "")))
    except ValueError:
        size = None
    lines = []
    for line in (e for e in page.iter() if local(e.tag) == "TextLine"):
        words: list[Region] = []
        for child in line:
            if local(child.tag) == "String":
                words.append(Region(child.get("ID", ""), child.get("CONTENT", ""), _polygon(child)))
            elif local(child.tag) == "HYP" and words:
                last = words[-1]
                words[-1] = Region(last.id, last.text + child.get("CONTENT", ""), last.polygon)
        text = " ".join(w.text for w in words if w.text)
        lines.append(Line(line.get("ID", ""), text, _polygon(line), words=tuple(words)))
    return Page(file_name, lines, scale=(1.0, 1.0) if unit == "pixel" else None, size=size)
