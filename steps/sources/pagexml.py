"""PAGE XML (the 2013-07-15 and 2019-07-15 schemas, as Transkribus and eScriptorium export) -> pages.Page.

`PcGts/Page@imageFilename` names the image; `TextRegion/TextLine` holds `Coords@points` ("x,y x,y ..."),
an optional `Baseline@points`, the text in `TextEquiv/Unicode` (the lowest @index when there are several)
and optional `Word` elements of the same shape. Regions follow `ReadingOrder` when the file has one,
else document order; lines follow document order within their region.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from steps.sources.pages import Line, NotThisFormat, Page, Region, local, points


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if local(c.tag) == name), None)


def _text(element: ET.Element) -> str:
    """The element's own TextEquiv/Unicode (not its children's), lowest @index first."""
    equivs = [c for c in element if local(c.tag) == "TextEquiv"]
    equivs.sort(key=lambda e: int(e.get("index", "0")) if e.get("index", "0").lstrip("-").isdigit() else 0)
    for equiv in equivs:
        unicode = _child(equiv, "Unicode")
        if unicode is not None:
            return "".join(unicode.itertext())
    return ""


def _region(element: ET.Element) -> dict:
    coords, baseline = _child(element, "Coords"), _child(element, "Baseline")
    try:
        polygon = points(coords.get("points", "")) if coords is not None else ()
        base = points(baseline.get("points", "")) if baseline is not None else ()
    except ValueError:
        polygon, base = (), ()
    return {"id": element.get("id", ""), "text": _text(element), "polygon": polygon, "baseline": base}


def parse(root: ET.Element) -> Page:
    if local(root.tag) != "PcGts":
        raise NotThisFormat(f"the root element is {local(root.tag)}, not PAGE's PcGts")
    page = next((e for e in root.iter() if local(e.tag) == "Page"), None)
    if page is None:
        raise NotThisFormat("no Page element")
    order = {
        ref.get("regionRef", ""): int(ref.get("index", "0"))
        for ref in page.iter()
        if local(ref.tag) == "RegionRefIndexed" and ref.get("index", "").isdigit()
    }
    regions = [r for r in page.iter() if local(r.tag) == "TextRegion"]
    regions = sorted(enumerate(regions), key=lambda p: (order.get(p[1].get("id", ""), len(order) + p[0]), p[0]))
    lines = []
    for _, region in regions:
        for line in (c for c in region if local(c.tag) == "TextLine"):
            words = tuple(Region(**_region(w)) for w in line if local(w.tag) == "Word")
            fields = _region(line)
            if not fields["text"].strip():  # some tools transcribe only the words
                fields["text"] = " ".join(w.text for w in words if w.text.strip())
            lines.append(Line(**fields, words=words))
    return Page(page.get("imageFilename", ""), lines)
