"""Step `download`: get the raw dataset and log it in the canonical raw layout.

Inputs:  `level`: words (the default) or lines (IAM lines.txt + lines.tgz layout);
         `dataset`: synthetic (generated offline, the default), iam (research-only licence: opt in), or
         your own data: folder (images + a path,text[,writer] TSV/CSV, or a .txt beside each image),
         page (PAGE XML + page images) or alto (ALTO + page images), read from `source` (a directory,
         a zip/tar.gz, or a URL of one);
         `source` (iam): URL, file:// URL or local path of the Keras example mirror zip, or of the
         directory holding the official words.tgz + ascii.tgz ("" = the mirror); credentials for the
         official server come from env IAM_USER / IAM_PASSWORD (a user:password@ in the URL is moved there,
         never stored) and go over HTTPS only, or to the host named by env IAM_AUTH_HOST; `sha256`: checked when given
         (<hex> for the zip or words.tgz, or words.tgz=<hex>,ascii.tgz=<hex>);
         `num_words`, `num_writers`, `seed` (synthetic), `num_lines` (synthetic lines). IAM lines come from
         the official lines.tgz + ascii.tgz (URL or local directory) or a directory with lines.tgz +
         lines.txt; the word-only mirror has none (an error says so).
Outputs: artifacts raw/ (words.txt + words.tgz, or lines.txt + lines.tgz, plus forms.txt when known; own
         data: words.* and, from page/alto, lines.* too, whatever the level, and origin.tsv: which file each
         id came from) and
         download.json (dataset, source without credentials, sha256 and bytes of each file, counts,
         seconds); metrics bytes_downloaded, download_seconds, throughput (MB/s), words or lines, images.
Cache:   downloads are kept in $HWR_CACHE_DIR (default ~/.cache/handwriting-recognition), so reruns
         do not fetch again and an interrupted download resumes.

    mlflow run . -e download --env-manager local
    mlflow run . -e download --env-manager local -P dataset=iam
    mlflow run . -e download --env-manager local -P dataset=iam -P source=https://fki.tic.heia-fr.ch/DBs/iamDB/data/
    mlflow run . -e download --env-manager local -P level=lines
    mlflow run . -e download --env-manager local -P level=lines -P dataset=iam -P source=/data/iam  # lines.tgz, ascii.tgz
    mlflow run . -e download --env-manager local -P dataset=folder -P source=/data/my-lines.zip
    mlflow run . -e download --env-manager local -P dataset=page -P source=/data/transkribus-export/
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import click
import mlflow

from steps.sources import http, iam
from steps.sources.errors import DownloadError
from steps.sources.raw import describe_raw
from steps.workflow import cli, config, redaction, runs

D = config.defaults("download")


def _credentials(source: str) -> tuple[str, tuple[str, str] | None]:
    """(source without user:password@, the credentials: from the URL, else IAM_USER/IAM_PASSWORD)."""
    source, in_url = redaction.split_credentials(source)
    if in_url and os.environ.get("MLFLOW_RUN_ID"):
        runs.log(redaction.STORED_WARNING.format(name="source", run=os.environ["MLFLOW_RUN_ID"]))
    elif in_url:
        runs.log("warning: credentials in the source URL are used but not stored; set IAM_USER/IAM_PASSWORD instead")
    try:
        return source, in_url or redaction.env_credentials()
    except ValueError as e:
        raise DownloadError(str(e)) from None


def _synthetic(
    out: Path, level: str, source: str, sha256: str, num_words: int, num_writers: int, num_lines: int, seed: int
) -> dict:
    if source or sha256:
        raise DownloadError(
            "dataset=synthetic generates its data: -P source and -P sha256 apply to "
            "dataset=iam only (drop them, or add -P dataset=iam)"
        )
    # imported here: they pull in the image stack, which iam does not need
    from steps.sources import synthetic, synthetic_lines

    started = time.monotonic()
    if level == "lines":
        counts = synthetic_lines.generate(out, num_lines, num_writers, seed)
        asked = {"num_lines": num_lines, "num_writers": num_writers, "seed": seed}
    else:
        counts = synthetic.generate(out, num_words, num_writers, seed)
        asked = {"num_words": num_words, "num_writers": num_writers, "seed": seed}
    seconds = time.monotonic() - started
    return {
        "dataset": "synthetic",
        "level": level,
        "source": "synthetic",
        "layout": "directory",
        "synthetic": {**asked, **counts},
        "fetched": {},
        "bytes": 0,
        "bytes_downloaded": 0,
        "download_seconds": round(seconds, 3),
        **describe_raw(out, level),
    }


def _own(dataset: str, level: str, source: str, sha256: str, out: Path, work: Path) -> dict:
    """folder / page / alto: the user's files, written into the canonical layout by sources/layout.py.

    page/alto hold lines (and words where the XML has them), whatever `level`; a folder's images are what the
    user says they are: words, or with level=lines lines (each writer's in path order).
    """
    from steps.sources import alto, folder, layout, pages, pagexml, tree  # the image stack, as synthetic

    started = time.monotonic()
    root = tree.content_root(tree.as_directory(source, work, config.cache_dir(), sha256))
    readers = {
        "folder": folder.collect,
        "page": lambda r: pages.collect(r, pagexml.parse, "page"),
        "alto": lambda r: pages.collect(r, alto.parse, "alto"),
    }
    collected = readers[dataset](root)
    if dataset == "folder" and level == "lines":
        collected = layout.as_lines(collected)
    written = layout.write(collected, out)
    runs.log(layout.summary_line(written) + "".join(f"\n  {p}" for p in written["problems"]))
    if not written["items"][level]:
        other = "lines" if level == "words" else "words"
        raise DownloadError(
            f"{http.redact(source)} holds no {level} ({written['items'][other]} {other}): "
            + (f"ask for -P level={other}" if written["items"][other] else "nothing usable")
        )
    raw = describe_raw(out, level)
    return {
        "dataset": dataset,
        "source": http.redact(source),
        "layout": "own",
        "fetched": {},
        "bytes": 0,
        "bytes_downloaded": 0,
        "download_seconds": round(time.monotonic() - started, 3),
        **written,
        **raw,
        "lines": written["items"]["lines"],
    }


OWN_DATA = ("folder", "page", "alto")


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--level", type=click.Choice(sorted(config.LEVELS)), default=D["level"], show_default=True)
@click.option("--dataset", type=click.Choice(["synthetic", "iam", *OWN_DATA]), default=D["dataset"], show_default=True)
@click.option("--source", default=D["source"], help="iam: URL or path of the mirror zip or official directory")
@click.option("--sha256", default=D["sha256"], help="expected sha256 of the fetched archive ('' = not checked)")
@click.option("--num-words", type=int, default=D["num_words"], show_default=True, help="synthetic only")
@click.option("--num-writers", type=int, default=D["num_writers"], show_default=True, help="synthetic only")
@click.option("--num-lines", type=int, default=D["num_lines"], show_default=True, help="synthetic, level=lines only")
@click.option("--seed", type=int, default=D["seed"], show_default=True)
@cli.user_errors(DownloadError)
def main(
    level: str, dataset: str, source: str, sha256: str, num_words: int, num_writers: int, num_lines: int, seed: int
) -> None:
    started = time.monotonic()
    source, auth = _credentials(source)
    shown = http.redact(source)
    params = {
        "level": level,
        "dataset": dataset,
        "source": shown,
        "sha256": sha256,
        "num_words": num_words,
        "num_writers": num_writers,
        "num_lines": num_lines,
        "seed": seed,
    }
    with runs.start_step("download", params) as run, tempfile.TemporaryDirectory(prefix="hwr-download-") as tmp:
        out = Path(tmp) / config.RAW_ARTIFACT
        out.mkdir()
        try:
            if dataset == "synthetic":
                info = _synthetic(out, level, source, sha256, num_words, num_writers, num_lines, seed)
            elif dataset in OWN_DATA:  # words, and page/alto lines, whatever the level
                info = _own(dataset, level, source, sha256, out, Path(tmp))
            elif level == "lines":
                from steps.sources import iam_lines

                info = iam_lines.prepare_iam_lines(source, out, cache_dir=config.cache_dir(), sha256=sha256, auth=auth)
            else:
                info = iam.prepare_iam(
                    source,
                    out,
                    cache_dir=config.cache_dir(),
                    sha256=sha256,
                    auth=auth,
                    auth_host=os.environ.get(redaction.AUTH_HOST_ENV, ""),
                )
        except DownloadError as e:
            message = str(e).replace(auth[1], "***") if auth else str(e)  # belt and braces
            raise DownloadError(message) from None
        info["seconds"] = round(time.monotonic() - started, 3)
        # raw/ goes first and download.json last: the run only finishes once both are complete.
        mlflow.log_artifacts(str(out), config.RAW_ARTIFACT)
        runs.pause_point("download.raw_logged")  # the fault suite kills here: raw/ logged, download.json not yet
        (Path(tmp) / config.DOWNLOAD_INFO).write_text(json.dumps(info, indent=2) + "\n")
        mlflow.log_artifact(str(Path(tmp) / config.DOWNLOAD_INFO))
        seconds = info["download_seconds"]
        mlflow.log_metrics(
            {
                "bytes_downloaded": info["bytes_downloaded"],
                "download_seconds": seconds,
                "throughput": info["bytes_downloaded"] / 1e6 / seconds if seconds > 0 else 0.0,
                level: info[level],
                "images": info["images"],
                **({"lines": info["lines"]} if "lines" in info else {}),
            }
        )
    runs.log(
        f"download run {run.info.run_id}: {config.RAW_ARTIFACT}/ holds {info[level]} {level} and "
        f"{info['images']} images ({info['bytes_downloaded'] / 1e6:.1f} MB downloaded, "
        f"{info['seconds']:.1f} s)"
    )


if __name__ == "__main__":
    main()
