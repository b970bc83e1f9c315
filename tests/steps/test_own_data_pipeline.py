"""Your own data through real `mlflow run` steps, from download to evaluate: a Greek TSV folder with broken rows,
Cyrillic PAGE XML and Latin ALTO pages, fine-tuning the Greek model on the Cyrillic pages, evaluating a model on a
dataset with another charset, and registering with the lineage recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.workflow import config, runs
from tests import own_data

pytestmark = pytest.mark.slow

# a small network and one epoch: these tests check the plumbing, not the reading
TINY_NET = (
    "-P",
    "conv_filters=16,32",
    "-P",
    "rnn_units=32",
    "-P",
    "dense_units=32",
    "-P",
    "batch_size=8",
    "-P",
    "min_epoch_steps=1",
)
TINY = (*TINY_NET, "-P", "epochs=1", "-P", "patience=1")


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def _newest(client, step: str):
    run = runs.find_run(step, experiment_id=None, client=client, status=None)
    assert run is not None, f"no {step} run"
    return run


def _json(client, run_id: str, name: str, tmp_path: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, name, str(tmp_path))).read_text(encoding="utf-8"))


def _chain(mlflow_run, client, tmp_path: Path, dataset: str, source: Path) -> dict[str, str]:
    """download -> preprocess -> train -> evaluate for one source; returns the run ids."""
    ids = {}
    _ok(
        mlflow_run(
            "-e",
            "download",
            "--env-manager",
            "local",
            "-P",
            f"dataset={dataset}",
            "-P",
            f"source={source}",
            timeout=900,
        )
    )
    ids["download"] = _newest(client, "download").info.run_id
    raw = f"runs:/{ids['download']}/{config.RAW_ARTIFACT}"
    _ok(
        mlflow_run(
            "-e", "preprocess", "--env-manager", "local", "-P", f"raw_data={raw}", "-P", "shard_size=40", timeout=900
        )
    )
    ids["preprocess"] = _newest(client, "preprocess").info.run_id
    data = f"runs:/{ids['preprocess']}/{config.DATASET_ARTIFACT}"
    _ok(mlflow_run("-e", "train", "--env-manager", "local", "-P", f"data={data}", *TINY, timeout=900))
    ids["train"] = _newest(client, "train").info.run_id
    model = f"runs:/{ids['train']}/{config.MODEL_ARTIFACT}"
    _ok(
        mlflow_run(
            "-e", "evaluate", "--env-manager", "local", "-P", f"model_uri={model}", "-P", "beam_width=0", timeout=900
        )
    )
    ids["evaluate"] = _newest(client, "evaluate").info.run_id
    return ids


def test_greek_tsv_folder_then_fine_tuned_on_cyrillic_pages(mlflow_store, mlflow_run, tmp_path):
    client = mlflow_store
    expected = own_data.tsv_folder(tmp_path / "greek", own_data.GREEK, writers=6, per_writer=20)
    greek = _chain(mlflow_run, client, tmp_path, "folder", tmp_path / "greek")
    info = _json(client, greek["download"], config.DOWNLOAD_INFO, tmp_path / "d1")
    assert info["items"]["words"] == info["words"] == expected["good"]
    assert info["skipped"] == expected["broken"]  # each broken row counted by its reason, none fatal
    assert any("labels.tsv line" in p for p in info["problems"])
    stats = _json(client, greek["preprocess"], f"{config.DATASET_ARTIFACT}/{config.STATS_FILE}", tmp_path / "d2")
    charset = _json(client, greek["preprocess"], f"{config.DATASET_ARTIFACT}/{config.CHARSET_FILE}", tmp_path / "d3")
    assert "unseen_characters" in stats and set(charset["characters"]) <= set("".join(own_data.GREEK))
    assert "test_cer" in client.get_run(greek["evaluate"]).data.metrics

    # the Cyrillic pages: a dataset of its own (PAGE XML), evaluated with the Greek model, then fine-tuned
    own_data.page_folder(tmp_path / "cyrillic", "page", pages=6, lines=5, vocabulary=own_data.CYRILLIC)
    cyrillic = _chain(mlflow_run, client, tmp_path, "page", tmp_path / "cyrillic")
    raw = _json(client, cyrillic["download"], config.DOWNLOAD_INFO, tmp_path / "d4")
    assert raw["items"]["lines"] == 30 and raw["words"] > 60 and raw["groups"] == 6
    assert {"lines.txt", "lines.tgz", "words.txt", "words.tgz", "forms.txt", "origin.tsv"} <= {
        f.path.split("/")[-1] for f in client.list_artifacts(cyrillic["download"], config.RAW_ARTIFACT)
    }
    data = f"runs:/{cyrillic['preprocess']}/{config.DATASET_ARTIFACT}"
    greek_model = f"runs:/{greek['train']}/{config.MODEL_ARTIFACT}"
    stderr = _ok(
        mlflow_run(
            *("-e", "evaluate", "--env-manager", "local", "-P", f"model_uri={greek_model}", "-P", f"data={data}"),
            *("-P", "beam_width=0"),
            timeout=900,
        )
    )
    assert "cannot emit" in stderr
    foreign = _newest(client, "evaluate")
    report = _json(client, foreign.info.run_id, "charset_report.json", tmp_path / "d5")
    assert report["samples_outside_charset"] == report["samples"] == foreign.data.metrics["test_samples"]
    assert set(report["characters_outside_charset"]) <= set("".join(own_data.CYRILLIC))
    assert foreign.data.metrics["test_samples_outside_charset"] == report["samples"]

    _ok(
        mlflow_run(
            *("-e", "train", "--env-manager", "local", "-P", f"data={data}", *TINY_NET, "-P", "patience=1"),
            *("-P", f"init_model={greek_model}", "-P", "freeze_epochs=1", "-P", "epochs=2"),
            timeout=900,
        )
    )
    tuned = _newest(client, "train")
    assert tuned.data.tags[config.TAG_PARENT_MODEL] == greek_model and tuned.data.params["init_model"] == greek_model
    tuned_model = f"runs:/{tuned.info.run_id}/{config.MODEL_ARTIFACT}"
    from steps.inference import loading

    emits = set(loading.load(tuned_model).charset.characters)  # the Greek characters kept, the Cyrillic added
    assert emits == set(charset["characters"]) | set(raw_chars(client, cyrillic, tmp_path))
    _ok(
        mlflow_run(
            "-e",
            "evaluate",
            "--env-manager",
            "local",
            "-P",
            f"model_uri={tuned_model}",
            "-P",
            "beam_width=0",
            timeout=900,
        )
    )
    _ok(
        mlflow_run(
            "-e",
            "register",
            "--env-manager",
            "local",
            "-P",
            f"model_uri={tuned_model}",
            "-P",
            "max_cer=2",  # a 2-epoch tiny model may read nothing (or insert): the lineage is what is checked
            timeout=900,
        )
    )
    version = client.get_model_version(config.REGISTERED_MODEL, "1")
    assert version.tags[config.TAG_PARENT_MODEL] == greek_model and version.tags["hwr.data"] == data


def raw_chars(client, ids: dict[str, str], tmp_path: Path) -> list[str]:
    path = f"{config.DATASET_ARTIFACT}/{config.CHARSET_FILE}"
    return _json(client, ids["preprocess"], path, tmp_path / "d7")["characters"]


def test_latin_alto_pages_download_to_evaluate(mlflow_store, mlflow_run, tmp_path):
    client = mlflow_store
    source = tmp_path / "alto"
    own_data.page_folder(source, "alto", pages=6, lines=5, vocabulary=own_data.LATIN)
    (source / "laughs.xml").write_bytes(own_data.BILLION_LAUGHS)
    ids = _chain(mlflow_run, client, tmp_path, "alto", source)
    info = _json(client, ids["download"], config.DOWNLOAD_INFO, tmp_path / "d1")
    assert info["skipped"] == {"unsafe_xml": 1} and info["items"]["lines"] == 30
    assert client.get_run(ids["evaluate"]).data.metrics["test_samples"] > 0


def test_hostile_xml_alone_fails_download_with_one_clear_line(mlflow_store, mlflow_run, tmp_path):
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "external.xml").write_bytes(own_data.EXTERNAL_ENTITY)
    proc = mlflow_run(
        "-e", "download", "--env-manager", "local", "-P", "dataset=page", "-P", f"source={tmp_path}/evil", timeout=900
    )
    assert proc.returncode != 0
    assert "nothing usable was found (1 unsafe_xml); first problems: external.xml: refused" in proc.stderr
    assert "/etc/passwd" not in proc.stderr and "root:" not in proc.stderr


def test_the_champion_evaluated_on_cyrillic_words_then_fine_tuned_on_them(tmp_path_factory, mlflow_run, tmp_path):
    """The registered tiny model (Latin) as the parent: scored on a Cyrillic folder as it is, then fine-tuned."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from steps.inference import loading
    from tests import model_fixture

    model = model_fixture.tiny_model(tmp_path_factory)
    env = model_fixture.env(model)
    client = MlflowClient(model.tracking_uri)
    own_data.tsv_folder(tmp_path / "cyr", own_data.CYRILLIC, writers=4, per_writer=12)
    step = ("--env-manager", "local")
    _ok(mlflow_run("-e", "download", *step, "-P", "dataset=folder", "-P", f"source={tmp_path / 'cyr'}", env=env))
    raw = f"runs:/{runs.find_run('download', experiment_id='0', client=client).info.run_id}/{config.RAW_ARTIFACT}"
    _ok(mlflow_run("-e", "preprocess", *step, "-P", f"raw_data={raw}", "-P", "shard_size=40", env=env, timeout=900))
    data = f"runs:/{runs.find_run('preprocess', experiment_id='0', client=client).info.run_id}/dataset"
    args = ("-P", f"model_uri={model.champion_uri}", "-P", f"data={data}", "-P", "beam_width=0")
    assert "cannot emit" in _ok(mlflow_run("-e", "evaluate", *step, *args, env=env, timeout=900))
    scored = runs.find_run("evaluate", experiment_id="0", client=client)
    assert scored.data.metrics["test_samples_outside_charset"] == scored.data.metrics["test_samples"] > 0
    tiny = (
        "-P",
        "conv_filters=8,16",
        "-P",
        "rnn_units=32",
        "-P",
        "dense_units=16",
        "-P",
        "batch_size=8",
        "-P",
        "min_epoch_steps=1",
    )
    tune = ("-P", f"init_model={model.champion_uri}", "-P", "freeze_epochs=1", "-P", "epochs=2")
    _ok(mlflow_run("-e", "train", *step, "-P", f"data={data}", *tiny, *tune, env=env, timeout=900))
    tuned = runs.find_run("train", experiment_id="0", client=client)
    assert tuned.data.tags[config.TAG_PARENT_MODEL] == model.version_uri  # the alias, resolved to its version
    mlflow.set_tracking_uri(model.tracking_uri)
    try:
        parent = loading.load(model.version_uri).charset.characters
        child = loading.load(f"runs:/{tuned.info.run_id}/{config.MODEL_ARTIFACT}").charset.characters
    finally:
        mlflow.set_tracking_uri(None)
    assert set(parent) < set(child) and set(child) - set(parent) <= set("".join(own_data.CYRILLIC))
