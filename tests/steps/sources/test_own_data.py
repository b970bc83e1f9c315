"""Your own data: folder tables and sidecar texts, PAGE XML and ALTO pages, hostile XML, archives and URLs."""

from __future__ import annotations

import io
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from steps.dataset import iam_format
from steps.sources import alto, folder, layout, pages, pagexml, tree
from steps.sources.errors import DownloadError
from steps.sources.raw import describe_raw
from tests import own_data


def _written(collected: layout.Collected, out: Path) -> tuple[dict, list[iam_format.Word], dict[str, str]]:
    out.mkdir()
    info = layout.write(collected, out)
    words, malformed = iam_format.parse_words((out / "words.txt").read_text(encoding="utf-8").splitlines())
    assert not malformed
    forms = iam_format.parse_forms((out / "forms.txt").read_text(encoding="utf-8").splitlines())
    return info, words, forms


def _images(archive: Path) -> dict[str, Image.Image]:
    with tarfile.open(archive) as tar:
        return {
            iam_format.member_id(m.name): Image.open(io.BytesIO(tar.extractfile(m).read())) for m in tar if m.isfile()
        }


def test_tsv_folder_keeps_good_rows_and_counts_each_broken_one_with_its_line(tmp_path):
    expected = own_data.tsv_folder(tmp_path / "src", own_data.GREEK, writers=3, per_writer=4)
    collected = folder.collect(tmp_path / "src")
    info, words, forms = _written(collected, tmp_path / "raw")
    assert len(words) == expected["good"] and info["skipped"] == expected["broken"]
    problems = "\n".join(info["problems"])
    assert "labels.tsv line 14: image hand0/nope.png not found" in problems
    assert "labels.tsv line 15: hand0/000.png is listed again (first at labels.tsv line 2)" in problems
    assert "labels.tsv line 18: not UTF-8" in problems
    assert sorted(set(forms.values())) == ["hand_0", "hand_1", "hand_2"]  # the writer column, made a single field
    assert {w.form for w in words} == set(forms)
    assert set(_images(tmp_path / "raw" / "words.tgz")) == {w.id for w in words}


