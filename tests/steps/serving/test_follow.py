"""serve follows @champion: a real registry with two versions, the alias moved under a running server
that is answering requests all the while; and a server on a pinned version says it pins it."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import requests

from tests import model_fixture, servers

pytestmark = pytest.mark.slow  # real servers over a trained model


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A copy of the tiny model's store (the alias moves here only) holding versions 1 and 2, @champion on 1."""
    import mlflow
    from mlflow.tracking import MlflowClient

    tiny = model_fixture.tiny_model(tmp_path_factory)
    root = tmp_path_factory.mktemp("follow")
    shutil.copy(tiny.root / "mlflow.db", root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    first = client.get_model_version(tiny.name, tiny.version)
    mlflow.set_tracking_uri(uri)  # a models:/m-... source is resolved through the global store
    try:
        second = client.create_model_version(tiny.name, first.source, first.run_id)
    finally:
        mlflow.set_tracking_uri(None)
    assert client.get_model_version_by_alias(tiny.name, "champion").version == first.version
    return tiny, uri, client, first.version, second.version


@pytest.fixture(scope="module")
def started(registry, tmp_path_factory):
    """Both servers at once (their start-ups overlap): one on @champion checking every second, one pinned."""
    tiny, uri, _, first, _ = registry
    logs = tmp_path_factory.mktemp("follow-logs")
    out = {}
    try:
        for name, model_uri in {"follow": tiny.champion_uri, "pinned": f"models:/{tiny.name}/{first}"}.items():
            proc, url = servers.start(
                tiny, logs / f"{name}.log", "--model-uri", model_uri, "--follow-interval", "1", MLFLOW_TRACKING_URI=uri
            )
            out[name] = (proc, url, logs / f"{name}.log")
        for proc, url, log in out.values():
            servers.wait_healthy(url, proc, log)
        yield out
    finally:
        for proc, _, _ in out.values():
            servers.stop(proc, group=True)


def test_the_server_switches_when_the_alias_moves_and_drops_no_request(registry, started):
    tiny, _, client, first, second = registry
    proc, url, log = started["follow"]
    before = requests.get(url + "/version", timeout=5).json()
    assert (before["version"], before["alias"], before["follows"], before["pinned"]) == (
        first,
        "champion",
        "champion",
        False,
    )
    image = tiny.images[0].read_bytes()
    statuses: list[int] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                statuses.append(requests.post(url + "/predict", files={"image": image}, timeout=30).status_code)
            except requests.RequestException as e:  # a refused or dropped connection is a failure too
                statuses.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        during = len(statuses)
        client.set_registered_model_alias(tiny.name, "champion", second)
        deadline = time.monotonic() + 90
        while requests.get(url + "/version", timeout=5).json()["version"] != second:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.5)  # requests keep going to the new version
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    after = requests.get(url + "/version", timeout=5).json()
    assert (after["version"], after["alias"], after["follows"]) == (second, "champion", "champion")
    assert during > 0 and len(statuses) > during + 3, statuses  # requests ran before, during and after
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    text = log.read_text()
    assert f"moved from version {first} to {second}" in text and f"now serving {tiny.name} version {second}" in text
    assert proc.poll() is None


def test_a_server_on_a_version_says_it_pins_it(registry, started):
    tiny, _, _, first, _ = registry
    _, url, log = started["pinned"]
    info = requests.get(url + "/version", timeout=5).json()
    assert (info["version"], info["alias"], info["follows"], info["pinned"]) == (first, None, None, True)
    assert "pins its model: this server does not follow an alias" in log.read_text()
