"""steps.sources (http, archives, iam) against a real HTTP server on loopback and real archives built here."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from steps.sources import archives, http, iam
from steps.sources.errors import DownloadError
from steps.workflow import config

IDS = ["a01-000u-00-00", "a01-000u-00-01", "b02-010-01-00"]
USER, PASSWORD = "reader", "s3cret-pw"
FAST = {"backoff": 0.01, "progress": False}  # retry quickly in tests


# ---------------------------------------------------------------- archive builders (shared with test_download)


def png(seed: int = 0) -> bytes:
    """A small noisy grayscale PNG (noise: so archives are a few KB and cuts land mid-file)."""
    buf = io.BytesIO()
    Image.frombytes("L", (64, 32), random.Random(seed).randbytes(64 * 32)).save(buf, format="PNG")
    return buf.getvalue()


def member_name(word_id: str) -> str:
    form = word_id.rsplit("-", 2)[0]
    return f"{form.split('-')[0]}/{form}/{word_id}.png"


def words_txt(ids=IDS) -> bytes:
    lines = [
        "#--- words.txt test copy",
        *(f"{w} {'ok' if i % 3 else 'err'} 154 408 768 27 51 AT w{i}" for i, w in enumerate(ids)),
    ]
    return ("\n".join(lines) + "\n").encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def words_tgz(ids=IDS, hostile: str = "") -> bytes:
    """words.tgz bytes in IAM layout; hostile adds one bad member: dotdot | absolute | symlink | hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, w in enumerate(ids):
            _add(tar, member_name(w), png(i))
        if hostile == "dotdot":
            _add(tar, "a01/../../evil.png", png())
        elif hostile == "absolute":
            _add(tar, "/tmp/evil.png", png())
        elif hostile == "symlink":
            _add(tar, "a01/link.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        elif hostile == "hardlink":
            _add(tar, "a01/hard.png", type=tarfile.LNKTYPE, linkname="/etc/passwd")
    return buf.getvalue()


def ascii_tgz(with_words: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _add(tar, "lines.txt", b"# lines\n")
        if with_words:
            _add(tar, config.WORDS_TXT, words_txt())
        _add(tar, config.FORMS_TXT, b"a01-000u 000 2 prt 7 5 52 36\nb02-010 001 2 prt 7 5 52 36\n")
    return buf.getvalue()


def mirror_zip(path: Path, with_words_txt: bool = True, hostile: str = "", tgz: bytes | None = None) -> Path:
    """IAM_Words.zip like the Keras example's mirror; hostile: dotdot | absolute | symlink (in the zip)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("IAM_Words/words.tgz", tgz if tgz is not None else words_tgz())
        if with_words_txt:
            zf.writestr("IAM_Words/words.txt", words_txt())
        if hostile == "dotdot":
            zf.writestr("IAM_Words/../../evil.txt", b"x")
        elif hostile == "absolute":
            zf.writestr("/tmp/evil.txt", b"x")
        elif hostile == "symlink":
            info = zipfile.ZipInfo("IAM_Words/link")
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return path


def official_dir(directory: Path, with_words: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / config.WORDS_ARCHIVE).write_bytes(words_tgz())
    (directory / archives.ASCII_ARCHIVE).write_bytes(ascii_tgz(with_words))
    return directory


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def out(tmp_path) -> Path:
    d = tmp_path / "out" / "raw"
    d.mkdir(parents=True)
    return d


def prepare(source: str, out: Path, **kw) -> dict:
    return iam.prepare_iam(source, out, cache_dir=config.cache_dir(), **FAST, **kw)


# ---------------------------------------------------------------- success paths


def test_mirror_zip_over_http(http_server, out):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    info = prepare(http_server.url + "IAM_Words.zip", out, sha256=sha(z))
    assert sorted(p.name for p in out.iterdir()) == [config.WORDS_ARCHIVE, config.WORDS_TXT]
    assert (out / config.WORDS_TXT).read_bytes() == words_txt()
    assert info["layout"] == "zip" and info["words"] == 3 and info["images"] == 3 and info["words_ok"] == 2
    assert info["fetched"]["IAM_Words.zip"]["sha256"] == sha(z)
    assert info["bytes"] == info["bytes_downloaded"] == z.stat().st_size
    with tarfile.open(out / config.WORDS_ARCHIVE) as tar:  # kept as an archive, canonical members
        assert member_name(IDS[0]) in tar.getnames()


def test_official_layout_with_basic_auth(http_server, out):
    official_dir(http_server.root / "data")
    http_server.auth = (USER, PASSWORD)
    info = prepare(http_server.url + "data/", out, auth=(USER, PASSWORD), auth_host="127.0.0.1")  # plain http
    assert info["layout"] == "official" and info["words"] == 3 and info["images"] == 3
    assert (out / config.WORDS_TXT).read_bytes() == words_txt()
    assert (out / config.FORMS_TXT).exists()  # writer ids for preprocess
    assert sorted(info["fetched"]) == [archives.ASCII_ARCHIVE, config.WORDS_ARCHIVE]
    assert all("Authorization" in h for _, h in http_server.requests)
    assert PASSWORD not in repr(info) and USER not in repr(info)


def test_official_base_without_slash_and_words_tgz_url(http_server, tmp_path):
    official_dir(http_server.root / "data")
    for i, url in enumerate([http_server.url + "data", http_server.url + "data/words.tgz"]):
        d = tmp_path / f"o{i}"
        d.mkdir()
        assert prepare(url, d)["layout"] == "official"


@pytest.mark.parametrize("kind", ["zip", "file-url", "directory", "official-directory"])
def test_local_sources(tmp_path, out, kind):
    if kind in ("zip", "file-url"):
        z = mirror_zip(tmp_path / "IAM_Words.zip")
        source = str(z) if kind == "zip" else z.as_uri()
    elif kind == "directory":
        source = tmp_path / "local"
        source.mkdir()
        (source / config.WORDS_ARCHIVE).write_bytes(words_tgz())
        (source / config.WORDS_TXT).write_bytes(words_txt())
    else:
        source = official_dir(tmp_path / "local")
    info = prepare(str(source), out)
    assert info["words"] == 3 and info["images"] == 3 and info["bytes_downloaded"] == 0


def test_resume_after_cut_connection(http_server, tmp_path):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    http_server.cut_once["/IAM_Words.zip"] = 700
    f = http.fetch_url(http_server.url + "IAM_Words.zip", tmp_path / "c", **FAST)
    assert z.stat().st_size > 2000 and f.sha256 == sha(z) and f.path.read_bytes() == z.read_bytes()
    assert [h.get("Range") for _, h in http_server.requests] == [None, "bytes=700-"]
    assert f.downloaded == z.stat().st_size


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    http_server.cut_once["/IAM_Words.zip"] = 700
    http_server.ignore_range = True
    f = http.fetch_url(http_server.url + "IAM_Words.zip", tmp_path / "c", **FAST)
    assert f.path.read_bytes() == z.read_bytes()
    assert http_server.requests[1][1].get("Range") == "bytes=700-"


def test_partial_file_from_an_earlier_run_is_resumed(http_server, tmp_path):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    http_server.cut_once["/IAM_Words.zip"] = 500
    http_server.fail_once["/IAM_Words.zip"] = 503  # the retry fails too: the run gives up
    with pytest.raises(DownloadError, match="bytes received are kept in .* will be resumed"):
        http.fetch_url(http_server.url + "IAM_Words.zip", tmp_path / "c", retries=1, **FAST)
    f = http.fetch_url(http_server.url + "IAM_Words.zip", tmp_path / "c", **FAST)
    assert f.sha256 == sha(z) and http_server.requests[-1][1].get("Range") == "bytes=500-"


def test_5xx_is_retried_4xx_is_not(http_server, tmp_path):
    mirror_zip(http_server.root / "IAM_Words.zip")
    http_server.fail_once["/IAM_Words.zip"] = 503
    http.fetch_url(http_server.url + "IAM_Words.zip", tmp_path / "c", **FAST)
    assert len(http_server.requests) == 2
    with pytest.raises(DownloadError):
        http.fetch_url(http_server.url + "missing.zip", tmp_path / "c", **FAST)
    assert len(http_server.requests) == 3


def test_cache_hit_makes_no_request(http_server, tmp_path):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    url = http_server.url + "IAM_Words.zip"
    first = http.fetch_url(url, tmp_path / "c", **FAST)
    second = http.fetch_url(url, tmp_path / "c", sha256=sha(z), **FAST)
    assert len(http_server.requests) == 1
    assert second.cached and second.downloaded == 0 and second.path == first.path and not first.cached


# ---------------------------------------------------------------- distinct errors


def test_checksum_mismatch_deletes_the_download(http_server, tmp_path):
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    url, wrong = http_server.url + "IAM_Words.zip", "0" * 64
    with pytest.raises(DownloadError, match="sha256 mismatch") as e:
        http.fetch_url(url, tmp_path / "c", sha256=wrong, **FAST)
    assert wrong in str(e.value) and sha(z) in str(e.value)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file() and p.name != ".lock"]
    # a cached file that does not match is replaced by a fresh download
    http.fetch_url(url, tmp_path / "c", **FAST)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        http.fetch_url(url, tmp_path / "c", sha256=wrong, **FAST)
    assert len(http_server.requests) == 3


def test_local_checksum_mismatch_keeps_the_file(tmp_path, out):
    z = mirror_zip(tmp_path / "IAM_Words.zip")
    with pytest.raises(DownloadError, match="left untouched"):
        prepare(str(z), out, sha256="f" * 64)
    assert z.exists()


def test_html_page_instead_of_archive(http_server, tmp_path):
    (http_server.root / "words.tgz").write_text("<!DOCTYPE html><html><body>Please log in</body></html>")
    with pytest.raises(DownloadError, match="HTML page") as e:
        http.fetch_url(http_server.url + "words.tgz", tmp_path / "c", **FAST)
    assert "IAM_USER" in str(e.value)
    assert not list((tmp_path / "c").rglob("words.tgz*"))  # not cached


def test_404_names_the_url_without_credentials(http_server, out):
    url = http_server.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "nothere/IAM_Words.zip"
    with pytest.raises(DownloadError, match="HTTP 404") as e:
        prepare(url, out)
    assert http_server.url + "nothere/IAM_Words.zip" in str(e.value)
    assert PASSWORD not in str(e.value) and USER not in str(e.value)


def test_401_says_to_set_credentials(http_server, out):
    official_dir(http_server.root / "data")
    http_server.auth = (USER, PASSWORD)
    with pytest.raises(DownloadError, match="HTTP 401") as e:
        prepare(http_server.url + "data/", out)
    assert "IAM_USER" in str(e.value) and "IAM_PASSWORD" in str(e.value) and "register" in str(e.value)
    with pytest.raises(DownloadError, match="refused: check them"):
        prepare(http_server.url + "data/", out, auth=(USER, "wrong"), auth_host="127.0.0.1")


def test_credentials_go_over_plain_http_only_to_the_host_named_for_them(http_server, out):
    official_dir(http_server.root / "data")
    http_server.auth = (USER, PASSWORD)
    with pytest.raises(DownloadError) as e:
        prepare(http_server.url + "data/", out, auth=(USER, PASSWORD))
    assert "HTTP 401" in str(e.value)
    assert f"IAM_USER/IAM_PASSWORD are set but were not sent: {http_server.url}data/words.tgz is not HTTPS" in str(
        e.value
    )
    assert "set IAM_AUTH_HOST=127.0.0.1" in str(e.value)
    assert http_server.requests and not any("Authorization" in h for _, h in http_server.requests)


def test_credentials_typed_into_a_url_are_never_sent_implicitly(http_server, out):
    mirror_zip(http_server.root / "IAM_Words.zip")
    url = http_server.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "IAM_Words.zip"
    prepare(url, out)
    assert not any("Authorization" in h for _, h in http_server.requests)


@pytest.mark.parametrize(
    "url, layout, auth_host, why",
    [
        ("https://fki.tic.heia-fr.ch/DBs/iamDB/data/words.tgz", "official", "", ""),
        ("https://mirror.example/data/words.tgz", "official", "", ""),
        ("https://github.com/x/IAM_Words.zip", "zip", "", "github.com is not the IAM server"),
        ("http://fki.tic.heia-fr.ch/DBs/iamDB/data/words.tgz", "official", "", "is not HTTPS"),
        ("http://10.0.0.5/iam/words.tgz", "official", "10.0.0.5", ""),
        ("http://10.0.0.5/IAM_Words.zip", "zip", "10.0.0.5", ""),
        ("http://10.0.0.5/iam/words.tgz", "official", "10.0.0.6", "is not HTTPS"),
    ],
)
def test_where_basic_auth_may_go(url, layout, auth_host, why):
    got = iam.auth_withheld(url, layout, auth_host)
    assert (why in got) if why else got == ""


@pytest.mark.parametrize(
    "where, hostile",
    [
        (w, h)
        for w in ("zip", "tgz")
        for h in ("dotdot", "absolute", "symlink", "hardlink")
        if (w, h) != ("zip", "hardlink")
    ],
)  # zip has no hard links
def test_hostile_members_are_refused(tmp_path, out, where, hostile):
    z = tmp_path / "IAM_Words.zip"
    if where == "zip":
        mirror_zip(z, hostile=hostile)
    else:
        mirror_zip(z, tgz=words_tgz(hostile=hostile))
    with pytest.raises(DownloadError, match="refusing unsafe archive member") as e:
        prepare(str(z), out)
    assert {"dotdot": "..", "absolute": "/tmp/evil", "symlink": "link", "hardlink": "hard.png"}[hostile] in str(e.value)
    assert not list(tmp_path.rglob("evil*")) and not Path("/tmp/evil.png").exists()


def test_hostile_member_in_ascii_tgz(http_server, out):
    d = official_dir(http_server.root / "data")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _add(tar, config.WORDS_TXT, words_txt())
        _add(tar, "../../forms.txt", b"x")
    (d / archives.ASCII_ARCHIVE).write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match=r"\.\./\.\./forms\.txt"):
        prepare(http_server.url + "data/", out)


def test_truncated_words_tgz(tmp_path, out):
    data = words_tgz(IDS * 1)
    z = mirror_zip(tmp_path / "IAM_Words.zip", tgz=data[: len(data) // 2])
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        prepare(str(z), out)


def test_corrupt_download_is_evicted_from_the_cache(http_server, out):
    data = words_tgz()
    mirror_zip(http_server.root / "IAM_Words.zip", tgz=data[: len(data) // 2])
    with pytest.raises(DownloadError, match="truncated or corrupt.*cached download was deleted"):
        prepare(http_server.url + "IAM_Words.zip", out)
    assert not list(config.cache_dir().rglob("IAM_Words.zip*"))


def test_truncated_zip(tmp_path, out):
    z = mirror_zip(tmp_path / "IAM_Words.zip")
    z.write_bytes(z.read_bytes()[:-200])
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        prepare(str(z), out)


@pytest.mark.parametrize("layout", ["zip", "official"])
def test_missing_words_txt(tmp_path, out, layout):
    if layout == "zip":
        source = mirror_zip(tmp_path / "IAM_Words.zip", with_words_txt=False)
    else:
        source = official_dir(tmp_path / "data", with_words=False)
    with pytest.raises(DownloadError, match="has no words.txt"):
        prepare(str(source), out)


def test_words_txt_and_archive_must_match(tmp_path, out):
    z = mirror_zip(tmp_path / "IAM_Words.zip", tgz=words_tgz(["z09-999-09-09"]))
    with pytest.raises(DownloadError, match="do not belong together"):
        prepare(str(z), out)


def test_bad_sha256_parameter(tmp_path, out):
    with pytest.raises(DownloadError, match="64-digit hex"):
        prepare(str(mirror_zip(tmp_path / "IAM_Words.zip")), out, sha256="abc")


def test_redact():
    assert http.redact("https://u:p@host:8443/a/b.zip?token=x") == "https://host:8443/a/b.zip"
    assert http.redact("/local/path.zip") == "/local/path.zip"


def test_a_failed_download_leaves_no_empty_cache_folder_but_keeps_a_part_to_resume(http_server, out):
    with pytest.raises(DownloadError, match="HTTP 404"):
        prepare(http_server.url + "nothere/IAM_Words.zip", out)
    assert [p for p in config.cache_dir().rglob("*")] == []
    z = mirror_zip(http_server.root / "IAM_Words.zip")
    http_server.cut_once[f"/{z.name}"] = 1000
    http_server.fail_once[f"/{z.name}"] = 503  # the attempt after the cut fails too: give up, keep the bytes
    with pytest.raises(DownloadError, match="will be resumed"):
        prepare(http_server.url + z.name, out, retries=1)
    assert [p.name for p in config.cache_dir().rglob("*.part")] == ["IAM_Words.zip.part"]