def test_a_folder_of_line_images_becomes_lines_numbered_per_writer_in_listing_order(tmp_path):
    rows = ["path\ttext\twriter"]
    for w in range(2):
        (tmp_path / "src" / f"hand{w}").mkdir(parents=True)
        for i in range(3):
            own_data.word_image("x", w).save(tmp_path / "src" / f"hand{w}" / f"{2 - i}.png")  # listed 2, 1, 0
            rows.append(f"hand{w}/{2 - i}.png\tline {i} of  hand\t{w}")
    (tmp_path / "src" / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "raw"
    out.mkdir()
    info = layout.write(layout.as_lines(folder.collect(tmp_path / "src")), out)
    assert info["items"] == {"words": 0, "lines": 6} and not (out / "words.txt").exists()
    lines, malformed = iam_format.parse_lines((out / "lines.txt").read_text(encoding="utf-8").splitlines())
    assert not malformed and len({line.id for line in lines}) == 6
    by_form = {}
    for line in lines:
        by_form.setdefault(line.form, []).append((line.id, line.text))
    assert [[t for _, t in sorted(v)] for v in by_form.values()] == [
        ["line 0 of hand", "line 1 of hand", "line 2 of hand"]
    ] * 2
    origin = (out / layout.ORIGIN_TSV).read_text(encoding="utf-8")
    first = next(i for i, t in sorted(by_form[lines[0].form]))
    assert f"{first}\t0\tlabels.tsv line 2\t" in origin  # the first listed row is the writer's line 00
    assert describe_raw(out, "lines")["lines"] == 6
    assert set(_images(out / "lines.tgz")) == {line.id for line in lines}


def test_text_is_nfc_once_at_ingestion_and_sidecar_txt_layout_works(tmp_path):
    decomposed = unicodedata.normalize("NFD", "Ἀθῆναι café")
    for i, text in enumerate([decomposed, "  plain\ttext \n"]):
        src = tmp_path / "src" / f"page{i}"
        src.mkdir(parents=True)
        own_data.word_image("x", i).save(src / f"{i}.png")
        (src / f"{i}.txt").write_text(text, encoding="utf-8")
    own_data.word_image("x", 9).save(src / "lonely.png")  # no .txt beside it
    collected = folder.collect(tmp_path / "src")
    info, words, forms = _written(collected, tmp_path / "raw")
    assert sorted(w.text for w in words) == sorted([unicodedata.normalize("NFC", decomposed), "plain text"])
    assert info["skipped"] == {"no_transcription": 1}
    assert set(forms.values()) == {"page0", "page1"}  # the image's folder is its writer


def test_a_folder_with_nothing_usable_says_what_was_wrong(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "labels.csv").write_text("path,text\nmissing.png,hello\n")
    with pytest.raises(DownloadError, match="nothing usable.*1 missing_image.*labels.csv line 2"):
        layout.write(folder.collect(tmp_path / "src"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownloadError, match="neither a .tsv/.csv table"):
        folder.collect(tmp_path / "empty")


@pytest.mark.parametrize("namespace", [own_data.PAGE_2013, own_data.PAGE_2019])
def test_page_xml_lines_in_reading_order_and_words_cropped_from_polygons(tmp_path, namespace):
    rows = [["мир", "дом"], ["кот", "лес", "сон"], ["чай", "день"]]
    page = own_data.render_page(rows)
    src = tmp_path / "src"
    src.mkdir()
    page.image.save(src / "scan.png")
    (src / "scan.xml").write_text(own_data.page_xml(page, "scan.png", namespace), encoding="utf-8")
    collected = pages.collect(src, pagexml.parse, "page")
    assert [i.text for i in collected.lines] == ["мир дом", "кот лес сон", "чай день"]  # ReadingOrder, not document
    info, words, forms = _written(collected, tmp_path / "raw")
    assert [w.text for w in words] == [w for row in rows for w in row]
    assert list(forms.values()) == ["scan"]
    crops = _images(tmp_path / "raw" / "words.tgz")
    first = crops[words[0].id]
    (x0, y0, x1, y1) = page.lines[0][0][1]
    assert abs(first.width - (x1 - x0)) <= 3 and abs(first.height - (y1 - y0)) <= 5
    assert first.getpixel((0, 0)) == 255  # outside the slanted polygon: painted white
    text = (tmp_path / "raw" / "lines.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert [line.split(" ")[0] for line in text] == ["g0001-000-00", "g0001-000-01", "g0001-000-02"]
    assert text[1].split(" ")[3] == "3" and text[1].split(" ")[-1] == "кот|лес|сон"


def test_alto_lines_strings_and_units_other_than_pixels(tmp_path):
    rows = [["the", "cat"], ["sat", "on", "a", "mat"]]
    page = own_data.render_page(rows)
    src = tmp_path / "src"
    src.mkdir()
    page.image.save(src / "p.png")
    (src / "p.xml").write_text(own_data.alto_xml(page, "p.png"), encoding="utf-8")
    pixel = pages.collect(src, alto.parse, "alto")
    assert [i.text for i in pixel.lines] == ["the cat", "sat on a mat"] and len(pixel.words) == 6
    # the same page in mm10 with the page size in mm10: every coordinate scales onto the image
    scaled = own_data.render_page(rows)
    xml = own_data.alto_xml(scaled, "p.png").replace(">pixel<", ">mm10<")
    xml = xml.replace(f'WIDTH="{page.image.width}" HEIGHT="{page.image.height}"', "")
    xml = xml.replace('<Page ID="p"', f'<Page ID="p" WIDTH="{page.image.width / 2}" HEIGHT="{page.image.height / 2}"')
    (src / "p.xml").write_text(_halve(xml), encoding="utf-8")
    mm = pages.collect(src, alto.parse, "alto")
    assert [i.size for i in mm.words] == pytest.approx([i.size for i in pixel.words], abs=3)


def _halve(xml: str) -> str:
    import re

    def half(m: re.Match) -> str:
        return f'{m.group(1)}="{int(m.group(2)) / 2}"'

    xml = re.sub(r'(HPOS|VPOS|WIDTH|HEIGHT)="(\d+)"', half, xml)
    return re.sub(
        r'POINTS="([^"]+)"', lambda m: 'POINTS="' + " ".join(str(int(v) / 2) for v in m.group(1).split()) + '"', xml
    )


def test_hostile_xml_is_refused_and_counted_never_expanded(tmp_path):
    src = tmp_path / "src"
    own_data.page_folder(src, "page", pages=1, lines=2, vocabulary=own_data.LATIN)
    (src / "laughs.xml").write_bytes(own_data.BILLION_LAUGHS)
    (src / "external.xml").write_bytes(own_data.EXTERNAL_ENTITY)
    collected = pages.collect(src, pagexml.parse, "page")
    assert collected.skipped["unsafe_xml"] == 2 and len(collected.lines) == 2
    assert all("lol" not in i.text and "root:" not in i.text for i in collected.lines + collected.words)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "external.xml").write_bytes(own_data.EXTERNAL_ENTITY)
    with pytest.raises(DownloadError, match="nothing usable.*1 unsafe_xml.*external.xml: refused"):
        layout.write(pages.collect(hostile, alto.parse, "alto"), tmp_path / "out")


def test_coordinates_off_the_page_missing_images_and_empty_lines_are_counted(tmp_path):
    page = own_data.render_page([["old", "man"]])
    src = tmp_path / "src"
    src.mkdir()
    page.image.save(src / "a.png")
    w, h = page.image.size
    extra = (
        f'<TextRegion id="x"><TextLine id="half"><Coords points="{w - 40},5 {w + 300},5 {w + 300},40 {w - 40},40"/>'
        "<TextEquiv><Unicode>edge</Unicode></TextEquiv></TextLine>"
        f'<TextLine id="off"><Coords points="{w + 10},5 {w + 90},5 {w + 90},40"/><TextEquiv><Unicode>gone</Unicode>'
        '</TextEquiv></TextLine><TextLine id="blank"><Coords points="1,1 50,1 50,30 1,30"/><TextEquiv><Unicode> '
        '</Unicode></TextEquiv></TextLine><TextLine id="bare"><TextEquiv><Unicode>where</Unicode></TextEquiv>'
        '</TextLine><TextLine id="base"><Baseline points="40,50 300,50"/><TextEquiv><Unicode>baseline only</Unicode>'
        "</TextEquiv></TextLine></TextRegion>"
    )
    (src / "a.xml").write_text(own_data.page_xml(page, "a.png", extra_lines=extra), encoding="utf-8")
    (src / "b.xml").write_text(own_data.page_xml(page, "not-here.png"), encoding="utf-8")
    collected = pages.collect(src, pagexml.parse, "page")
    assert [i.text for i in collected.lines] == ["old man", "edge", "baseline only"]
    assert collected.adjusted["clipped_to_page"] == 1
    assert collected.lines[1].size[0] == 40  # clipped at the right edge of the page
    assert {k: collected.skipped[k] for k in ("outside_page", "empty_text", "no_coordinates", "missing_image")} == {
        "outside_page": 1,
        "empty_text": 1,
        "no_coordinates": 1,
        "missing_image": 1,
    }
    assert collected.skipped["missing_image_lines"] == 1
    assert any("not-here.png not found" in p for p in collected.problems)


def test_archives_are_unpacked_safely_and_urls_fetched(tmp_path, http_server):
    src = tmp_path / "src"
    own_data.tsv_folder(src / "wrapped", own_data.LATIN, writers=2, per_writer=2)
    good = http_server.root / "mine.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    root = tree.content_root(tree.as_directory(http_server.url + "mine.zip", tmp_path / "w1", tmp_path / "cache"))
    assert (root / "labels.tsv").is_file() and len(folder.collect(root).words) == 4
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DownloadError, match="refusing unsafe archive member '../escape.txt'"):
        tree.as_directory(str(evil), tmp_path / "w2", tmp_path / "cache")
    link = tmp_path / "link.tgz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("data/labels.tsv")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DownloadError, match="symlink"):
        tree.as_directory(str(link), tmp_path / "w3", tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(DownloadError, match="pass -P source"):
        tree.as_directory("", tmp_path / "w4", tmp_path / "cache")
