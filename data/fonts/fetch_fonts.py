#!/usr/bin/env python3
"""Refetch the Fontsource handwriting fonts bundled in data/fonts/ from the npm registry.

For each entry of FONTS: `npm pack @fontsource/<name>@<version>` into a temporary directory, take
`package/files/<name>-latin-400-normal.woff` and `package/LICENSE` out of the tarball, check the
package's declared licence and both files' sha256 against the table, and only then write
`<file>` and `LICENSES/fontsource-<name>.LICENSE` into the destination (default: this directory).

Standard library only, plus the `npm` client. Usage:

    python data/fonts/fetch_fonts.py             # refetch into data/fonts/
    python data/fonts/fetch_fonts.py --dest DIR  # refetch into another directory
    python data/fonts/fetch_fonts.py --check     # no network: verify the files already in place

Exits non-zero (and writes nothing for that font) if npm is missing, a download fails, or a
licence or checksum differs from the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent


class Font(NamedTuple):
    name: str  # npm package is @fontsource/<name>
    version: str  # exact package version
    licence: str  # SPDX id declared in the package's package.json
    file: str  # file name written into the destination
    style: str  # cursive/print, thin/medium/thick, upright/slanted
    sha256: str  # of the latin 400-normal .woff
    licence_sha256: str  # of the package's LICENSE file

    @property
    def package(self) -> str:
        return f"@fontsource/{self.name}"

    @property
    def licence_file(self) -> str:
        return f"LICENSES/fontsource-{self.name}.LICENSE"


FONTS: tuple[Font, ...] = (
    Font(
        "architects-daughter",
        "5.3.0",
        "OFL-1.1",
        "ArchitectsDaughter-Regular.woff",
        "print, medium, upright",
        "0249dd5f81431dbf8a8406996c43f8018bf707221cf261d75145f083bb7091cf",
        "1d3dfa53acd63b2e501101356107b0f996877b678e2dba800918a6887afc4c88",
    ),
    Font(
        "caveat",
        "5.3.0",
        "OFL-1.1",
        "Caveat-Regular.woff",
        "print (partly joined), thin, slanted",
        "38b98dbeb922a14a74dfb41f83fc24e0e645e2eed9ce72145fefbdae8828cbfb",
        "163a2b400e16916ad3196296c946c526d0efce6baf22a2164269ffc62fb9f671",
    ),
    Font(
        "cedarville-cursive",
        "5.3.0",
        "OFL-1.1",
        "CedarvilleCursive-Regular.woff",
        "cursive, thin, slanted",
        "8d8360a98492b42d02c17e94c38bcd2a3cce6db6b9b430f3a110e71f81d7149c",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "covered-by-your-grace",
        "5.3.0",
        "OFL-1.1",
        "CoveredByYourGrace-Regular.woff",
        "print, thick (marker), upright",
        "876d8371eedf1f9add237910aea034ca42cd5bdc8f7d722c7a04819ab3f711b8",
        "1d3dfa53acd63b2e501101356107b0f996877b678e2dba800918a6887afc4c88",
    ),
    Font(
        "dawning-of-a-new-day",
        "5.3.0",
        "OFL-1.1",
        "DawningOfANewDay-Regular.woff",
        "cursive, very thin, slanted",
        "db6b4ace05ee8134f67c89150c387961d9c4f3e8ecc3efecfe8510738c3158fd",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "gloria-hallelujah",
        "5.3.0",
        "OFL-1.1",
        "GloriaHallelujah-Regular.woff",
        "print, thick, upright",
        "31e7def8cf155d4dcc98216517ad509923a8a197bc9c8937668d04767c52040e",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "gochi-hand",
        "5.3.0",
        "OFL-1.1",
        "GochiHand-Regular.woff",
        "print, thick, upright",
        "82a4149218f2edccef96d2b0ed5bf92adc6ea290222bac4dcfa3de91afb6b3a3",
        "9f11d6fbbdd628f8d27e94b53f6bf3e7087f66fc4c020925997bbef208bc3edf",
    ),
    Font(
        "handlee",
        "5.3.0",
        "OFL-1.1",
        "Handlee-Regular.woff",
        "print, medium, upright",
        "9a8af5254df769bbdc196fd998231daec67c81dc3d6fd6f294ed80c2c4343551",
        "8ed970d7831958cd20c6504aa5e09280dc7e548c7978df262fbc3d0ef0b566f9",
    ),
    Font(
        "homemade-apple",
        "5.3.0",
        "Apache-2.0",
        "HomemadeApple-Regular.woff",
        "cursive, medium (rough pen), slanted",
        "998f34b48e0bcb8974dc6e8d94961a87689ca40e3258554d2f6fc3778b1968a3",
        "044195cfd809d76ea2aaf1c8e3dd80b9fd9447227efc05e51fc906c4a451d451",
    ),
    Font(
        "indie-flower",
        "5.3.0",
        "OFL-1.1",
        "IndieFlower-Regular.woff",
        "print, medium, upright",
        "2cf7154e899ad16246196238d6d13f0135c5feba2d8ccde5d97a22664d012660",
        "0195774c0deaaf2da57fe0b57444e9f33da639b95610c2fabfe14f721e355613",
    ),
    Font(
        "just-another-hand",
        "5.3.0",
        "Apache-2.0",
        "JustAnotherHand-Regular.woff",
        "print (narrow), medium, upright",
        "996689005263a02315843bd1eff3f67b71ec1ca25be7fa9ee4523e4d282b7b89",
        "537aa64935057b48bf55502bb5662230aa2914fc8fd1d5955a786a3bb2056894",
    ),
    Font(
        "kalam",
        "5.3.0",
        "OFL-1.1",
        "Kalam-Regular.woff",
        "print, medium, slanted",
        "70ab8c1d2c10a28f213c6f1c359888624d5e650ffcd64f93a8194c3e14403746",
        "b2028be7f17101212ece61b1204058e720514dadfec4d271c54503619a51fcf3",
    ),
    Font(
        "la-belle-aurore",
        "5.3.0",
        "OFL-1.1",
        "LaBelleAurore-Regular.woff",
        "cursive, thin, strongly slanted",
        "d5ec94f05c2cb9ab9dd5bba03faede9a6d767803e36b6b5df36f64ada8546ce0",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "loved-by-the-king",
        "5.3.0",
        "OFL-1.1",
        "LovedByTheKing-Regular.woff",
        "print (narrow), thin, upright",
        "c865f5db8c24e82e05b74065da789d1df28b12d66d2977e884af4a444ff46cb5",
        "b83841556bde98f79f6220097e3388fe4e78dbd6f41614324f73f03a404ad2c5",
    ),
    Font(
        "mr-dafoe",
        "5.3.0",
        "OFL-1.1",
        "MrDafoe-Regular.woff",
        "cursive (brush), thick, strongly slanted",
        "62dc3f44e4c9b9aab0cfce27dff0058fa82ce5b4aa6e6785d0a2e57f9a2e965c",
        "1776d6314ca34dc8a68c6bce303654836f87203b00624ab5985770be1289c958",
    ),
    Font(
        "nanum-pen-script",
        "5.3.0",
        "OFL-1.1",
        "NanumPenScript-Regular.woff",
        "print, medium, upright",
        "08cdd640e142c977071b4c3d5c33fd9ec322990e540f5511ca2fccff4568d0ec",
        "1dd95eaa65cececb5f3051339367509e7df84987f943c47c1335557889627f4a",
    ),
    Font(
        "neucha",
        "5.3.0",
        "OFL-1.1",
        "Neucha-Regular.woff",
        "print, medium, upright",
        "b0c09e2ecd7d760fb997f926f2d15e53c57561802fb071a317832942536ca82a",
        "11bfa7e3ef2f0dc6dedfd34f1eb03f60a8aa9c29205bf3f209d31468350d3108",
    ),
    Font(
        "nothing-you-could-do",
        "5.3.0",
        "OFL-1.1",
        "NothingYouCouldDo-Regular.woff",
        "cursive (partly joined), thin, slanted",
        "454bff123de1c8224aff670f12797ca91cf54becf6f8359391bd37a6dd68a60e",
        "ac3fd812996304dbb5b5f5f723329fb2a589f1309c56457f7dc329dbdf21e8f0",
    ),
    Font(
        "pacifico",
        "5.3.0",
        "OFL-1.1",
        "Pacifico-Regular.woff",
        "cursive (brush), very thick, slanted",
        "4fd3a495c0b99e9279bc36da2bc82d827daa8eaea1974094a8ef97131acbcb03",
        "e1b964e3f56697598c46363a8864f0a7b883c86a0c01a9a6a4e90e6949d60ba2",
    ),
    Font(
        "patrick-hand",
        "5.3.0",
        "OFL-1.1",
        "PatrickHand-Regular.woff",
        "print, thick, upright",
        "0f7031f6665437e04d6f354c5f64d6ae6777b498afbe804638c45b957a7ce8aa",
        "dbf0df430d5997121cc569dbe4f9198f76cf393114438f1f6c80a49f06f029d6",
    ),
    Font(
        "reenie-beanie",
        "5.3.0",
        "OFL-1.1",
        "ReenieBeanie-Regular.woff",
        "print (scrawl), thin, upright",
        "1b86681155e125625f01839b2e6688dde2b2a7766a8eb49645b3a8707c2bee9f",
        "e9250f36f6e77d626c0d142de7f075f6223343f681ef4192856331b0145dcd5c",
    ),
    Font(
        "sacramento",
        "5.3.0",
        "OFL-1.1",
        "Sacramento-Regular.woff",
        "cursive (monoline), thin, upright",
        "d3522a9bd9a636911205d65f8031b2baf2c1b1e91fc35070029dbf887364bd29",
        "bdc5980c99813eeb5e0e8188d41b191378dd6fecdd84aeb3a49872ea9f913889",
    ),
    Font(
        "satisfy",
        "5.3.0",
        "Apache-2.0",
        "Satisfy-Regular.woff",
        "cursive, medium, slanted",
        "5d08f3999955e4cc4eb26cc27496751a9b15f9cd47d69332d2c7f8902ced3f49",
        "8c6fc21d7d28d656edfb1051afbd0b5c7577456c8d474d7b1da3233ba3b49fa5",
    ),
    Font(
        "schoolbell",
        "5.3.0",
        "Apache-2.0",
        "Schoolbell-Regular.woff",
        "print, medium, upright",
        "a448b8f4209a8ca16adc48753170f40a57e17f70675963e092501ed48842e4c8",
        "044195cfd809d76ea2aaf1c8e3dd80b9fd9447227efc05e51fc906c4a451d451",
    ),
    Font(
        "shadows-into-light",
        "5.3.0",
        "OFL-1.1",
        "ShadowsIntoLight-Regular.woff",
        "print, thin, upright",
        "93cff8110a18bb3e1fb0179c95f706ed1e8037e2e527c4cb425b46deaddbd975",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "short-stack",
        "5.3.0",
        "OFL-1.1",
        "ShortStack-Regular.woff",
        "print (rounded), thick, upright",
        "db596e8545afc95f708ad2d5ac878771998f7378da84c56759527fbdb02f5836",
        "6d288f1e7201f235276304767e516d0486e1f253d843c1f1a612b8fb8dfeb10b",
    ),
    Font(
        "sue-ellen-francisco",
        "5.3.0",
        "OFL-1.1",
        "SueEllenFrancisco-Regular.woff",
        "print (tall, narrow), medium, upright",
        "e2c988155c07d4a26b81216397fa1841af0916c9737a61e05ea38bd1bd5361b1",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "waiting-for-the-sunrise",
        "5.3.0",
        "OFL-1.1",
        "WaitingForTheSunrise-Regular.woff",
        "print, thin, upright",
        "8a2cf921d4129a7d447370c559d0687579e842196c9e80a774fb428b1755911b",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "zeyada",
        "5.3.0",
        "OFL-1.1",
        "Zeyada-Regular.woff",
        "print (scrawl, partly joined), thin, upright",
        "91d3613bd2d6ca6d14bfba2a7c3918ee4ced380d570d1b29a6ebfbcf56e7a6ff",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
)
ALLOWED_LICENCES = {"OFL-1.1", "Apache-2.0"}


class FetchError(Exception):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npm_pack(npm: str, font: Font, workdir: Path) -> Path:
    spec = f"{font.package}@{font.version}"
    print(f"  npm pack {spec}", flush=True)
    proc = subprocess.run(
        [npm, "pack", spec, "--ignore-scripts", "--silent"], cwd=workdir, capture_output=True, text=True
    )
    tarballs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        raise FetchError(f"npm pack {spec} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return tarballs[0]


def read_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise FetchError(f"{name} is not in the tarball") from None
    handle = tar.extractfile(member)
    if handle is None:
        raise FetchError(f"{name} in the tarball is not a regular file")
    return handle.read()


def check(label: str, data: bytes, expected: str) -> None:
    actual = sha256(data)
    if actual != expected:
        raise FetchError(f"sha256 mismatch for {label}: expected {expected}, got {actual}")


def fetch_one(npm: str, font: Font, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fontsource-") as tmp:
        tarball = npm_pack(npm, font, Path(tmp))
        with tarfile.open(tarball, "r:gz") as tar:
            meta = json.loads(read_member(tar, "package/package.json"))
            woff = read_member(tar, f"package/files/{font.name}-latin-400-normal.woff")
            licence = read_member(tar, "package/LICENSE")
    if meta.get("version") != font.version:
        raise FetchError(f"{font.package}: got version {meta.get('version')}, expected {font.version}")
    if meta.get("license") != font.licence or font.licence not in ALLOWED_LICENCES:
        raise FetchError(f"{font.package}: package licence {meta.get('license')!r}, table says {font.licence!r}")
    check(f"{font.package} latin-400-normal.woff", woff, font.sha256)
    check(f"{font.package} LICENSE", licence, font.licence_sha256)
    (dest / "LICENSES").mkdir(parents=True, exist_ok=True)
    for rel, data in ((font.file, woff), (font.licence_file, licence)):
        target = dest / rel
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        partial.replace(target)
        print(f"  wrote {target} ({len(data)} bytes, sha256 ok)", flush=True)


def check_in_place(dest: Path) -> int:
    bad = 0
    for font in FONTS:
        for rel, expected in ((font.file, font.sha256), (font.licence_file, font.licence_sha256)):
            path = dest / rel
            if not path.is_file():
                print(f"MISSING  {path}")
                bad += 1
            elif sha256(path.read_bytes()) != expected:
                print(f"MISMATCH {path}")
                bad += 1
    print(f"{len(FONTS) * 2 - bad} of {len(FONTS) * 2} files match the table in {dest}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=HERE, help="directory to write into (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only verify files already in --dest; no network")
    args = parser.parse_args(argv)
    dest = args.dest.resolve()
    if args.check:
        return check_in_place(dest)
    npm = shutil.which("npm")
    if npm is None:
        print(
            "error: the `npm` client is not on PATH; install Node.js/npm (e.g. `apt-get install npm`)", file=sys.stderr
        )
        return 2
    dest.mkdir(parents=True, exist_ok=True)
    print(f"fetching {len(FONTS)} Fontsource fonts into {dest}")
    failed = []
    for i, font in enumerate(FONTS, 1):
        print(f"[{i}/{len(FONTS)}] {font.file} <- {font.package}@{font.version} ({font.licence})", flush=True)
        try:
            fetch_one(npm, font, dest)
        except (FetchError, OSError, tarfile.TarError, json.JSONDecodeError) as exc:
            print(f"  ERROR: {exc}", file=sys.stderr, flush=True)
            failed.append(font.package)
    if failed:
        print(f"error: {len(failed)} of {len(FONTS)} fonts failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"done: {len(FONTS)} fonts and licences written to {dest}, all sha256 verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
