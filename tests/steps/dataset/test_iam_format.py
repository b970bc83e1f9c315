"""steps.iam: words.txt/forms.txt parsing and streaming word images out of a real tar.gz."""

from __future__ import annotations

import io
import tarfile

import pytest

from steps.dataset import iam_format as iam

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
