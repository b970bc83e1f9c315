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
        "alex-brush",
        "5.3.0",
        "OFL-1.1",
        "AlexBrush-Regular.woff",
        "cursive (formal), thin, strongly slanted",
        "430af56b6714603f63cf1e700232dccdc165cfe443c111085c93c631f4e7a4ed",
        "8c8900c6adec4003526a8a9fa6e0214d57260e70b8aa975f606ed26a5997fb93",
    ),
    Font(
        "allura",
        "5.3.0",
        "OFL-1.1",
        "Allura-Regular.woff",
        "cursive (formal), thin, slanted",
        "7507db0d0a02fb9259cdcab4e45295a4c053f8c7c8055009f257c698cedd4237",
        "eea1157c41ebcbb7bb6732328f2a804a56b3f2744e456a116311aa2eb8cafce4",
    ),
    Font(
        "annie-use-your-telescope",
        "5.3.0",
        "OFL-1.1",
        "AnnieUseYourTelescope-Regular.woff",
        "print, thin, upright",
        "555a3ba045673dfa29aa1b2ed52f17772212380d2da9a79dc813ef51e26b0147",
        "1d3dfa53acd63b2e501101356107b0f996877b678e2dba800918a6887afc4c88",
    ),
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
        "bad-script",
        "5.3.0",
        "OFL-1.1",
        "BadScript-Regular.woff",
        "print, thin, slanted",
        "07202e03862cf10af6c0a9f5cfce39ef10e1923b64b965c3185b5ddef61b91f1",
        "ad19cc739a964170765a3f27612b625339996ed6aa0a8ffce3a18f3938914e3b",
    ),
    Font(
        "birthstone",
        "5.3.0",
        "OFL-1.1",
        "Birthstone-Regular.woff",
        "cursive, thin, strongly slanted",
        "4e3a2fca18ee7678c2384097c18a135d6fab78840892eb12cc63ac34c7d8bd49",
        "9c9bf81460b97de3ab631dac97aa65f20f9de03bb21655907295eccf55eda1b1",
    ),
    Font(
        "calligraffitti",
        "5.3.0",
        "Apache-2.0",
        "Calligraffitti-Regular.woff",
        "cursive (partly joined), thin, slanted",
        "1fee22a7ff179d7623483a623aba71e5541ef16efd5e28bc45d4403d6f010ad5",
        "e5bf31ed42f180dd50a7ed983b19c7970c14f3618c9ef0739af2106505c79757",
    ),
    Font(
        "caramel",
        "5.3.0",
        "OFL-1.1",
        "Caramel-Regular.woff",
        "cursive (brush), thin, strongly slanted",
        "ab707d7c3141cef60873e4fbd4ab3fefd69d65b551c9a142d9ade194bec12ff4",
        "3c2a29e960beb94a4e825b025e50ed2ee13f2fd85f089fd4c9612a228f6c7369",
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
        "coming-soon",
        "5.3.0",
        "Apache-2.0",
        "ComingSoon-Regular.woff",
        "print, medium, upright",
        "d0a25ae9b9ffb2a2c235687f1698af2bbe18a84f47f1b099077a50382b812858",
        "e5bf31ed42f180dd50a7ed983b19c7970c14f3618c9ef0739af2106505c79757",
    ),
    Font(
        "cookie",
        "5.3.0",
        "OFL-1.1",
        "Cookie-Regular.woff",
        "cursive (brush), medium, upright",
        "15a6cbd163886857d89b3d5743237d606ab45002d00e5cc8d317d7df7bc65b7e",
        "f369499aff74cc88130f6781977b33ae99f83738373add533c93b8fa70314450",
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
        "crafty-girls",
        "5.3.0",
        "Apache-2.0",
        "CraftyGirls-Regular.woff",
        "print (rounded), medium, upright",
        "5d7392f508057ab8c20fa7e92989e679a9efd058b9d7736d688a614df9a79dfa",
        "3fda4cd12a62601f4c8533e65298f4437c26fe3f80e9727750e59612268728a2",
    ),
    Font(
        "damion",
        "5.3.0",
        "OFL-1.1",
        "Damion-Regular.woff",
        "cursive (brush), thick, slanted",
        "8246dbcc6c2409f46f364937f59e9813e27f84163a6c4ef3277a211d4c164f70",
        "c72ab22c3f099e77b63ae737618175c833e3fa17620d95b46bda4792f56f58ce",
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
        "delicious-handrawn",
        "5.3.0",
        "OFL-1.1",
        "DeliciousHandrawn-Regular.woff",
        "print (narrow marker), thick, upright",
        "35ce71897055be38672facf77da13ec0bde5d918ea90ae11e78b838b3a0aa01c",
        "8eb0a2451da9eea6330466d92e708e49fd5ad0b6479d89eb3599cf370fe115c2",
    ),
    Font(
        "delius",
        "5.3.0",
        "OFL-1.1",
        "Delius-Regular.woff",
        "print (rounded), medium, upright",
        "eabc55870044215231d9f905b1b898926bcf588dc78e53523ea6590281b606f1",
        "125890be563129103e9043f40fc967d688dc186ec7d05ce8b1ff0c1d6436e0e0",
    ),
    Font(
        "edu-nsw-act-foundation",
        "5.3.0",
        "OFL-1.1",
        "EduNSWACTFoundation-Regular.woff",
        "print (school), medium, upright",
        "abebb0863c1a82e42f688b59d66851a6896cd8f46f543f60d3c24750709157ea",
        "75b8600de3b3997f68ccb3e3d2452a9ab28d7e2955b549006800ebc9cd980d42",
    ),
    Font(
        "edu-tas-beginner",
        "5.3.0",
        "OFL-1.1",
        "EduTASBeginner-Regular.woff",
        "print (school), medium, slanted",
        "16c8a0af47a3862aa01547ca64dbdda2d9c5b4c3b45a9b522182340b7e350aad",
        "75b8600de3b3997f68ccb3e3d2452a9ab28d7e2955b549006800ebc9cd980d42",
    ),
    Font(
        "edu-vic-wa-nt-beginner",
        "5.3.0",
        "OFL-1.1",
        "EduVICWANTBeginner-Regular.woff",
        "print (school), medium, slanted",
        "d1d07ef8700ab8a5b349dc78e8c976629d63e62407dc092eb9f304d5a6ee08d6",
        "75b8600de3b3997f68ccb3e3d2452a9ab28d7e2955b549006800ebc9cd980d42",
    ),
    Font(
        "gaegu",
        "5.3.0",
        "OFL-1.1",
        "Gaegu-Regular.woff",
        "print, medium, upright",
        "6d4c9dac093fce05bcf214b7b1e9d60de7ecae8a22aa940d63e586bcf32cab29",
        "0dd655c75c261429916cd55b8cedffb0f54cb022fd50193bda73062e330edad9",
    ),
    Font(
        "gamja-flower",
        "5.3.0",
        "OFL-1.1",
        "GamjaFlower-Regular.woff",
        "print, medium, upright",
        "a38f64533c71165be3845e8e1600a2c6062464d83c7c160d00ee5a9cbd67c46d",
        "ed80f0ffdf9088b38cc85305b0122e43e0192bf6f4bbb71d6ce59ffd93c7a265",
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
        "grape-nuts",
        "5.3.0",
        "OFL-1.1",
        "GrapeNuts-Regular.woff",
        "print, thin, slanted",
        "058c99599408dd60de19ebb1abbf764b9a18eebb553fee1670f0b2d2a4fd5235",
        "acf9edea7ba052dfe9ac5658b950a106530581cbfb0783a3afd109ab9d6a28f3",
    ),
    Font(
        "great-vibes",
        "5.3.0",
        "OFL-1.1",
        "GreatVibes-Regular.woff",
        "cursive (formal), thin, strongly slanted",
        "70db84ec82761fa328d65649439e2f9603ecbdaf0a397863875f62c43158a523",
        "75368fe8ff3eafefaf6d086a8b6c47c5d561bf029c34e2b089607820fc68fead",
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
        "hi-melody",
        "5.3.0",
        "OFL-1.1",
        "HiMelody-Regular.woff",
        "print, medium, upright",
        "346d604a1b9cbe55b43837112ce70dd6d30909898d82c3014c1f37f8e40f27a3",
        "ed80f0ffdf9088b38cc85305b0122e43e0192bf6f4bbb71d6ce59ffd93c7a265",
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
        "hurricane",
        "5.3.0",
        "OFL-1.1",
        "Hurricane-Regular.woff",
        "cursive (brush), thin, strongly slanted",
        "4963c0fbac892320e205fefd43df94af6cdf9ff8f40bc22fb61c917abe9c807e",
        "6056b868b7b36190dadb967122cea67b362bde4d6742697d8c7c6187d81baeae",
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
        "italianno",
        "5.3.0",
        "OFL-1.1",
        "Italianno-Regular.woff",
        "cursive (formal), very thin, strongly slanted",
        "4c93311e355d0ffab55fed06847d08d79bb9aa286ee9652e2998bd40a92519d6",
        "dd35b1ea27fc35dfb2fed1915885a397a433117af0fb561e1d11d9faaac28784",
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
        "licorice",
        "5.3.0",
        "OFL-1.1",
        "Licorice-Regular.woff",
        "cursive (partly joined), very thin, slanted",
        "71980143949c400f96354029d3c98b743018b69045b13bdbd6089150d692275f",
        "246fa78e8cf64395c64438bc8d904d656c2a9810ad2a4bb638843188ccfe07d5",
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
        "mansalva",
        "5.3.0",
        "OFL-1.1",
        "Mansalva-Regular.woff",
        "print (marker), thick, upright",
        "956720ae5632b40a4f79e92b27b936e174a038aa41b8638d30965c61ab465aff",
        "35f79975dcbac65d1b5d666d40dd4185b694c6415a075871d31dfc1a600be37f",
    ),
    Font(
        "marck-script",
        "5.3.0",
        "OFL-1.1",
        "MarckScript-Regular.woff",
        "print (script-like), thin, slanted",
        "c26db9210c0b2823550e11baaeb2b6d234e5e5a14e8e6497029f29844859610d",
        "bc79b2867a4357a57c3aaf112545723516083d022d2675d5af22b3e06090b07c",
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
        "ms-madi",
        "5.3.0",
        "OFL-1.1",
        "MsMadi-Regular.woff",
        "cursive (monoline), thin, strongly slanted",
        "58626fb43d810fa63dd379d389d8c0c8a62f1e7fd7af50d2313a2d98bb39506e",
        "43651b25f64ca79c63153f880dc041acea89376562b50855277b582e7f1b3b45",
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
        "oooh-baby",
        "5.3.0",
        "OFL-1.1",
        "OoohBaby-Regular.woff",
        "cursive (monoline), thin, strongly slanted",
        "8adff98725aa267417e7cc2543a08056d22a170bea51de1b368c60a217e7a2bd",
        "7d49e272d26c64aa89a5d0e3773a25fe5e3bf32e8efe92e2706ce55ce618fb42",
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
        "pangolin",
        "5.3.0",
        "OFL-1.1",
        "Pangolin-Regular.woff",
        "print, thick, upright",
        "d51be35cd652ff73e3d174e01cd978942cf67bcea08ab3043f711814fab162ce",
        "afe7e3c86638db1c404b78746babbe662108ea1e8763b49b7b1a32c471ecff7b",
    ),
    Font(
        "parisienne",
        "5.3.0",
        "OFL-1.1",
        "Parisienne-Regular.woff",
        "cursive (formal), thin, strongly slanted",
        "d566d44ead5b2531660c561b8488d850e7ed3de2967fd79ac86bb334d1bddec3",
        "6f970c20465c62236512b0271a54bef49bec91c2d6d9477615e733528ab859f7",
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
        "playpen-sans",
        "5.3.0",
        "OFL-1.1",
        "PlaypenSans-Regular.woff",
        "print (rounded), thick, upright",
        "25b16389b5a9978b1b9949398c494451d02c738f837e64095601e1c8447341fb",
        "2bdb9cec7a0cabe00cd884d70f0dca30569d3db2248ce2a027abaa1bb75956fa",
    ),
    Font(
        "poor-story",
        "5.3.0",
        "OFL-1.1",
        "PoorStory-Regular.woff",
        "print, medium, upright",
        "15608168b3f53bff2060591a8a6953c9ab1c91eb19529e15b973ac2b70ca709f",
        "ed80f0ffdf9088b38cc85305b0122e43e0192bf6f4bbb71d6ce59ffd93c7a265",
    ),
    Font(
        "qwigley",
        "5.2.8",
        "OFL-1.1",
        "Qwigley-Regular.woff",
        "cursive (brush), thin, slanted",
        "69822bceb6aac0429bc45bfece9277f1aa126a45c277685805785acf9b349341",
        "ff21f2d194fcd8a09ff820a640405982959329735d0ffe77c385dea3d99a898d",
    ),
    Font(
        "rancho",
        "5.3.0",
        "Apache-2.0",
        "Rancho-Regular.woff",
        "print (narrow), medium, upright",
        "f19330a4aee7eaac41911b9002a0e402feaa84f0318ea422668e11b920ed8fca",
        "8c6fc21d7d28d656edfb1051afbd0b5c7577456c8d474d7b1da3233ba3b49fa5",
    ),
    Font(
        "redressed",
        "5.3.0",
        "Apache-2.0",
        "Redressed-Regular.woff",
        "print (calligraphic), medium, upright",
        "6722c727f03a63134c2061c85c7cb4ade71336bfa9e995332e37869aecbb9deb",
        "890f8cfa1a7a00c10e651dbf73ac843e2c33d5a30bea7cb9a4c745f44bbff204",
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
        "rochester",
        "5.3.0",
        "Apache-2.0",
        "Rochester-Regular.woff",
        "cursive, thin, upright",
        "612d4ef325c373949aab4b391ca97b805f8b62200743787aa68464be2994e936",
        "4fb69ab557d36002964a3f34e2bc01a3b1c0bc46973a45e14b584047352029ce",
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
        "sedgwick-ave",
        "5.3.0",
        "OFL-1.1",
        "SedgwickAve-Regular.woff",
        "print (marker), thick, slanted",
        "378d3d70f69fb7c7382cbbd3dc3663bc409bd45dee5711aa8543afee85de2f14",
        "381c3aace294e48febca0c2a4680264c705f5810c8aaa8474297d7073fd71951",
    ),
    Font(
        "send-flowers",
        "5.3.0",
        "OFL-1.1",
        "SendFlowers-Regular.woff",
        "cursive (monoline), thin, slanted",
        "b833886e408be37449dd031993d8d336e7c0652bbf73588229827e012a760e84",
        "0ca25c50ab1063d0bcffc09dae4fd4f0e9af2decb978dbc85f97a858971cabbe",
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
        "shantell-sans",
        "5.3.0",
        "OFL-1.1",
        "ShantellSans-Regular.woff",
        "print, thick, upright",
        "8aa8fe63633c806fac26f8ae5c712851eb67d8e1cd34555873d4e60abe685d31",
        "cde8ad5bfbaa0f4b916daff2b107d45dd7a84706c627fd3f669f6cc2af563843",
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
        "square-peg",
        "5.3.0",
        "OFL-1.1",
        "SquarePeg-Regular.woff",
        "cursive (partly joined), thin, slanted",
        "f7da17dedee1e713341ea2b5a26bff3a8cb25e3dfe94e7a927c1ed56ecc4a1f7",
        "a0e398099b03b1bb1dcdd3efeb0ba0062d7a44a87afd6d9ab0835e431e7008bd",
    ),
    Font(
        "sriracha",
        "5.3.0",
        "OFL-1.1",
        "Sriracha-Regular.woff",
        "print (brush), thick, slanted",
        "5d58be0698ba9a1b621ca2fa6d44e0b08b50fed7d913c956a4c0a9fd9fbfaa40",
        "a30d9716e7d743774d5e84a94674b4f7d62aaf101d59c833b4799a4327d5b275",
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
        "sunshiney",
        "5.3.0",
        "Apache-2.0",
        "Sunshiney-Regular.woff",
        "print, medium, upright",
        "0d10cdf01dbfa8c3e828836f0c71bf0a1b012b0ab08279d8bc57c47a43775a81",
        "2416f549b276f76a16a10e98695a74f48129cd3b62c9280b33e8b8ac2d7b663f",
    ),
    Font(
        "swanky-and-moo-moo",
        "5.3.0",
        "OFL-1.1",
        "SwankyAndMooMoo-Regular.woff",
        "print, medium, upright",
        "f4f292b60677133249ab543ca178fa6786d3dd9681899ef7ccde255bf956aced",
        "1d3dfa53acd63b2e501101356107b0f996877b678e2dba800918a6887afc4c88",
    ),
    Font(
        "the-girl-next-door",
        "5.3.0",
        "OFL-1.1",
        "TheGirlNextDoor-Regular.woff",
        "print, thin, upright",
        "301aabf8a983d1231988eea6e125338a3933bd69de8b14137df80840c8d8c5e8",
        "974d229d083921c6ed420026a45857eb3d2277f2656b156e0d233f175b382d60",
    ),
    Font(
        "unkempt",
        "5.3.0",
        "Apache-2.0",
        "Unkempt-Regular.woff",
        "print (rough), medium, upright",
        "73dc1436872bf2e078e8ffaeeb67d9f91249a489d56e08704e9e813157f2ed66",
        "dca36736655c21df198cf7667c3c6212273dfd3f585b843c93c3df0afa70b82c",
    ),
    Font(
        "vibur",
        "5.3.0",
        "OFL-1.1",
        "Vibur-Regular.woff",
        "cursive (school), medium, upright",
        "f13c8b62aa8abf958356887bc6e44d9af48037c38f96b238e66ec1b537b0dd4e",
        "daa3acd1ae4cac8010876ed195d83e2bee9f933ac54c4cd1543581fd3143e4b2",
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
        "yellowtail",
        "5.3.0",
        "Apache-2.0",
        "Yellowtail-Regular.woff",
        "cursive (brush), medium, strongly slanted",
        "caa2223ebdbb6b17a03563785cc8c3781d682695ff095ab3d08490ccece998ef",
        "890f8cfa1a7a00c10e651dbf73ac843e2c33d5a30bea7cb9a4c745f44bbff204",
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
