"""steps.iam: words.txt/forms.txt parsing and streaming word images out of a real tar.gz."""

from __future__ import annotations

import io
import tarfile

import pytest

from steps.dataset import iam_format as iam
from steps.workflow import config

WORDS_TXT = """\
#--- words.txt ---------------------------------------------------------------#
#
# iam database word information
#
# format: a01-000u-00-00 ok 154 1 408 768 27 51 AT A
#
a01-000u-00-00 ok 154 408 768 27 51 AT A
a01-000u-00-01 ok 154 507 766 213 48 NN MOVE
a01-000u-00-02 err 154 796 764 70 50 TO to

a01-000u-00-03 ok 154 919 757 166 78 VB stop
a01-000u-00-04 ok 154 1185 754
a01-000u-00-05 maybe 154 1185 754 126 61 NPT Mr.
a01-000u-00-06 ok 154 1185 x 126 61 NPT Gaitskell
a01-000u-01-00 ok 156 395 932 441 -1 NN nominating
a01-000u ok 154 1185 754 126 61 NPT short
r06-022-03-05 ok 188 1591 1453 41 25 , ,
a01-003-00-00 ok 150 1 2 3 4 NN two words
"""


def test_parse_words_fields_and_comments():
    words, malformed = iam.parse_words(WORDS_TXT.splitlines())
    by_id = {w.id: w for w in words}
    assert list(by_id) == [
        "a01-000u-00-00",
        "a01-000u-00-01",
        "a01-000u-00-02",
        "a01-000u-00-03",
        "a01-000u-01-00",
        "r06-022-03-05",
        "a01-003-00-00",
    ]
    w = by_id["a01-000u-00-01"]
    assert w == iam.Word("a01-000u-00-01", True, 154, (507, 766, 213, 48), "NN", "MOVE")
    assert w.form == "a01-000u"
    assert by_id["r06-022-03-05"].text == "," and by_id["r06-022-03-05"].form == "r06-022"
    assert by_id["a01-000u-01-00"].bbox == (395, 932, 441, -1)  # IAM uses -1 for unknown boxes


def test_parse_words_err_flag():
    words, _ = iam.parse_words(WORDS_TXT.splitlines())
    assert [w.id for w in words if not w.ok] == ["a01-000u-00-02"]


def test_parse_words_counts_malformed_lines_with_their_numbers():
    lines = WORDS_TXT.splitlines()
    _, malformed = iam.parse_words(lines)
    numbers = [n for n, _ in malformed]
    # too few fields, bad flag, non-integer box, id without line/word numbers
    assert [lines[n - 1] for n in numbers] == [line for _, line in malformed]
    assert [line.split(" ")[0] for _, line in malformed] == [
        "a01-000u-00-04",
        "a01-000u-00-05",
        "a01-000u-00-06",
        "a01-000u",
    ]
    assert numbers == [12, 13, 14, 16]


def test_parse_words_keeps_extra_fields_as_text_and_strips_line_ends():
    words, malformed = iam.parse_words(
        ["a01-000u-00-00 ok 154 408 768 27 51 AT A\r\n", "a01-003-00-00 ok 150 1 2 3 4 NN two words\n"]
    )
    assert not malformed
    assert [w.text for w in words] == ["A", "two words"]


def test_parse_words_of_nothing():
    assert iam.parse_words([]) == ([], [])
    assert iam.parse_words(["# only a comment", "", "   "]) == ([], [])


def test_parse_forms():
    forms = iam.parse_forms(
        [
            "#--- forms.txt",
            "# format: a01-000u 000 2 prt 7 5 52 36",
            "a01-000u 000 2 prt 7 5 52 36",
            "a01-000x 000 2 prt 7 5 52 36",
            "r06-022 552 3 cut 1 2 3 4",
            "",
            "lonely",
        ]
    )
    assert forms == {"a01-000u": "000", "a01-000x": "000", "r06-022": "552"}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a01/a01-000u/a01-000u-00-00.png", "a01-000u-00-00"),
        ("words/a01/a01-000u/a01-000u-00-01.PNG", "a01-000u-00-01"),
        ("a01-000u-00-02.tif", "a01-000u-00-02"),
        ("x/a01-000u-00-03.tiff", "a01-000u-00-03"),
        ("x/a01-000u-00-04.jpg", "a01-000u-00-04"),
        ("x/a01-000u-00-05.jpeg", "a01-000u-00-05"),
        ("a01/a01-000u/", None),
        ("a01/README.txt", None),
        ("words.txt", None),
    ],
)
def test_member_id(name, expected):
    assert iam.member_id(name) == expected


def _archive(path, members: dict[str, bytes], directories: tuple[str, ...] = ()) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for d in directories:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_iter_images_streams_only_wanted_ids(tmp_path):
    archive = tmp_path / "words.tgz"
    members = {f"a01/a01-000u/a01-000u-00-0{i}.png": f"image {i}".encode() for i in range(5)}
    members["a01/a01-000u/notes.txt"] = b"not an image"
    _archive(archive, members, directories=("a01", "a01/a01-000u"))
    got = list(iam.iter_images(archive, {"a01-000u-00-01", "a01-000u-00-03", "z99-000-00-00"}))
    assert got == [("a01-000u-00-01", b"image 1"), ("a01-000u-00-03", b"image 3")]


def test_iter_images_without_a_filter_yields_every_image_in_archive_order(tmp_path):
    archive = tmp_path / "words.tgz"
    _archive(archive, {"b/b-00-00-01.png": b"", "a/a-00-00-00.png": b"\x89PNG...", "a/readme": b"x"})
    assert list(iam.iter_images(archive)) == [("b-00-00-01", b""), ("a-00-00-00", b"\x89PNG...")]


def test_iter_images_on_a_file_that_is_not_an_archive_raises(tmp_path):
    bad = tmp_path / "words.tgz"
    bad.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(tarfile.TarError):
        list(iam.iter_images(bad))


def test_iter_images_on_a_truncated_archive_raises_instead_of_ending_quietly(tmp_path):
    import os

    archive = tmp_path / "words.tgz"
    _archive(archive, {f"a/a-00-00-{i:02d}.png": os.urandom(5000) for i in range(20)})
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(tarfile.ReadError):
        list(iam.iter_images(archive))


LINES_TXT = """\
#--- lines.txt ---------------------------------------------------------------#
#
# format: a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from
#
a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from
a01-000u-01 err 156 19 395 932 1850 105 nominating|any|more|Labour|life|Peers

a01-000u-02 ok 157 16 408 1106 1782 93 is|to|be|made|at|a|meeting|of|Labour|M|Ps|tomorrow|.
a01-000u-03 ok 156 x 395 1290 1850 105 bad|count
a01-000u-04 ok 156 19 395 1290 1850
a01-000u-00-00 ok 154 408 768 27 51 AT A
a01-000u-05 maybe 156 19 395 1290 1850 105 bad|flag
a01-000u-06 ok 156 3 395 1290 1850 105 "|Are|you
"""


def test_parse_lines_fields_words_and_err_lines():
    lines, malformed = iam.parse_lines(LINES_TXT.splitlines())
    assert [line.id for line in lines] == ["a01-000u-00", "a01-000u-01", "a01-000u-02", "a01-000u-06"]
    first = lines[0]
    assert (first.ok, first.grey, first.components, first.bbox) == (True, 154, 19, (408, 746, 1661, 89))
    assert first.text == "A MOVE to stop Mr. Gaitskell from"
    assert first.form == "a01-000u"
    # err lines are parsed and flagged (preprocess drops them unless keep_err), not lost
    assert lines[1].ok is False and lines[1].text == "nominating any more Labour life Peers"
    # IAM's tokens stay words of their own: the full stop is a word
    assert lines[2].text.endswith("M Ps tomorrow .")
    assert lines[3].text == '" Are you'


def test_parse_lines_counts_malformed_lines_with_their_numbers():
    _, malformed = iam.parse_lines(LINES_TXT.splitlines())
    # a non-integer count, too few fields, a word id (3 dashes) and an unknown flag, by file line number
    assert [n for n, _ in malformed] == [9, 10, 11, 12]
    assert malformed[2][1].startswith("a01-000u-00-00 ")


def test_level_parsers_read_their_own_files_only():
    # in a lines.txt only the planted word line reads as a word, and no words.txt line reads as a line
    assert [w.id for w in iam.parse_words(LINES_TXT.splitlines())[0]] == ["a01-000u-00-00"]
    assert iam.parse_lines(WORDS_TXT.splitlines())[0] == []
    assert set(iam.PARSERS) == set(config.LEVELS)


def test_member_id_of_a_line_image():
    assert iam.member_id("lines/a01/a01-000u/a01-000u-00.png") == "a01-000u-00"
